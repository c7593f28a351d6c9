//! A compromised render-worker sends the broker forged map requests
//! straight down its ipc channel (tests/src/bin/hostile-render-worker.rs,
//! started in render-worker's place with `--worker-dir`). The broker maps
//! what is the render-worker's own to map — its memory, into a free part
//! of the region — and refuses everything else before the front-end hears
//! of it.

use std::os::unix::fs::symlink;
use std::time::Duration;

use harness::shmem::ShmemEvent;
use harness::*;

#[test]
fn forged_map_requests_from_a_compromised_render_worker_are_refused() {
    let dir = TempDir::new("hostile-workers");
    symlink(
        binary("gpu-airlock-gpu-worker"),
        dir.0.join("gpu-airlock-gpu-worker"),
    )
    .unwrap();
    symlink(
        binary("hostile-render-worker"),
        dir.0.join("gpu-airlock-render-worker"),
    )
    .unwrap();
    let worker_dir = dir.0.display().to_string();
    let backend = Backend::start(&["--worker-dir", &worker_dir]);
    let dev = Device::connect(&backend.socket);
    let region = dev.shmem.clone().expect("SHMEM negotiated");
    assert!(
        backend
            .log
            .wait_for(&["HOSTILE: done"], Duration::from_secs(20))
            .is_some(),
        "{:#?}",
        backend.log.lines()
    );
    let answers: Vec<String> = backend
        .log
        .lines()
        .into_iter()
        .filter(|l| {
            l.starts_with("HOSTILE: ") && !l.ends_with("done") && !l.contains("mappings accepted")
        })
        .collect();
    assert_eq!(answers.len(), 11, "{answers:#?}");
    assert_eq!(answers[0], "HOSTILE: own memory at 0 -> Ok(Done)");
    for a in &answers[1..] {
        assert!(a.contains("-> Ok(Refused("), "refused: {a}");
    }
    assert!(
        answers
            .iter()
            .any(|a| a.contains("memory that can shrink")
                && a.contains("not sealed against shrinking")),
        "{answers:#?}"
    );
    // Past the cap on live mappings, the next is refused and says why;
    // the one at 0 was already live.
    let flood = backend
        .log
        .lines()
        .into_iter()
        .find(|l| l.contains("HOSTILE: mappings accepted"))
        .expect("the mapping flood ran");
    assert!(
        flood.contains("mappings accepted 255,") && flood.contains("256 mappings are live"),
        "{flood}"
    );
    // The front-end heard of the requests that were the worker's to make:
    // the first, and the flood up to the cap.
    let events = region.events();
    assert_eq!(events.len(), 256, "{events:#?}");
    assert_eq!(
        events[0],
        ShmemEvent::Map {
            offset: 0,
            len: 4096,
            writable: true
        }
    );
    assert!(region.backing_name(0).contains("hostile"));
    // The flood of 200 more refusals costs the broker's log a few lines
    // and a count.
    let log = backend.log.lines();
    let refusals = log
        .iter()
        .filter(|l| l.contains("refused a map request"))
        .count();
    assert!(refusals <= 20, "{refusals} refusal lines logged");
    assert!(
        log.iter().any(|l| l.contains("similar lines suppressed")),
        "{log:#?}"
    );
}
