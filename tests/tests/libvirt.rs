//! libvirt runs the installed gpu-airlock for a real guest: Debian's
//! libvirt 9 (its daemon started here, as CI has no systemd) reads the
//! package's descriptor in /usr/share/qemu/vhost-user/, asks the binary
//! for its capabilities, starts it with `--fd` of one end of a socket
//! pair and QEMU 10 with the other, for a domain with
//! `<video><model type='virtio'/><driver name='vhostuser'/></video>`. The
//! guest (Debian's kernel under TCG) draws the pattern into its
//! framebuffer; `virsh screenshot` must show it exactly. `virsh destroy`
//! then leaves no gpu-airlock process behind.
//!
//! Needs the installed package, libvirt and the guest image; `.ci/run`
//! provides all three. Without them the test, `#[ignore]`d for it, fails
//! when run (`--include-ignored`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::guest::{cannot_run, GuestImage};
use harness::{dies_with_parent, pattern, TempDir};

const WIDTH: u32 = 640;
const HEIGHT: u32 = 480;
const URI: &str = "qemu:///system";

fn virsh(args: &[&str]) -> std::process::Output {
    Command::new("virsh")
        .arg("-c")
        .arg(URI)
        .args(args)
        .output()
        .expect("run virsh")
}

/// libvirt's daemons, started for this test unless one already serves.
struct Daemons(Vec<Child>);

impl Daemons {
    fn start() -> Daemons {
        if virsh(&["version"]).status.success() {
            return Daemons(Vec::new());
        }
        let mut started = Vec::new();
        for daemon in ["/usr/sbin/virtlogd", "/usr/sbin/libvirtd"] {
            let child = dies_with_parent(&mut Command::new(daemon))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("start {daemon}: {e}"));
            started.push(child);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !virsh(&["version"]).status.success() {
            assert!(Instant::now() < deadline, "libvirtd did not start serving");
            std::thread::sleep(Duration::from_millis(200));
        }
        Daemons(started)
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for child in self.0.iter_mut().rev() {
            // SAFETY: signalling our own child; SIGTERM lets libvirtd
            // clean its sockets up.
            unsafe { nix::libc::kill(child.id() as i32, nix::libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

/// The pids of processes running one of the installed gpu-airlock
/// binaries.
fn installed_processes() -> Vec<(u32, PathBuf)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
            continue;
        };
        if exe == Path::new("/usr/bin/gpu-airlock") || exe.starts_with("/usr/libexec/gpu-airlock") {
            found.push((pid, exe));
        }
    }
    found
}

fn ready() -> Option<GuestImage> {
    if !harness::guest::package_installed() {
        return None;
    }
    if !Path::new("/usr/sbin/libvirtd").exists() || !Path::new("/usr/bin/virsh").exists() {
        cannot_run("the libvirt test needs libvirt-daemon-system and libvirt-clients: run `sudo tests/guest/prepare.sh`");
        return None;
    }
    GuestImage::find()
}

fn domain_xml(name: &str, dir: &Path) -> String {
    format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>512</memory>
  <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{dir}/vmlinuz</kernel>
    <initrd>{dir}/initramfs.cpio.gz</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet</cmdline>
  </os>
  <sysinfo type='fwcfg'>
    <entry name='opt/gpu-airlock/pattern' file='{dir}/pattern.raw'/>
  </sysinfo>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='file'><source path='{dir}/console.log'/></serial>
    <video>
      <model type='virtio' heads='1'><resolution x='{WIDTH}' y='{HEIGHT}'/></model>
      <driver name='vhostuser'/>
    </video>
    <memballoon model='none'/>
  </devices>
</domain>
",
        dir = dir.display()
    )
}

#[test]
#[ignore = "needs libvirt, the installed package and the test guest: tests/guest/prepare.sh and .ci/run"]
fn libvirt_starts_the_installed_backend_and_the_guest_screen_is_drawn_by_it() {
    let image = harness::guest::needed(ready());
    let _daemons = Daemons::start();
    // QEMU runs as libvirt-qemu: the files it reads are world-readable in
    // a directory it may enter.
    let dir = TempDir::new("libvirt");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (from, name) in [
        (&image.kernel, "vmlinuz"),
        (&image.initrd, "initramfs.cpio.gz"),
    ] {
        std::fs::copy(from, dir.0.join(name)).unwrap();
    }
    std::fs::write(dir.0.join("pattern.raw"), pattern::pixels(WIDTH, HEIGHT)).unwrap();
    for name in ["vmlinuz", "initramfs.cpio.gz", "pattern.raw"] {
        std::fs::set_permissions(dir.0.join(name), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let name = format!("gpu-airlock-test-{}", std::process::id());
    let xml = dir.0.join("domain.xml");
    std::fs::write(&xml, domain_xml(&name, &dir.0)).unwrap();
    let before: Vec<u32> = installed_processes().iter().map(|(p, _)| *p).collect();
    // A transient domain: destroyed, it is gone.
    let out = virsh(&["create", xml.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "virsh create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let destroy = scopeguard(&name);

    let console = dir.0.join("console.log");
    let deadline = Instant::now() + Duration::from_secs(90);
    let text = loop {
        let text = std::fs::read_to_string(&console).unwrap_or_default();
        if text.contains("GUEST: done") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        text.contains("GUEST: pattern drawn"),
        "the guest drew: {text}"
    );
    assert!(
        text.contains(&format!("status=connected modes={WIDTH}x{HEIGHT},")),
        "the guest's mode is the domain's resolution: {text}"
    );

    // libvirt started the installed broker, which started its workers.
    let ours: Vec<(u32, PathBuf)> = installed_processes()
        .into_iter()
        .filter(|(p, _)| !before.contains(p))
        .collect();
    let broker = ours
        .iter()
        .find(|(_, exe)| exe == Path::new("/usr/bin/gpu-airlock"))
        .unwrap_or_else(|| panic!("no installed gpu-airlock runs for the domain: {ours:?}"));
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", broker.0)).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("--fd"),
        "libvirt passes --fd"
    );
    assert_eq!(ours.len(), 3, "the broker and its two workers: {ours:?}");

    // What the guest drew is what libvirt's screenshot shows.
    let shot = dir.0.join("screen.png");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (w, h, screen) = loop {
        let out = virsh(&["screenshot", &name, shot.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "virsh screenshot: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (w, h, screen) = pattern::read_png(&shot);
        let whole = pattern::find(&screen, w, WIDTH, HEIGHT) == Some((0, 0));
        if (w, h) == (WIDTH as usize, HEIGHT as usize) && whole || Instant::now() > deadline {
            break (w, h, screen);
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(
        (w, h),
        (WIDTH as usize, HEIGHT as usize),
        "the screen's size"
    );
    assert_eq!(
        pattern::find(&screen, w, WIDTH, HEIGHT),
        Some((0, 0)),
        "the screenshot is the guest's pattern, pixel for pixel"
    );

    // virsh destroy: nothing of gpu-airlock is left.
    drop(destroy);
    let deadline = Instant::now() + Duration::from_secs(15);
    let left = loop {
        let left: Vec<_> = ours
            .iter()
            .filter(|(p, _)| harness::process_alive(*p))
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            break left.into_iter().cloned().collect::<Vec<_>>();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(left.is_empty(), "left after virsh destroy: {left:?}");
}

/// Destroys the domain when dropped (the end of the test, or a failed
/// assertion).
struct Destroy(String);

fn scopeguard(name: &str) -> Destroy {
    Destroy(name.to_string())
}

impl Drop for Destroy {
    fn drop(&mut self) {
        let out = virsh(&["destroy", &self.0]);
        if !out.status.success() && !std::thread::panicking() {
            panic!("virsh destroy: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}
