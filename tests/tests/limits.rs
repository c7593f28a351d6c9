//! The limits a supervisor sets: under systemd's default descriptor limit
//! (1024 soft) the broker raises the soft limit to the hard one, so the
//! default `--max-contexts 256` cross-domain contexts each reach the
//! compositor; where the hard limit itself is too low, it lowers the cap
//! with one line, and every context up to the lowered cap still works.
//! `prlimit` sets the limits as a unit's LimitNOFILE= would.

use std::process::Command;
use std::time::Duration;

use harness::compositor::TestCompositor;
use harness::*;

/// Starts the broker under `prlimit --nofile=SOFT:HARD`.
fn start_limited(nofile: &str, compositor: &TestCompositor) -> Backend {
    let dir = TempDir::new("limited");
    let socket = dir.0.join("gpu.sock");
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={nofile}"))
        .arg(binary("gpu-airlock"))
        .arg("--socket-path")
        .arg(&socket)
        .args(["--wayland-socket", &compositor.arg()]);
    let backend = Backend::spawn(cmd, dir, socket);
    backend.wait_ready();
    backend
}

/// Context `ctx`'s channel, its rings resources of its own.
fn open_channel(dev: &mut Device, ctx: u32) -> u32 {
    harness::wayland::open_channel(dev, ctx, 10_000 + 2 * ctx, 10_001 + 2 * ctx)
}

/// Opens `n` channels, each of which must reach the compositor.
fn open_channels(dev: &mut Device, n: u32) {
    for ctx in 1..=n {
        assert_eq!(
            open_channel(dev, ctx),
            RESP_OK_NODATA,
            "context {ctx} of {n} reaches the compositor"
        );
    }
}

#[test]
fn the_default_256_contexts_work_under_systemds_soft_descriptor_limit() {
    let compositor = TestCompositor::start();
    let backend = start_limited("1024:8192", &compositor);
    assert!(backend
        .log
        .wait_for(
            &["soft limit raised from 1024 to the hard limit, 8192"],
            Duration::from_secs(5)
        )
        .is_some());
    let mut dev = Device::connect(&backend.socket);
    open_channels(&mut dev, 256);
    assert_eq!(
        open_channel(&mut dev, 257),
        RESP_ERR_OUT_OF_MEMORY,
        "the 257th context is past --max-contexts"
    );
    let (_, render) = backend.worker_pids();
    let open = std::fs::read_dir(format!("/proc/{render}/fd"))
        .unwrap()
        .count();
    // What broker/src/limits.rs budgets for them: 128 besides the
    // contexts and 8 for each.
    assert!(
        open <= 128 + 8 * 256,
        "render-worker holds {open} descriptors with 256 contexts, more than the broker budgets"
    );
}

#[test]
fn a_hard_limit_too_low_for_max_contexts_lowers_it_with_one_line() {
    let compositor = TestCompositor::start();
    let backend = start_limited("1024:1024", &compositor);
    let line = backend
        .log
        .wait_for(
            &["--max-contexts 256 needs", "descriptor limit is 1024"],
            Duration::from_secs(5),
        )
        .unwrap_or_else(|| panic!("a line names the limit: {:#?}", backend.log.lines()));
    let lowered: u32 = line
        .split("at most ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the line says how many contexts: {line}"));
    assert!((100..256).contains(&lowered), "{line}");
    let mut dev = Device::connect(&backend.socket);
    // Every context up to the lowered cap works: the cap is one the
    // descriptors really allow.
    open_channels(&mut dev, lowered);
    assert_eq!(
        open_channel(&mut dev, lowered + 1),
        RESP_ERR_OUT_OF_MEMORY,
        "past the lowered cap, CTX_CREATE is refused, not INIT left to fail"
    );
    assert!(!backend
        .log
        .lines()
        .iter()
        .any(|l| l.contains("Too many open files")));
}
