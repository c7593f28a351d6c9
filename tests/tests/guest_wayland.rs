//! Real guest applications on the host's compositor: Debian's 6.1 kernel
//! under QEMU 11.1's generic vhost-user device against the jailed backend,
//! `gpu-airlock-guest` serving Wayland inside the guest, and a headless
//! weston on the host (pixman, `--debug` for `weston-screenshooter`).
//!
//! Debian's own `weston-simple-shm` (libwayland's client library) and the
//! project's `wl-pattern` (wayland-client's pure-Rust one) draw through
//! the proxy, and the host's screenshot shows both, the pattern pixel for
//! pixel.
//!
//! Needs what `tests/guest/prepare.sh` makes and weston; without them
//! each test, `#[ignore]`d for it, fails when run (`cargo test -- --include-ignored`, as
//! `.ci/run` does) and is listed as not run by a plain `cargo test`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::compositor::{self, TestCompositor};
use harness::guest::{error_responses, qemu11, Boot, Guest, GuestImage};
use harness::wayland::Weston;
use harness::{binary, pattern, Backend, TempDir};

struct Setup {
    image: GuestImage,
    weston: Weston,
}

fn setup() -> Option<Setup> {
    let image = GuestImage::find()?;
    qemu11()?;
    let weston = Weston::start_with(&["--use-pixman", "--debug"])?;
    Some(Setup { image, weston })
}

fn boot(setup: &Setup, backend: &Backend, mode: &str) -> Guest {
    boot_with(setup, backend, mode, Vec::new())
}

/// As [`boot`], with more QEMU arguments.
fn boot_with(
    setup: &Setup,
    backend: &Backend,
    mode: &str,
    extra: Vec<std::ffi::OsString>,
) -> Guest {
    let dir = TempDir::new("guest-wayland");
    let init = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("guest/init-wayland");
    let proxy = binary("gpu-airlock-guest");
    let client = Path::new(env!("CARGO_BIN_EXE_wl-pattern"));
    let initrd = setup.image.with_files(
        &dir.0,
        &[
            ("/init", &init),
            ("/bin/gpu-airlock-guest", &proxy),
            ("/bin/wl-pattern", client),
            (
                "/bin/weston-simple-shm",
                Path::new("/usr/bin/weston-simple-shm"),
            ),
        ],
    );
    let append = format!("airlock.mode={mode}");
    let boot = Boot {
        extra,
        ..Boot::qemu11(&setup.image, &initrd, &backend.socket, &append, 512)
    };
    Guest::boot(qemu11().expect("checked in setup"), boot, dir)
}

fn wait_for(guest: &mut Guest, line: &str, secs: u64) {
    // A client's own failure ends the wait at once.
    let seen = guest.wait_line(Duration::from_secs(secs), |l| {
        l.contains(line) || l.starts_with("wl-pattern:")
    });
    assert!(
        seen.is_some_and(|l| l.contains(line)),
        "the guest said `{line}`: {:#?}",
        guest.lines
    );
}

/// The bounding box of the pixels that differ between two screenshots,
/// outside `skip` (x, y, width, height).
fn changed(
    a: &[u8],
    b: &[u8],
    width: usize,
    skip: (usize, usize, usize, usize),
) -> Option<(usize, usize, usize, usize)> {
    let mut bbox: Option<(usize, usize, usize, usize)> = None;
    for (i, (p, q)) in a.chunks(3).zip(b.chunks(3)).enumerate() {
        let (x, y) = (i % width, i / width);
        let inside = x >= skip.0 && x < skip.0 + skip.2 && y >= skip.1 && y < skip.1 + skip.3;
        if p != q && !inside {
            let (x0, y0, x1, y1) = bbox.unwrap_or((x, y, x, y));
            bbox = Some((x0.min(x), y0.min(y), x1.max(x), y1.max(y)));
        }
    }
    bbox.map(|(x0, y0, x1, y1)| (x0, y0, x1 - x0 + 1, y1 - y0 + 1))
}

/// Every one of `wants` is part of a console line.
fn assert_console_has<S: AsRef<str>>(console: &[String], wants: &[S]) {
    for want in wants {
        let want = want.as_ref();
        assert!(
            console.iter().any(|l| l.contains(want)),
            "`{want}` in {console:#?}"
        );
    }
}

/// The backend logged no warning or error.
fn assert_backend_quiet(backend: &Backend) {
    let log = backend.log.lines();
    let warnings: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    assert!(warnings.is_empty(), "the backend warned: {warnings:#?}");
}

#[test]
#[ignore = "needs QEMU 11 (the trixie root), the test guest and weston: tests/guest/prepare.sh"]
fn guest_wayland_clients_draw_on_the_host_compositor_through_the_proxy() {
    let setup = harness::guest::needed(setup());
    let backend = Backend::start(&["--wayland-socket", &setup.weston.arg()]);
    let mut guest = boot(&setup, &backend, "show");
    wait_for(&mut guest, "PATTERN shown 200 150", 120);

    // The project's client: its window, pixel for pixel.
    let (width, _, before) = setup.weston.screenshot();
    let at = pattern::find(&before, width, 200, 150);
    assert!(
        at.is_some(),
        "the host's screenshot shows the guest's 200x150 pattern"
    );
    let (px, py) = at.unwrap();

    // Debian's weston-simple-shm (libwayland-client) beside it.
    guest.type_line("simple-shm");
    wait_for(&mut guest, "GUEST: simple-shm running", 60);
    let (_, _, after) = setup.weston.screenshot();
    let window = changed(&before, &after, width, (px, py, 200, 150));
    let (_, _, w, h) = window.expect("weston-simple-shm's window changed the screen");
    // simple-shm's window is 250x250; weston may place it over the
    // pattern's, which hides part of it from this comparison.
    assert!(
        (100..=260).contains(&w) && (100..=260).contains(&h),
        "weston-simple-shm's window is about 250x250: {window:?}"
    );
    assert_eq!(
        pattern::find(&after, width, 200, 150),
        Some((px, py)),
        "the pattern is still whole beside simple-shm's window"
    );

    guest.type_line("quit");
    wait_for(&mut guest, "GUEST: proxy exit", 60);
    let console = guest.quit();
    assert_console_has(
        &console,
        &[
            "GUEST: simple-shm exit 0",
            "PATTERN exit",
            "GUEST: wl-pattern exit 0",
            "GUEST: proxy exit 0",
        ],
    );
    assert!(
        !console
            .iter()
            .any(|l| l.contains("the proxy left its socket")),
        "the proxy removed its socket: {console:#?}"
    );
    assert!(
        !console
            .iter()
            .any(|l| l.contains("protocol error") || l.contains(" WARN ") || l.contains(" ERROR ")),
        "no protocol errors or warnings in the guest: {console:#?}"
    );
    assert!(error_responses(&console).is_empty(), "{console:#?}");
    // weston offers these and the proxy carries them now; the proxy logs
    // each global it does not announce.
    assert!(
        console
            .iter()
            .any(|l| l.contains("not announced to the client")),
        "the proxy logs what it does not carry: {console:#?}"
    );
    for carried in [
        "zwp_relative_pointer_manager_v1",
        "zwp_pointer_constraints_v1",
    ] {
        assert!(
            !console
                .iter()
                .any(|l| l.contains("not announced") && l.contains(carried)),
            "{carried} is carried: {console:#?}"
        );
    }
    assert_backend_quiet(&backend);
}

/// weston's headless backend has no seat: the harness's compositor sends a
/// keymap and offers a clipboard, and takes the guest's.
#[test]
#[ignore = "needs QEMU 11 (the trixie root), the test guest and weston: tests/guest/prepare.sh"]
fn a_guest_client_gets_the_keymap_and_both_ways_of_the_clipboard_through_the_proxy() {
    let setup = harness::guest::needed(setup());
    let test = TestCompositor::start();
    let backend = Backend::start(&["--wayland-socket", &test.arg()]);
    let mut guest = boot(&setup, &backend, "seat");
    wait_for(&mut guest, "GUEST: proxy exit", 120);
    let console = guest.quit();
    let keymap = compositor::keymap();
    assert_console_has(
        &console,
        &[
            format!(
                "KEYMAP bytes={} fnv={:08x} sealed=true",
                keymap.len(),
                compositor::fnv(&keymap)
            ),
            format!("CLIPBOARD {}", compositor::SELECTION),
            "SENT".to_string(),
            "GUEST: wl-pattern exit 0".to_string(),
            "GUEST: proxy exit 0".to_string(),
        ],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while test.received.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        test.received.lock().unwrap().as_slice(),
        ["the guest's clipboard, through a cross-domain write pipe"],
        "the host compositor read the guest's selection"
    );
    assert_backend_quiet(&backend);
}

/// Clients that break the protocol get a protocol error each, on their
/// own connection; a good client beside them keeps its window, and the
/// backend and the proxy keep running.
#[test]
#[ignore = "needs QEMU 11 (the trixie root), the test guest and weston: tests/guest/prepare.sh"]
fn malformed_guest_clients_get_protocol_errors_and_others_keep_their_windows() {
    let setup = harness::guest::needed(setup());
    let backend = Backend::start(&[
        "--wayland-socket",
        &setup.weston.arg(),
        "--max-resource-memory",
        "64",
    ]);
    let mut guest = boot(&setup, &backend, "bad");
    wait_for(&mut guest, "PATTERN shown 200 150", 120);
    guest.type_line("bad");
    wait_for(&mut guest, "BAD done", 120);
    let (width, _, screen) = setup.weston.screenshot();
    assert!(
        pattern::find(&screen, width, 200, 150).is_some(),
        "the good client's window is still whole"
    );
    guest.type_line("quit");
    wait_for(&mut guest, "GUEST: after restart exit", 60);
    wait_for(&mut guest, "PATTERN shown 120 90", 60);
    let mut setup = setup;
    setup.weston.kill();
    wait_for(&mut guest, "the compositor closed the connection", 60);
    guest.type_line("gone");
    // (The client that finds no compositor fails, as it should.)
    guest.wait_line(Duration::from_secs(60), |l| {
        l.contains("GUEST: without a compositor exit")
    });
    wait_for(&mut guest, "GUEST: proxy exit", 60);
    let console = guest.quit();
    let bad = |name: &str| -> String {
        console
            .iter()
            .find_map(|l| l.strip_prefix(&format!("BAD {name} ")).map(str::to_string))
            .unwrap_or_else(|| panic!("no `BAD {name}` line: {console:#?}"))
    };
    // The client that never read its events lost its connection, and only
    // it: the proxy ends such a client past 1 MiB unread, but weston got
    // there first here (libwayland-server drops a client whose events
    // overflow its buffer: the channel drains them one 4 KiB RECEIVE per
    // guest POLL), and the proxy said so. Either end is the right one.
    let never = bad("never-reads");
    assert!(never.starts_with("closed after "), "never-reads: {never}");
    let said = console
        .iter()
        .take_while(|l| !l.contains("BAD never-reads"))
        .any(|l| {
            l.contains("bytes of events left unread")
                || l.contains("ended: the compositor closed the connection")
        });
    assert!(said, "the proxy says why that client ended: {console:#?}");
    for (name, object, code, says) in [
        ("malformed", Some(1), 1, "a message of 6 bytes"),
        ("unknown-object", Some(1), 0, "no object 99"),
        ("short-arguments", Some(1), 1, "get_registry"),
        ("fd-flood", Some(1), 3, "descriptors sent ahead"),
        ("unannounced-global", Some(1), 0, "not announced"),
        ("pool-on-a-pipe", None, 2, "not a file"),
        ("buffer-outside-pool", None, 1, "in a pool of 4096 bytes"),
        ("pool-past-budget", None, 2, "no host memory"),
    ] {
        let got = bad(name);
        assert!(got.contains(&format!("code={code} ")), "{name}: {got}");
        if let Some(o) = object {
            assert!(got.starts_with(&format!("object={o} ")), "{name}: {got}");
        }
        assert!(got.contains(says), "{name}: `{says}` in {got}");
    }
    assert_console_has(
        &console,
        &[
            "GUEST: wl-pattern exit 0",
            "GUEST: after restart exit 0",
            // The client saw its connection end; the proxy logged why.
            "PATTERN connection ended",
            "GUEST: after the compositor went exit 3",
            // A client with no compositor to reach is turned away (the
            // proxy's line saying so may interleave with others on the
            // console).
            "GUEST: without a compositor exit 1",
            "GUEST: proxy exit 0",
        ],
    );
    assert_eq!(
        console
            .iter()
            .filter(|l| l.contains("GUEST: proxy exit 0"))
            .count(),
        2,
        "both proxies stopped cleanly: {console:#?}"
    );
    // The host refused the blob past its budget, and said so; nothing
    // else went wrong there.
    let log = backend.log.lines();
    assert!(
        log.iter().any(|l| l.contains("--max-resource-memory")),
        "{log:#?}"
    );
    // One ERROR may come from rutabaga, not from gpu-airlock: when the
    // compositor goes while a client is connected, the guest's driver frees
    // that client's rings as the proxy drops it, and the context's
    // cross-domain worker, woken by the compositor's hang-up, finds its
    // channel ring gone and halts with "invalid resource id" (seen once in
    // CI; the context is being destroyed by the guest anyway). Nothing else.
    let errors: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("ERROR"))
        .filter(|l| !l.contains("Worker halting due to: invalid resource id"))
        .collect();
    assert!(errors.is_empty(), "{log:#?}");
    assert!(
        harness::process_alive(backend.pid()),
        "the backend outlived its compositor"
    );
}

/// The real guests' Debian userland (tests/gpu3d/prepare.sh, which
/// tests/guest/prepare.sh runs).
fn debian_root() -> Option<PathBuf> {
    let root = harness::guest::guest_cache().join("gpu3d");
    if root.join("usr/bin/weston-terminal").exists() {
        return Some(std::fs::canonicalize(root).unwrap());
    }
    harness::guest::cannot_run(&format!(
        "the Debian-userland guest needs {}: run `sudo tests/guest/prepare.sh`",
        root.display()
    ));
    None
}

#[test]
#[ignore = "needs QEMU 11 (the trixie root), the test guest, its Debian userland and weston: tests/guest/prepare.sh"]
fn a_debian_terminal_in_the_guest_shows_on_the_host_compositor() {
    let setup = harness::guest::needed(setup());
    let root = harness::guest::needed(debian_root());
    let backend = Backend::start(&["--wayland-socket", &setup.weston.arg()]);
    // Debian 13's userland over 9p: weston-terminal with its libwayland,
    // cairo, pango and fontconfig, as a user's session has them.
    let share = format!(
        "local,path={},mount_tag=root,security_model=none,readonly=on",
        root.display()
    );
    let mut guest = boot_with(
        &setup,
        &backend,
        "terminal",
        vec!["-virtfs".into(), share.into()],
    );
    wait_for(&mut guest, "GUEST: waiting for terminal", 120);
    let (width, height, before) = setup.weston.screenshot();
    guest.type_line("terminal");
    let asked = std::time::Instant::now();
    wait_for(&mut guest, "GUEST: terminal started", 60);
    // Its first frame: the screen changes.
    let mut window = None;
    let deadline = asked + Duration::from_secs(60);
    while window.is_none() && std::time::Instant::now() < deadline {
        let (_, _, now) = setup.weston.screenshot();
        window = changed(&before, &now, width, (0, 0, 0, 0))
            .filter(|&(_, _, w, h)| w >= 200 && h >= 100);
    }
    let first_frame = asked.elapsed();
    let Some((x, y, w, h)) = window else {
        // What the terminal and the proxy said, for the failure.
        guest.type_line("quit");
        let _ = guest.wait_line(Duration::from_secs(30), |l| l.contains("GUEST: proxy exit"));
        panic!(
            "weston-terminal's window showed on the host ({width}x{height}): {:#?}",
            guest.quit()
        )
    };
    println!(
        "BENCH weston-terminal from a Debian guest (TCG): first frame on the host's weston \
         {} ms after it was started, a {w}x{h} window",
        first_frame.as_millis()
    );
    // A terminal's window: text on a background, many pixels of one
    // colour and some of others.
    let (_, _, shown) = setup.weston.screenshot();
    if let Ok(dir) = std::env::var("GPU_AIRLOCK_SCREENSHOTS") {
        let mut ppm = format!("P6\n{width} {height}\n255\n").into_bytes();
        ppm.extend_from_slice(&shown);
        std::fs::write(Path::new(&dir).join("guest-terminal.ppm"), ppm).unwrap();
    }
    let mut colours = std::collections::HashMap::new();
    for row in y..y + h {
        for col in x..x + w {
            let i = (row * width + col) * 3;
            *colours.entry(&shown[i..i + 3]).or_insert(0usize) += 1;
        }
    }
    let most = colours.values().max().copied().unwrap_or(0);
    assert!(
        most > w * h / 2 && colours.len() > 2,
        "a terminal's window ({w}x{h}): its background and its text ({} colours)",
        colours.len()
    );

    guest.type_line("quit");
    wait_for(&mut guest, "GUEST: proxy exit", 60);
    let console = guest.quit();
    assert_console_has(&console, &["GUEST: proxy exit 0"]);
    assert!(
        !console
            .iter()
            .any(|l| l.contains("protocol error") || l.contains(" ERROR ")),
        "no protocol errors in the guest: {console:#?}"
    );
    assert!(error_responses(&console).is_empty(), "{console:#?}");
    assert_backend_quiet(&backend);
}
