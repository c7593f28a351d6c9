//! The jail as the kernel reports it, on the three real processes while
//! they serve a front-end: each lives in namespaces of its own with an empty
//! root, and every thread of each has a seccomp filter, has no_new_privs,
//! and holds no capability.

use std::fs;
use std::path::PathBuf;

use harness::*;

fn status_field<'a>(status: &'a str, field: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("{field} in status"))
        .trim()
}

fn assert_jailed(pid: u32, what: &str) {
    let tasks: Vec<_> = fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!tasks.is_empty());
    for tid in tasks {
        let status = fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
        let name = status_field(&status, "Name").to_string();
        let here = format!("{what} thread {tid} ({name})");
        assert_eq!(
            status_field(&status, "Seccomp"),
            "2",
            "{here}: seccomp filter mode"
        );
        assert_eq!(status_field(&status, "NoNewPrivs"), "1", "{here}");
        for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(
                status_field(&status, caps),
                "0000000000000000",
                "{here}: {caps}"
            );
        }
    }
}

const NAMESPACES: [&str; 4] = ["user", "mnt", "net", "ipc"];

fn namespace(pid: &str, ns: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn each_process_has_its_own_namespaces_and_an_empty_root() {
    let backend = Backend::start(&[]);
    let (gpu, render) = backend.worker_pids();
    let pids = [
        ("broker", backend.pid()),
        ("gpu-worker", gpu),
        ("render-worker", render),
    ];
    for (what, pid) in pids {
        for ns in NAMESPACES {
            assert_ne!(
                namespace(&pid.to_string(), ns),
                namespace("self", ns),
                "{what} is in a {ns} namespace of its own"
            );
        }
        let root: Vec<_> = fs::read_dir(format!("/proc/{pid}/root"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(root.is_empty(), "{what}'s root is empty, found {root:?}");
    }
    // And no two processes share a network namespace.
    assert_ne!(
        namespace(&gpu.to_string(), "net"),
        namespace(&render.to_string(), "net")
    );
    assert_ne!(
        namespace(&backend.pid().to_string(), "net"),
        namespace(&gpu.to_string(), "net")
    );
}

#[test]
fn sandbox_none_keeps_the_host_namespaces() {
    let backend = Backend::start(&["--sandbox", "none"]);
    let (gpu, _) = backend.worker_pids();
    for ns in NAMESPACES {
        assert_eq!(namespace(&gpu.to_string(), ns), namespace("self", ns));
    }
    let status = fs::read_to_string(format!("/proc/{gpu}/status")).unwrap();
    assert_eq!(status_field(&status, "Seccomp"), "2", "seccomp stays on");
    assert!(backend
        .log
        .wait_for(&["--sandbox none"], std::time::Duration::from_secs(5))
        .is_some());
}

/// The socket inodes a process holds, from its descriptor table.
fn socket_inodes(pid: u32) -> Vec<String> {
    fd_targets(pid)
        .into_iter()
        .filter_map(|t| Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_string()))
        .collect()
}

/// The bound unix socket names in this network namespace (/proc/net/unix:
/// `@name` for abstract ones), by inode.
fn unix_socket_names() -> Vec<(String, String)> {
    fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let fields: Vec<_> = l.split_whitespace().collect();
            Some((fields.get(6)?.to_string(), fields.get(7)?.to_string()))
        })
        .collect()
}

#[test]
fn sandbox_none_keeps_the_internal_link_in_a_private_directory() {
    use std::os::unix::fs::PermissionsExt;
    let backend = Backend::start(&["--sandbox", "none"]);
    let mut dev = Device::connect(&backend.socket);
    let (len, _) = dev.control(&ctrl_hdr(CMD_GET_DISPLAY_INFO, 0, 0), 1024);
    assert!(len > 0, "the device serves through the internal link");
    let (gpu, _) = backend.worker_pids();
    let held = socket_inodes(gpu);
    // The listener and the connection it accepted carry the same name.
    let mut names: Vec<_> = unix_socket_names()
        .into_iter()
        .filter(|(inode, _)| held.contains(inode))
        .map(|(_, name)| name)
        .collect();
    names.sort();
    names.dedup();
    // Without a network namespace of its own, an abstract name would be
    // reachable by every local user.
    assert!(
        !names.iter().any(|n| n.starts_with('@')),
        "gpu-worker listens on an abstract name: {names:?}"
    );
    let [socket] = names.as_slice() else {
        panic!("gpu-worker listens on one named socket, found {names:?}");
    };
    let socket = std::path::PathBuf::from(socket);
    let dir = socket.parent().unwrap().to_path_buf();
    let mode = fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{}", dir.display());
    // Another user cannot connect. Credentials belong to threads: a raw
    // setresuid changes this thread's alone (glibc's setuid would change
    // every thread of the test process).
    let other_user = {
        let socket = socket.clone();
        std::thread::spawn(move || {
            // SAFETY: raw setresgid/setresuid on this thread only; it ends
            // right after the connect below.
            let dropped = unsafe {
                nix::libc::syscall(nix::libc::SYS_setresgid, 65534, 65534, 65534) == 0
                    && nix::libc::syscall(nix::libc::SYS_setresuid, 65534, 65534, 65534) == 0
            };
            assert!(dropped, "cannot become uid 65534 on this thread");
            std::os::unix::net::UnixStream::connect(&socket).map(|_| ())
        })
        .join()
        .unwrap()
    };
    assert_eq!(
        other_user.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::PermissionDenied),
        "uid 65534 reaches {}",
        socket.display()
    );
    // The broker removes the directory when it stops.
    drop(dev);
    let pid = backend.pid();
    // SAFETY: signalling our own child.
    unsafe { nix::libc::kill(pid as i32, nix::libc::SIGTERM) };
    let mut backend = backend;
    assert!(backend
        .wait_exit(std::time::Duration::from_secs(10))
        .is_some());
    assert!(!dir.exists(), "{} is left behind", dir.display());
}

#[test]
fn every_thread_of_every_process_is_confined() {
    let backend = Backend::start(&[]);
    // Serve a front-end so gpu-worker's per-connection threads exist too.
    let mut dev = Device::connect(&backend.socket);
    let (len, _) = dev.control(&ctrl_hdr(CMD_GET_DISPLAY_INFO, 0, 0), 1024);
    assert!(len > 0);
    let (gpu, render) = backend.worker_pids();
    assert!(
        fs::read_dir(format!("/proc/{gpu}/task")).unwrap().count() >= 3,
        "gpu-worker runs its connection threads"
    );
    assert_jailed(backend.pid(), "broker");
    assert_jailed(gpu, "gpu-worker");
    assert_jailed(render, "render-worker");
}

#[test]
fn seccomp_none_leaves_the_filter_off_but_still_drops_privileges() {
    let backend = Backend::start(&["--seccomp", "none"]);
    let (gpu, _) = backend.worker_pids();
    let status = fs::read_to_string(format!("/proc/{gpu}/status")).unwrap();
    assert_eq!(status_field(&status, "Seccomp"), "0");
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    assert_eq!(status_field(&status, "CapEff"), "0000000000000000");
    assert!(backend
        .log
        .wait_for(
            &["without a seccomp filter"],
            std::time::Duration::from_secs(5)
        )
        .is_some());
}

#[test]
fn trap_and_log_filters_serve_like_kill() {
    // Each --seccomp action is its own compiled program; each must let the
    // device do its work.
    for mode in ["trap", "log"] {
        let backend = Backend::start(&["--seccomp", mode]);
        let mut dev = Device::connect(&backend.socket);
        let (len, resp) = dev.control(&ctrl_hdr(CMD_GET_DISPLAY_INFO, 0, 0), 1024);
        assert!(len > 0, "--seccomp {mode}");
        assert_eq!(parse_hdr(&resp).0, RESP_OK_DISPLAY_INFO, "--seccomp {mode}");
        let (gpu, _) = backend.worker_pids();
        let status = fs::read_to_string(format!("/proc/{gpu}/status")).unwrap();
        assert_eq!(status_field(&status, "Seccomp"), "2", "--seccomp {mode}");
        assert!(
            !backend
                .log
                .lines()
                .iter()
                .any(|l| l.contains("seccomp trapped")),
            "--seccomp {mode}: {:#?}",
            backend.log.lines()
        );
    }
}

/// The C library a process mapped (the path its maps name for libc.so.6).
fn mapped_libc(pid: &str) -> PathBuf {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let path = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libc.so.6"))
        .unwrap_or_else(|| panic!("process {pid} maps no libc.so.6"));
    fs::canonicalize(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The suites prove the jail on the C library they were asked to
/// (`tests/libc/suites` sets GPU_AIRLOCK_EXPECT_LIBC; without it, the
/// tests' own): every process runs on it, not on a library the loader
/// found elsewhere.
#[test]
fn every_process_runs_on_the_c_library_under_test() {
    let expected = match std::env::var_os("GPU_AIRLOCK_EXPECT_LIBC") {
        Some(path) => fs::canonicalize(PathBuf::from(path)).unwrap(),
        None => mapped_libc("self"),
    };
    let backend = Backend::start(&[]);
    let (gpu, render) = backend.worker_pids();
    for (what, pid) in [
        ("broker", backend.pid()),
        ("gpu-worker", gpu),
        ("render-worker", render),
    ] {
        assert_eq!(
            mapped_libc(&pid.to_string()),
            expected,
            "{what} runs on the C library under test"
        );
    }
}
