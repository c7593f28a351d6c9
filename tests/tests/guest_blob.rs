//! A real Linux guest with blobs: Debian's 6.1 kernel under QEMU 11.1's
//! generic vhost-user device (`vhost-user-test-device-pci`, SHMEM, a
//! shared-memory BAR sized by GET_SHMEM_CONFIG) against the jailed
//! backend, with a headless weston as the compositor.
//!
//! In the guest, `virtgpu-check` (tests/src/bin/virtgpu-check.rs, put into
//! the initramfs with its libraries) drives the kernel's virtgpu DRM
//! interface as sommelier does and prints a line per check; these tests
//! assert them, the driver's own account of the device, and that the guest
//! logs no error response where none is due.
//!
//! Needs what `tests/guest/prepare.sh` makes (the kernel, the initramfs,
//! QEMU 11 in a trixie root) and weston; without them
//! each test, `#[ignore]`d for it, fails when run (`cargo test -- --include-ignored`, as
//! `.ci/run` does) and is listed as not run by a plain `cargo test`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::guest::{error_responses, qemu11, qemu_complaints, Boot, Guest, GuestImage};
use harness::wayland::Weston;
use harness::{Backend, TempDir};

/// What `virtgpu-check checks` reports, in order.
const CHECKS: [&str; 10] = [
    "render-node",
    "params",
    "capset",
    "context",
    "requirements",
    "map-write-remap-read",
    "no-alias",
    "many-mapped",
    "unref-mapped",
    "end",
];

struct Setup {
    image: GuestImage,
    weston: Weston,
}

fn setup() -> Option<Setup> {
    let image = GuestImage::find()?;
    qemu11()?;
    let weston = Weston::start()?;
    Some(Setup { image, weston })
}

/// Boots the guest against `backend` with the blob init and `append` on
/// the kernel command line.
fn boot(setup: &Setup, backend: &Backend, append: &str, reboot: bool) -> Guest {
    let dir = TempDir::new("guest-blob");
    let init = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("guest/init-blob");
    let check = Path::new(env!("CARGO_BIN_EXE_virtgpu-check"));
    let initrd = setup
        .image
        .with_files(&dir.0, &[("/init", &init), ("/bin/virtgpu-check", check)]);
    let boot = Boot {
        reboot,
        ..Boot::qemu11(&setup.image, &initrd, &backend.socket, append, 512)
    };
    Guest::boot(qemu11().expect("checked in setup"), boot, dir)
}

/// The `CHECK` lines of `lines`, from the first that starts with `from`.
fn checks_after<'a>(lines: &'a [String], from: &str) -> Vec<&'a str> {
    lines
        .iter()
        .skip_while(|l| !l.starts_with(from))
        .filter_map(|l| l.find("CHECK ").map(|at| &l[at..]))
        .collect()
}

fn assert_run_passed(run: &[&str], which: &str) {
    let failed: Vec<&&str> = run.iter().filter(|l| l.contains(" FAIL")).collect();
    assert!(failed.is_empty(), "{which}: {failed:#?}");
    for name in CHECKS {
        assert!(
            run.iter()
                .any(|l| l.starts_with(&format!("CHECK {name} ok"))),
            "{which}: no `CHECK {name} ok` in {run:#?}"
        );
    }
}

#[test]
#[ignore = "needs QEMU 11 (the trixie root), the test guest and weston: tests/guest/prepare.sh"]
fn a_real_guest_maps_blobs_through_qemu_11_and_its_driver_logs_no_error() {
    let setup = harness::guest::needed(setup());
    let backend = Backend::start(&["--wayland-socket", &setup.weston.arg()]);
    let mut guest = boot(
        &setup,
        &backend,
        "airlock.mode=checks airlock.bench=20",
        false,
    );
    guest.wait_done();
    let console = guest.quit();

    // The driver's own account of the device.
    for want in [
        "[drm] features: +virgl +edid +resource_blob +host_visible",
        "[drm] features: +context_init",
        // --shm-size's 8 GiB, as QEMU sized the BAR from GET_SHMEM_CONFIG.
        "+0x200000000",
        "[drm] number of cap sets: 1",
        "cap set 0: id 5",
    ] {
        assert!(
            console.iter().any(|l| l.contains(want)),
            "the guest's driver logged `{want}`: {console:#?}"
        );
    }

    // Run 1, a run killed with a blob mapped and a query in flight, and
    // run 2 in the same boot.
    let first: Vec<&str> = checks_after(&console, "GUEST: run 1")
        .into_iter()
        .take_while(|l| !l.starts_with("CHECK midway"))
        .collect();
    assert_run_passed(&first, "the first run");
    assert!(
        console.iter().any(|l| l.starts_with("CHECK midway ok")),
        "the second run mapped a blob before it was killed: {console:#?}"
    );
    assert!(console.iter().any(|l| l == "GUEST: killed midway"));
    let second = checks_after(&console, "GUEST: run 2");
    assert_run_passed(&second, "the run after a killed one");
    assert!(
        console.iter().any(|l| l.starts_with("BENCH map n=20 ")),
        "the guest's map benchmark ran: {console:#?}"
    );

    let refused = error_responses(&console);
    assert!(
        refused.is_empty(),
        "the guest's driver got error responses: {refused:#?}"
    );
    // QEMU 11 cannot send a memory table past eight regions: the
    // many-mapped check (24 blobs) makes it say so, and nothing else may
    // (the broker's session.rs says why memory slots are not offered).
    let complaints: Vec<&String> = qemu_complaints(&console)
        .into_iter()
        .filter(|l| {
            !l.contains("Failed preparing vhost-user memory table msg")
                && !l.contains("vhost_set_mem_table failed: No buffer space available")
        })
        .collect();
    assert!(complaints.is_empty(), "QEMU complained: {complaints:#?}");
    let log = backend.log.lines();
    assert!(
        !log.iter()
            .any(|l| l.contains("refused") || l.contains("failed") || l.contains("WARN")),
        "gpu-airlock refused nothing and warned of nothing: {log:#?}"
    );
}

#[test]
#[ignore = "needs QEMU 11 (the trixie root), the test guest and weston: tests/guest/prepare.sh"]
fn bad_input_from_a_real_guest_is_refused_and_the_device_goes_on() {
    let setup = harness::guest::needed(setup());
    let backend = Backend::start(&[
        "--wayland-socket",
        &setup.weston.arg(),
        "--max-resource-memory",
        "64",
    ]);
    let mut guest = boot(&setup, &backend, "airlock.mode=bad", false);
    guest.wait_done();
    let console = guest.quit();
    let run = checks_after(&console, "GUEST: drm");
    for name in [
        "bad-capset",
        "bad-execbuffer",
        "too-large",
        "past-region",
        "end",
    ] {
        assert!(
            run.iter()
                .any(|l| l.starts_with(&format!("CHECK {name} ok"))),
            "no `CHECK {name} ok` in {run:#?}"
        );
    }
    // Each refusal the host made is one the guest's driver reports; none
    // is of a kind the checks did not cause.
    let refused = error_responses(&console);
    let expected = [
        "response 0x1205 (command 0x207)", // the malformed SUBMIT_3D
        "response 0x1201 (command 0x10c)", // blobs past --max-resource-memory
        // ... and what Linux sends for a blob the host never made.
        "(command 0x208)",
        "(command 0x202)",
        "(command 0x203)",
        "(command 0x209)",
        "(command 0x102)",
    ];
    let unexpected: Vec<&&String> = refused
        .iter()
        .filter(|l| !expected.iter().any(|e| l.contains(e)))
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:#?}");
    assert!(
        refused.iter().any(|l| l.contains("(command 0x207)")),
        "{refused:#?}"
    );
    // The host said why, once per refusal, in words.
    let log = backend.log.lines();
    for why in [
        "a cross-domain command of 0 bytes",
        "more bytes; 4096000 of 67108864 are in use (--max-resource-memory)",
    ] {
        assert!(
            log.iter().any(|l| l.contains(why)),
            "the backend logged `{why}`: {log:#?}"
        );
    }
    assert!(
        !log.iter()
            .any(|l| l.contains("died") || l.contains("SIGSYS") || l.contains("not reachable")),
        "no worker died or went away: {log:#?}"
    );
}

/// QEMU's memory tree lines of mappings in the host-visible BAR
/// (`virtio-shmem-1-<offset>` subregions).
fn mappings(guest: &mut Guest) -> Vec<String> {
    let mut m: Vec<String> = guest
        .hmp("info mtree")
        .lines()
        .filter(|l| l.contains("virtio-shmem-1-"))
        .map(|l| l.trim().to_string())
        .collect();
    m.sort();
    m.dedup();
    m
}

/// A guest reboot with blobs mapped: QEMU 11 drops the mappings from the
/// guest's BAR itself and sends no RESET_DEVICE; the device still sees the
/// reset (the rings restart at 0), forgets the old driver's blobs and
/// mappings without asking QEMU to unmap what it already dropped, and the
/// next boot maps at the same offsets again.
#[test]
#[ignore = "needs QEMU 11 (the trixie root), the test guest and weston: tests/guest/prepare.sh"]
fn a_reboot_with_blobs_mapped_leaves_nothing_mapped_and_the_next_boot_maps_again() {
    let setup = harness::guest::needed(setup());
    let backend = Backend::start(&["--wayland-socket", &setup.weston.arg()]);
    let mut guest = boot(&setup, &backend, "quiet airlock.mode=hold", true);
    let wait = Duration::from_secs(120);
    let go = |l: &str| l == "GUEST: waiting for go";
    let held = |l: &str| l.starts_with("CHECK hold ok");
    assert!(guest.wait_line(wait, go).is_some());
    assert_eq!(mappings(&mut guest), Vec::<String>::new());
    guest.type_line("go");
    assert!(guest.wait_line(wait, held).is_some(), "{:#?}", guest.lines);
    let first = mappings(&mut guest);
    assert_eq!(first.len(), 2, "two blobs mapped: {first:#?}");

    guest.qmp(r#"{"execute": "system_reset"}"#);
    assert!(
        guest.wait_line(wait, go).is_some(),
        "the guest booted again: {:#?}",
        guest.lines
    );
    assert_eq!(
        mappings(&mut guest),
        Vec::<String>::new(),
        "nothing stays mapped across the reboot"
    );
    guest.type_line("go");
    assert!(guest.wait_line(wait, held).is_some(), "{:#?}", guest.lines);
    assert_eq!(
        mappings(&mut guest),
        first,
        "the next boot maps at the same offsets"
    );
    let console = guest.quit();
    let refused = error_responses(&console);
    assert!(refused.is_empty(), "{refused:#?}");
    let complaints = qemu_complaints(&console);
    assert!(complaints.is_empty(), "QEMU complained: {complaints:#?}");
    let log = backend.log.lines();
    for want in ["restarted ring 0", "the front-end already dropped it"] {
        assert!(
            log.iter().any(|l| l.contains(want)),
            "the backend logged `{want}`: {log:#?}"
        );
    }
    assert!(
        !log.iter()
            .any(|l| l.contains("refused") || l.contains("WARN")),
        "{log:#?}"
    );
}

/// Without a compositor the device offers no context type and no VIRGL,
/// and Linux puts its console on a guest-memory blob (SET_SCANOUT_BLOB,
/// then TRANSFER_TO_HOST_2D and RESOURCE_FLUSH on every update): the
/// guest draws on it and its driver logs no error response.
#[test]
#[ignore = "needs QEMU 11 (the trixie root), the test guest and weston: tests/guest/prepare.sh"]
fn without_a_compositor_the_console_is_a_guest_blob_and_nothing_is_refused() {
    let setup = harness::guest::needed(setup());
    let backend = Backend::start(&[]);
    let mut guest = boot(&setup, &backend, "airlock.mode=console", false);
    guest.wait_done();
    let console = guest.quit();
    for want in [
        "[drm] features: -virgl +edid +resource_blob +host_visible",
        "[drm] number of cap sets: 0",
        "GUEST: drew 1280,800",
    ] {
        assert!(
            console.iter().any(|l| l.contains(want)),
            "`{want}` in {console:#?}"
        );
    }
    let refused = error_responses(&console);
    assert!(refused.is_empty(), "{refused:#?}");
    let complaints = qemu_complaints(&console);
    assert!(complaints.is_empty(), "QEMU complained: {complaints:#?}");
    let log = backend.log.lines();
    assert!(
        !log.iter()
            .any(|l| l.contains("refused") || l.contains("WARN")),
        "{log:#?}"
    );
}
