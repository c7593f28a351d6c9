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

/// A worker directory with the real gpu-worker and the hostile
/// render-worker in render-worker's place.
fn hostile_workers() -> TempDir {
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
    dir
}

/// A render-worker that never greets on a connection's channels: gpu-worker
/// waits for it one deadline (render-worker's answer, 9 s), then serves the
/// connection without it: 2D commands answered, context commands refused,
/// the refusal logged; the relay's own deadline is not reached.
#[test]
fn a_render_worker_that_never_greets_leaves_a_device_without_contexts() {
    let dir = hostile_workers();
    let backend_dir = TempDir::new("silent-backend");
    let socket = backend_dir.0.join("gpu.sock");
    let mut command = std::process::Command::new(binary("gpu-airlock"));
    command
        .arg("--socket-path")
        .arg(&socket)
        .arg("--worker-dir")
        .arg(&dir.0)
        .env("HOSTILE_SILENT", "1");
    let backend = Backend::spawn(command, backend_dir, socket);
    backend.wait_ready();
    let mut dev = Device::connect(&backend.socket);
    let (_, resp) = dev.control(&cmd(CMD_GET_DISPLAY_INFO, &[]), 512);
    assert_eq!(parse_hdr(&resp).0, RESP_OK_DISPLAY_INFO);
    let (_, resp) = dev.control(&cmd(CMD_GET_CAPSET_INFO, &[0, 0]), 64);
    assert_eq!(parse_hdr(&resp).0, RESP_ERR_UNSPEC);
    assert!(backend
        .log
        .wait_for(
            &["the render-worker link: handshake"],
            Duration::from_secs(5)
        )
        .is_some());
    assert!(
        !backend
            .log
            .lines()
            .iter()
            .any(|l| l.contains("cutting that socket off")),
        "the relay's deadline was not reached: {:#?}",
        backend.log.lines()
    );
}

#[test]
fn forged_map_requests_from_a_compromised_render_worker_are_refused() {
    let dir = hostile_workers();
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

/// The longest backing list the device takes (MAX_BACKING_ENTRIES, 4 MiB
/// of entries), in one request: the worker's allocations for it grow past
/// glibc's mmap threshold, where realloc would call mremap, which no
/// worker's filter allows; the command is served and gpu-worker lives.
#[test]
fn the_longest_backing_list_is_served_and_kills_no_worker() {
    use vm_memory::{Bytes, GuestAddress};
    let backend = Backend::start(&[]);
    let mut dev = Device::connect_with_memory(&backend.socket, 64 << 20);
    let (gpu, _) = backend.worker_pids();
    assert_eq!(
        parse_hdr(
            &dev.control(&cmd(CMD_RESOURCE_CREATE_2D, &[1, 1, 64, 64]), 64)
                .1
        )
        .0,
        RESP_OK_NODATA
    );
    let n: u32 = 1 << 18;
    let mut request = cmd(CMD_RESOURCE_ATTACH_BACKING, &[1, n]);
    for i in 0..n {
        // One byte each, in guest memory.
        request.extend_from_slice(&(DATA_BASE + 0x20_0000 + u64::from(i % 4096)).to_le_bytes());
        request.extend_from_slice(&1u32.to_le_bytes());
        request.extend_from_slice(&0u32.to_le_bytes());
    }
    let (req, resp) = (16u64 << 20, 15u64 << 20);
    dev.mem.write_slice(&request, GuestAddress(req)).unwrap();
    dev.mem
        .write_slice(&[0xaa; 64], GuestAddress(resp))
        .unwrap();
    let mem = dev.mem.clone();
    dev.controlq.push_raw(
        &mem,
        0,
        &[
            (req, request.len() as u32, VRING_DESC_F_NEXT, 1),
            (resp, 64, VRING_DESC_F_WRITE, 0),
        ],
        0,
    );
    let used = dev
        .controlq
        .wait_used(&mem, std::time::Duration::from_secs(30));
    assert!(
        used.is_some(),
        "unanswered; gpu-worker alive: {}; log: {:#?}",
        process_alive(gpu),
        backend.log.lines()
    );
    let mut answer = [0u8; 24];
    dev.mem.read_slice(&mut answer, GuestAddress(resp)).unwrap();
    assert_eq!(parse_hdr(&answer).0, RESP_OK_NODATA);
    assert!(process_alive(gpu));
    let (_, resp) = dev.control(&ctrl_hdr(CMD_GET_DISPLAY_INFO, 0, 0), 1024);
    assert_eq!(parse_hdr(&resp).0, RESP_OK_DISPLAY_INFO);
}
