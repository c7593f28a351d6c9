//! Debian's desktop applications in the guest, on a host compositor with a
//! seat: a QEMU 11.1 guest against the jailed backend, its Debian 13
//! userland over 9p (the gpu3d root), `gpu-airlock-guest` serving Wayland
//! in it, and sway's headless backend on the host, which has a seat that
//! `wtype` types on and the harness's virtual pointer moves and clicks, and
//! `grim` for screenshots.
//!
//! The guest runs what the test asks on its console (tests/guest/init-wayland,
//! mode `desktop`): each application is started as a user's session would
//! start it, and each test checks what it drew (a screenshot) and what it
//! received (a file the application wrote, or `wev`'s event log).
//!
//! Needs what `tests/guest/prepare.sh` makes (the guest, its userland with
//! the applications, sway, grim, wtype); without them each test, `#[ignore]`d
//! for it, fails when run (`cargo test -- --include-ignored`, as `.ci/run`
//! does) and is listed as not run by a plain `cargo test`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::guest::{error_responses, qemu11, Boot, Guest, GuestImage};
use harness::wayland::{Pointer, Sway, BUTTON_LEFT};
use harness::{binary, Backend, TempDir};

/// Linux's BTN_RIGHT.
const BUTTON_RIGHT: u32 = 0x111;

/// The guest's Debian userland with the applications (tests/gpu3d/prepare.sh,
/// which tests/guest/prepare.sh runs).
fn debian_root() -> Option<PathBuf> {
    let root = harness::guest::guest_cache().join("gpu3d");
    if root.join("usr/bin/foot").exists() && root.join("usr/bin/gtk3-demo").exists() {
        return Some(std::fs::canonicalize(root).unwrap());
    }
    harness::guest::cannot_run(&format!(
        "the desktop guest needs its applications in {}: run `sudo tests/guest/prepare.sh`",
        root.display()
    ));
    None
}

/// A guest desktop: sway on the host, the backend on sway, the guest with
/// its proxy, and the applications the test starts in it.
struct Desktop {
    guest: Guest,
    sway: Sway,
    backend: Backend,
}

impl Desktop {
    /// sway, the backend on it, and the guest booted in `mode` with its
    /// Debian userland and `files` in its initramfs beside the init.
    fn boot(name: &str, mode: &str, files: &[(&str, &Path)]) -> Desktop {
        let image = harness::guest::needed(GuestImage::find());
        harness::guest::needed(qemu11());
        let root = harness::guest::needed(debian_root());
        let sway = harness::guest::needed(Sway::start());
        let backend = Backend::start(&["--wayland-socket", &sway.arg()]);
        let share = format!(
            "local,path={},mount_tag=root,security_model=none,readonly=on",
            root.display()
        );
        let dir = TempDir::new(name);
        let init = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("guest/init-wayland");
        let mut all = vec![("/init", init.as_path())];
        all.extend_from_slice(files);
        let initrd = image.with_files(&dir.0, &all);
        let append = format!("airlock.mode={mode}");
        let boot = Boot {
            extra: vec!["-virtfs".into(), share.into()],
            ..Boot::qemu11(&image, &initrd, &backend.socket, &append, 1024)
        };
        let guest = Guest::boot(qemu11().expect("checked"), boot, dir);
        Desktop {
            guest,
            sway,
            backend,
        }
    }

    /// A guest desktop with the proxy running, waiting for commands.
    fn start(name: &str) -> Desktop {
        let proxy = binary("gpu-airlock-guest");
        let mut desktop = Desktop::boot(name, "desktop", &[("/bin/gpu-airlock-guest", &proxy)]);
        desktop.prompt(120);
        desktop
    }

    /// Waits for the guest's next prompt.
    fn prompt(&mut self, secs: u64) {
        let seen = self.guest.wait_line(Duration::from_secs(secs), |l| {
            l.contains("GUEST: desktop waiting")
        });
        assert!(
            seen.is_some(),
            "the guest answered: {:#?}",
            self.guest.lines
        );
    }

    /// The region of at least `min` pixels each way in which the screen
    /// came to differ from `before`, waiting `secs` seconds at most.
    fn change_since(&self, before: &[u8], min: (usize, usize), secs: u64) -> Option<Window> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let (width, _, now) = self.sway.screenshot();
            let seen = changed(before, &now, width).filter(|w| w.w >= min.0 && w.h >= min.1);
            if seen.is_some() || Instant::now() > deadline {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Starts `command` in the guest as `name`, and waits until its first
    /// window changed the screen (a region of at least `min` pixels each
    /// way): that region. How long it took is printed (BENCH).
    fn run(&mut self, name: &str, command: &str, min: (usize, usize)) -> Window {
        let before = self.sway.screenshot().2;
        let asked = Instant::now();
        self.guest.type_line(&format!("run {name} {command}"));
        self.prompt(60);
        if let Some(w) = self.change_since(&before, min, 90) {
            println!(
                "BENCH {name} (`{command}`) from a Debian guest (TCG): first frame on sway {} ms \
                 after it was started, a {}x{} window",
                asked.elapsed().as_millis(),
                w.w,
                w.h
            );
            return w;
        }
        self.guest.type_line(&format!("stop {name}"));
        self.prompt(30);
        panic!("{name}'s window showed on sway: {:#?}", self.guest.lines)
    }

    /// Ends `name` with `signal` (`stop`: SIGTERM, `kill`: SIGKILL); what it
    /// printed.
    fn end(&mut self, how: &str, name: &str) -> Vec<String> {
        let from = self.guest.lines.len();
        self.guest.type_line(&format!("{how} {name}"));
        self.prompt(60);
        let prefix = format!("APP {name}: ");
        self.guest.lines[from..]
            .iter()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    /// A file of the guest root's /run, as the guest reads it.
    fn file(&mut self, name: &str) -> String {
        self.guest.type_line(&format!("file {name}"));
        let prefix = format!("FILE {name}: ");
        let line = self
            .guest
            .wait_line(Duration::from_secs(30), |l| l.starts_with(&prefix));
        self.prompt(30);
        line.and_then(|l| l.strip_prefix(&prefix).map(str::to_string))
            .unwrap_or_default()
    }

    /// The guest proxy's resident memory, in KiB.
    fn proxy_rss(&mut self) -> u64 {
        self.guest.type_line("mem");
        let line = self
            .guest
            .wait_line(Duration::from_secs(30), |l| l.starts_with("MEM: "));
        self.prompt(30);
        line.and_then(|l| l.strip_prefix("MEM: ").and_then(|n| n.trim().parse().ok()))
            .unwrap_or_else(|| panic!("the proxy's VmRSS: {:#?}", self.guest.lines))
    }

    /// Saves a screenshot where GPU_AIRLOCK_SCREENSHOTS says.
    fn keep_screenshot(&self, name: &str) {
        keep_screenshot(&self.sway, name);
    }

    /// Ends the guest's applications and its proxy; the console. The
    /// guest's kernel saw no error response, the proxy ended cleanly and
    /// the backend logged no warning.
    fn quit(mut self) -> Vec<String> {
        self.guest.type_line("quit");
        let seen = self
            .guest
            .wait_line(Duration::from_secs(60), |l| l.contains("GUEST: proxy exit"));
        assert!(seen.is_some(), "the proxy ended: {:#?}", self.guest.lines);
        let console = self.guest.quit();
        assert!(
            console.iter().any(|l| l.contains("GUEST: proxy exit 0")),
            "the proxy ended cleanly: {console:#?}"
        );
        assert!(error_responses(&console).is_empty(), "{console:#?}");
        let log = self.backend.log.lines();
        let warnings: Vec<&String> = log
            .iter()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        assert!(warnings.is_empty(), "the backend warned: {warnings:#?}");
        console
    }
}

/// Saves sway's screen as `name`.ppm where GPU_AIRLOCK_SCREENSHOTS says.
fn keep_screenshot(sway: &Sway, name: &str) {
    if let Ok(dir) = std::env::var("GPU_AIRLOCK_SCREENSHOTS") {
        let (w, h, rgb) = sway.screenshot();
        let mut ppm = format!("P6\n{w} {h}\n255\n").into_bytes();
        ppm.extend_from_slice(&rgb);
        std::fs::write(Path::new(&dir).join(format!("{name}.ppm")), ppm).unwrap();
    }
}

/// A region of the screen.
#[derive(Clone, Copy, Debug)]
struct Window {
    x: usize,
    y: usize,
    w: usize,
    h: usize,
}

impl Window {
    fn centre(&self) -> (u32, u32) {
        ((self.x + self.w / 2) as u32, (self.y + self.h / 2) as u32)
    }
}

/// The bounding box of the pixels that differ between two screenshots.
fn changed(a: &[u8], b: &[u8], width: usize) -> Option<Window> {
    let mut bbox: Option<(usize, usize, usize, usize)> = None;
    for (i, (p, q)) in a.chunks(3).zip(b.chunks(3)).enumerate() {
        if p != q {
            let (x, y) = (i % width, i / width);
            let (x0, y0, x1, y1) = bbox.unwrap_or((x, y, x, y));
            bbox = Some((x0.min(x), y0.min(y), x1.max(x), y1.max(y)));
        }
    }
    bbox.map(|(x0, y0, x1, y1)| Window {
        x: x0,
        y: y0,
        w: x1 - x0 + 1,
        h: y1 - y0 + 1,
    })
}

/// How many colours `window` shows, and how many pixels the commonest
/// one covers.
fn colours(rgb: &[u8], width: usize, window: Window) -> (usize, usize) {
    let mut seen = std::collections::HashMap::new();
    for row in window.y..window.y + window.h {
        for col in window.x..window.x + window.w {
            let i = (row * width + col) * 3;
            *seen.entry(&rgb[i..i + 3]).or_insert(0usize) += 1;
        }
    }
    (seen.len(), seen.values().max().copied().unwrap_or(0))
}

/// The window's content looks drawn: a background and things on it, not
/// one flat colour.
fn assert_drawn(desktop: &Desktop, name: &str, window: Window) {
    let (width, _, rgb) = desktop.sway.screenshot();
    let (n, most) = colours(&rgb, width, window);
    assert!(
        n > 2 && most < window.w * window.h,
        "{name}'s window {window:?} shows more than one colour ({n})"
    );
}

/// Types a command into the focused guest terminal and returns what the
/// file it writes holds, as the guest reads it.
///
/// The headless seat gains its keyboard only when `wtype` makes one, and
/// the application binds it one round trip through the proxy later: under
/// load the first keys can come before that bind and reach no one (a
/// keyboard plugged in as the typing starts, not the proxy losing them).
/// So a command whose file did not appear is typed again, on a new line,
/// at most twice more, and each time it is said.
fn typed_into(desktop: &mut Desktop, words: &str) -> String {
    let mut got = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            println!("typing again ({attempt}): the guest read {got:?}");
        }
        desktop
            .sway
            .type_text(&format!("\necho {words} > /run/typed\n"));
        // The keys travel host → proxy → the application → its shell.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            got = desktop.file("typed");
            if got == words {
                return got;
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    got
}

/// A terminal's window shows, and a command typed on the host runs in its
/// shell: what each terminal test checks.
fn terminal_test(name: &str, what: &str, command: &str) {
    let mut desktop = Desktop::start(&format!("guest-{name}"));
    let window = desktop.run(name, command, (200, 100));
    // The shell needs a moment after the window to read its input.
    std::thread::sleep(Duration::from_secs(3));
    assert_drawn(&desktop, name, window);
    let words = format!("typed-into-{name}");
    let typed = typed_into(&mut desktop, &words);
    desktop.keep_screenshot(&format!("guest-{name}"));
    let said = desktop.end("stop", name);
    assert_eq!(
        typed, words,
        "the keys typed on the host ran the command in {what}'s shell: {said:#?}"
    );
    desktop.quit();
}

/// foot, the terminal that needs a seat (weston's headless backend has
/// none: "no seats available").
#[test]
#[ignore = "needs QEMU 11 (the trixie root), the test guest, its Debian userland, sway, grim and wtype: tests/guest/prepare.sh"]
fn foot_in_the_guest_runs_what_the_host_types() {
    terminal_test("foot", "foot", "foot");
}

/// weston-terminal (libwayland, cairo, pango: the toolkit-less client).
#[test]
#[ignore = "needs QEMU 11 (the trixie root), the test guest, its Debian userland, sway, grim and wtype: tests/guest/prepare.sh"]
fn weston_terminal_in_the_guest_runs_what_the_host_types() {
    // (The name is a shell variable's in the guest's init: no hyphen.)
    terminal_test(
        "westonterm",
        "weston-terminal",
        "env SHELL=/bin/sh weston-terminal --shell=/bin/sh",
    );
}

/// Qt 6 (qt6-wayland): qterminal, LXQt's terminal.
#[test]
#[ignore = "needs QEMU 11 (the trixie root), the test guest, its Debian userland, sway, grim and wtype: tests/guest/prepare.sh"]
fn qterminal_a_qt6_application_runs_what_the_host_types() {
    terminal_test(
        "qterminal",
        "qterminal (Qt 6)",
        "env QT_QPA_PLATFORM=wayland SHELL=/bin/sh qterminal",
    );
}

/// The seat's pointer and keyboard reach a guest client: `wev` prints
/// every event it gets; the host moves the pointer onto its window,
/// clicks, and types a key.
#[test]
#[ignore = "needs QEMU 11 (the trixie root), the test guest, its Debian userland, sway, grim and wtype: tests/guest/prepare.sh"]
fn the_hosts_pointer_and_keyboard_reach_a_guest_client() {
    let mut desktop = Desktop::start("guest-wev");
    let (width, height, _) = desktop.sway.screenshot();
    // The pointer is there before the client, as a mouse would be.
    let mut pointer: Pointer = desktop.sway.pointer((width as u32, height as u32));
    let window = desktop.run("wev", "stdbuf -oL wev", (100, 100));
    let (x, y) = window.centre();
    // The client binds wl_pointer when it first sees the seat; give the
    // round trip through the proxy a moment, then move, click and type.
    std::thread::sleep(Duration::from_secs(2));
    pointer.move_to(x - 10, y - 10);
    pointer.move_to(x, y);
    pointer.click(BUTTON_LEFT);
    // Twice: the seat's keyboard is wtype's, and the first key may come
    // before wev has bound it (see `typed_into`).
    desktop.sway.type_text("q");
    std::thread::sleep(Duration::from_secs(2));
    desktop.sway.type_text("q");
    std::thread::sleep(Duration::from_secs(3));
    let events = desktop.end("stop", "wev");
    let has = |what: &[&str]| events.iter().any(|l| what.iter().all(|w| l.contains(w)));
    assert!(
        has(&["wl_pointer", "enter"]),
        "wev saw the pointer enter: {events:#?}"
    );
    assert!(
        has(&["wl_pointer", "motion"]),
        "wev saw the pointer move: {events:#?}"
    );
    assert!(
        has(&["wl_pointer", "button", "272", "pressed"])
            && has(&["wl_pointer", "button", "272", "released"]),
        "wev saw the left button pressed and released: {events:#?}"
    );
    assert!(
        has(&["sym: q"]),
        "wev saw the key typed on the host: {events:#?}"
    );
    drop(pointer);
    desktop.quit();
}

/// GTK 3: gtk3-demo's window, and a popup menu (an xdg_popup) opened by a
/// right click in its text view.
#[test]
#[ignore = "needs QEMU 11 (the trixie root), the test guest, its Debian userland, sway, grim and wtype: tests/guest/prepare.sh"]
fn gtk3_demo_shows_and_opens_a_popup_menu() {
    popup_test("gtk3", "env NO_AT_BRIDGE=1 GDK_BACKEND=wayland gtk3-demo");
}

/// GTK 4 (the cairo renderer: the guest has no 3D here): gtk4-demo's
/// window, and the popover menu (an xdg_popup) of its text view.
#[test]
#[ignore = "needs QEMU 11 (the trixie root), the test guest, its Debian userland, sway, grim and wtype: tests/guest/prepare.sh"]
fn gtk4_demo_shows_and_opens_a_popup_menu() {
    popup_test(
        "gtk4",
        "env NO_AT_BRIDGE=1 GSK_RENDERER=cairo GDK_DISABLE=gl,vulkan GDK_BACKEND=wayland gtk4-demo",
    );
}

/// Starts `command`, waits for its window, right-clicks in the right half
/// of it (the demos' source view) and checks that a popup showed there.
fn popup_test(name: &str, command: &str) {
    let mut desktop = Desktop::start(&format!("guest-{name}"));
    let (width, height, _) = desktop.sway.screenshot();
    let mut pointer = desktop.sway.pointer((width as u32, height as u32));
    let window = desktop.run(name, command, (300, 200));
    // Let it finish drawing (a toolkit's first frames come in steps).
    let mut last = desktop.sway.screenshot().2;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_secs(1));
        let now = desktop.sway.screenshot().2;
        if now == last {
            break;
        }
        last = now;
    }
    assert_drawn(&desktop, name, window);
    let at = (
        (window.x + window.w * 3 / 4) as u32,
        (window.y + window.h / 2) as u32,
    );
    pointer.move_to(at.0, at.1);
    std::thread::sleep(Duration::from_secs(1));
    let before = desktop.sway.screenshot().2;
    pointer.click(BUTTON_RIGHT);
    let popup = desktop.change_since(&before, (60, 40), 30);
    desktop.keep_screenshot(&format!("guest-{name}-popup"));
    let said = desktop.end("stop", name);
    let popup = popup.unwrap_or_else(|| panic!("{name}'s popup menu showed: {said:#?}"));
    // The menu opens at the click.
    assert!(
        popup.x <= at.0 as usize + 5
            && at.0 as usize <= popup.x + popup.w + 5
            && popup.y <= at.1 as usize + 5
            && at.1 as usize <= popup.y + popup.h + 5,
        "{name}'s popup {popup:?} is where the click was ({at:?}): {said:#?}"
    );
    drop(pointer);
    desktop.quit();
}

/// X11 through rootful Xwayland (one host window holding the X screen,
/// its buffers in shared memory): xterm in it, and what the host types
/// with the pointer over xterm (X's focus follows the pointer with no
/// window manager) runs in xterm's shell; xeyes beside it follows the
/// host's pointer.
#[test]
#[ignore = "needs QEMU 11 (the trixie root), the test guest, its Debian userland, sway, grim and wtype: tests/guest/prepare.sh"]
fn xterm_and_xeyes_through_rootful_xwayland_take_the_hosts_keys_and_pointer() {
    let mut desktop = Desktop::start("guest-xterm");
    let (width, height, _) = desktop.sway.screenshot();
    let mut pointer = desktop.sway.pointer((width as u32, height as u32));
    desktop.run("xwayland", "Xwayland :1 -geometry 800x600 -shm", (200, 100));
    let xterm = desktop.run(
        "xterm",
        "env DISPLAY=:1 SHELL=/bin/sh xterm -geometry 80x24+0+0",
        (200, 100),
    );
    // The X pointer onto xterm, then the keys.
    let (x, y) = xterm.centre();
    pointer.move_to(x - 5, y - 5);
    pointer.move_to(x, y);
    std::thread::sleep(Duration::from_secs(2));
    let typed = typed_into(&mut desktop, "typed-into-xterm");
    // xeyes beside it, whose eyes follow the X pointer: the host's pointer
    // moved from its left to its right changes what its window shows.
    let eyes = desktop.run(
        "xeyes",
        "env DISPLAY=:1 xeyes -geometry 150x100+600+0",
        (60, 40),
    );
    let below = (eyes.y + eyes.h + 150) as u32;
    let mut look = |x: u32| {
        pointer.move_to(x, below);
        std::thread::sleep(Duration::from_secs(2));
        let (_, _, rgb) = desktop.sway.screenshot();
        (eyes.y..eyes.y + eyes.h)
            .flat_map(|row| (row * width + eyes.x) * 3..(row * width + eyes.x + eyes.w) * 3)
            .map(|i| rgb[i])
            .collect::<Vec<u8>>()
    };
    let left = look(eyes.x.saturating_sub(300) as u32);
    let right = look((eyes.x + eyes.w + 40) as u32);
    desktop.keep_screenshot("guest-xterm");
    let xeyes_said = desktop.end("stop", "xeyes");
    let xterm_said = desktop.end("stop", "xterm");
    let xwayland_said = desktop.end("stop", "xwayland");
    assert_eq!(
        typed, "typed-into-xterm",
        "the keys typed on the host ran the command in xterm's shell: {xterm_said:#?} \
         {xwayland_said:#?}"
    );
    assert!(
        left != right,
        "xeyes ({eyes:?}) followed the pointer: {xeyes_said:#?}"
    );
    drop(pointer);
    desktop.quit();
}

/// Two applications at once: foot and gtk3-demo side by side; gtk3-demo
/// is killed (SIGKILL, as a crash), and foot keeps its window and its
/// keyboard.
#[test]
#[ignore = "needs QEMU 11 (the trixie root), the test guest, its Debian userland, sway, grim and wtype: tests/guest/prepare.sh"]
fn one_application_killed_leaves_the_other_its_window_and_keyboard() {
    let mut desktop = Desktop::start("guest-two");
    let idle = desktop.proxy_rss();
    desktop.run("foot", "foot", (200, 100));
    std::thread::sleep(Duration::from_secs(2));
    let one = desktop.proxy_rss();
    desktop.run("gtk3", "env NO_AT_BRIDGE=1 gtk3-demo", (200, 100));
    std::thread::sleep(Duration::from_secs(3));
    let two = desktop.proxy_rss();
    println!(
        "BENCH the guest proxy's resident memory: {idle} KiB with no client, {one} KiB with \
         foot (+{} KiB), {two} KiB with foot and gtk3-demo (+{} KiB)",
        one.saturating_sub(idle),
        two.saturating_sub(one)
    );
    desktop.keep_screenshot("guest-two");
    // sway holds both windows (its tree names each by its app_id).
    let windows = desktop.sway.windows();
    assert!(
        windows.iter().any(|w| w == "foot") && windows.iter().any(|w| w == "gtk3-demo"),
        "sway shows foot and gtk3-demo: {windows:?}"
    );
    let killed = desktop.end("kill", "gtk3");
    assert!(
        desktop
            .guest
            .lines
            .iter()
            .any(|l| l.contains("GUEST: gtk3 exit 137")),
        "gtk3-demo was killed: {killed:#?}"
    );
    // Its window goes, foot's stays.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut windows = desktop.sway.windows();
    while windows.len() > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        windows = desktop.sway.windows();
    }
    assert_eq!(windows, ["foot"], "only foot's window is left");
    // foot takes the output again, and the keys reach it.
    std::thread::sleep(Duration::from_secs(3));
    let typed = typed_into(&mut desktop, "foot-still-here");
    desktop.keep_screenshot("guest-two-after");
    let said = desktop.end("stop", "foot");
    assert_eq!(
        typed, "foot-still-here",
        "foot kept its keyboard after gtk3-demo died: {said:#?}"
    );
    desktop.quit();
}

/// The guest package (`tests/install-package` builds it, as `.ci/run`
/// does), or None after saying so loudly.
fn guest_package() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debian");
    let newest = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("gpu-airlock-guest_"))
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok());
    if newest.is_none() {
        harness::guest::cannot_run(&format!(
            "the guest package is not built in {}: run `sudo tests/install-package`",
            dir.display()
        ));
    }
    newest
}

/// The guest package in a Debian guest booted with systemd: `dpkg -i`, a
/// user logs in, and the session's first Wayland client (foot) starts
/// gpu-airlock-guest through the package's socket unit, as that user,
/// under the user's systemd; foot's window shows on the host.
#[test]
#[ignore = "needs QEMU 11 (the trixie root), the test guest, its Debian userland, sway and the guest package: tests/guest/prepare.sh, tests/install-package"]
fn the_guest_package_serves_a_users_session_after_dpkg_and_a_log_in() {
    let package = harness::guest::needed(guest_package());
    let name = package.file_name().unwrap().to_string_lossy().into_owned();
    let inside = format!("/pkg/{name}");
    // (The backend is bound so that it lives to the test's end.)
    let Desktop {
        mut guest,
        sway,
        backend: _backend,
    } = Desktop::boot("guest-session", "session", &[(&inside, &package)]);
    // sway's background alone: the guest boots systemd for many seconds
    // before anything can draw.
    let empty = sway.screenshot().2;
    // systemd boots the overlay, the unit installs the package and logs in.
    let proxy = guest.wait_line(Duration::from_secs(180), |l| {
        l.contains("GUEST: proxy ") && l.contains(": uid ") || l.contains("GUEST: session done")
    });
    // foot's window on sway, and drawn.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut windows = sway.windows();
    let mut drawn = None;
    while (drawn.is_none() || !windows.iter().any(|w| w == "foot")) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        windows = sway.windows();
        let (width, _, now) = sway.screenshot();
        drawn = changed(&empty, &now, width).filter(|w| w.w >= 200 && w.h >= 100);
    }
    keep_screenshot(&sway, "guest-session");
    guest.wait_line(Duration::from_secs(60), |l| {
        l.contains("GUEST: session done")
    });
    let console = guest.quit();
    let said = |what: &str| console.iter().any(|l| l.contains(what));
    assert!(
        said("GUEST: dpkg -i exit 0"),
        "dpkg installed the package: {console:#?}"
    );
    assert!(
        said("GUEST: socket unit enabled: gpu-airlock-guest.socket"),
        "the package enabled its socket unit for every user: {console:#?}"
    );
    assert!(
        said("GUEST: proxy running before the log-in: no"),
        "nothing started the proxy before the session's first client: {console:#?}"
    );
    let proxy = proxy.unwrap_or_default();
    assert!(
        proxy.contains("uid 1000, parent /usr/lib/systemd/systemd --user"),
        "the user's systemd started gpu-airlock-guest as the user: {proxy} {console:#?}"
    );
    assert!(
        said("GUEST: session WAYLAND_DISPLAY=wayland-0"),
        "the log-in session names the socket: {console:#?}"
    );
    assert!(
        windows.iter().any(|w| w == "foot"),
        "foot's window showed on sway: {windows:?} {console:#?}"
    );
    assert!(drawn.is_some(), "foot drew its window: {console:#?}");
    assert!(error_responses(&console).is_empty(), "{console:#?}");
}

/// The clipboard both ways between a guest application and a host one:
/// foot copies (OSC 52, printed by its shell) and the host's `wl-paste`
/// reads it; the host's `wl-copy` copies and foot pastes it (Ctrl+Shift+V)
/// into a command line. The data crosses as pipes the proxy carries
/// (`wl_data_source.send` one way, `wl_data_offer.receive` the other).
#[test]
#[ignore = "needs QEMU 11 (the trixie root), the test guest, its Debian userland, sway, grim, wtype and wl-clipboard: tests/guest/prepare.sh"]
fn the_clipboard_crosses_between_a_guest_application_and_a_host_one() {
    let mut desktop = Desktop::start("guest-clipboard");
    desktop.run("foot", "foot", (200, 100));
    std::thread::sleep(Duration::from_secs(2));
    // Guest to host: foot sets the clipboard when its shell prints OSC 52,
    // if its window has the keyboard's focus then (foot refuses it
    // otherwise): wtype's keyboard stays three seconds after the command.
    desktop.sway.keys(&[
        "printf '\\033]52;c;%s\\007' $(printf from-the-guest | base64)\n",
        "-s",
        "3000",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut pasted = desktop.sway.paste();
    while pasted.as_deref() != Some("from-the-guest") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        pasted = desktop.sway.paste();
    }
    // Host to guest. Each wtype is a keyboard plugged in and out, and sway
    // sends foot a new selection offer when one arrives. With the next
    // wtype right after the Ctrl+Shift+V, the paste (on its way through
    // the proxy, tens of milliseconds) was answered with an empty pipe
    // (the host's read pipe hung up with 0 bytes, in the proxy's debug
    // log); with three seconds between them the bytes came, as they do
    // when a keyboard stays plugged in. The test waits so.
    desktop.sway.copy("from-the-host");
    desktop.sway.type_text("echo ");
    desktop.sway.keys(&[
        "-M", "ctrl", "-M", "shift", "-k", "v", "-m", "shift", "-m", "ctrl", "-s", "3000",
    ]);
    desktop.sway.type_text(" > /run/typed\n");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut typed = desktop.file("typed");
    while typed != "from-the-host" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        typed = desktop.file("typed");
    }
    desktop.keep_screenshot("guest-clipboard");
    let said = desktop.end("stop", "foot");
    assert_eq!(
        pasted.as_deref(),
        Some("from-the-guest"),
        "the host read what foot copied in the guest: {said:#?}"
    );
    assert_eq!(
        typed, "from-the-host",
        "foot in the guest pasted what the host copied: {said:#?}"
    );
    desktop.quit();
}
