//! The foundation, end to end: a vhost-user front-end (the `vhost` crate's
//! `Frontend`) against the real three-process gpu-airlock.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use harness::*;
use nix::sys::signal::Signal;
use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserProtocolFeatures};
use vhost::vhost_user::VhostUserFrontend;
use vhost::VhostBackend;
use vm_memory::{Bytes, GuestAddress};

fn display_info(dev: &mut Device) -> Vec<(u32, u32, u32)> {
    let (len, resp) = dev.control(&ctrl_hdr(CMD_GET_DISPLAY_INFO, 0, 0), 1024);
    assert_eq!(len, 24 + 16 * 24, "full display-info response");
    assert_eq!(parse_hdr(&resp).0, RESP_OK_DISPLAY_INFO);
    (0..16)
        .map(|i| {
            let o = 24 + i * 24;
            let u = |k: usize| u32::from_le_bytes(resp[o + k..o + k + 4].try_into().unwrap());
            (u(8), u(12), u(16))
        })
        .collect()
}

#[test]
fn handshake_negotiates_features_and_config() {
    let backend = Backend::start(&["--display", "1024x768", "--display", "800x600"]);
    let mut dev = Device::connect(&backend.socket);

    let features = dev.frontend.get_features().unwrap();
    assert_eq!(features, device_features(false));
    assert_eq!(features & F_VIRGL, 0, "no VIRGL without a context type");
    for bit in [F_VERSION_1, F_EDID, F_PROTOCOL_FEATURES, F_RING_EVENT_IDX] {
        assert_ne!(features & bit, 0, "feature {bit:#x} offered");
    }
    let proto = dev.frontend.get_protocol_features().unwrap();
    for f in [
        VhostUserProtocolFeatures::CONFIG,
        VhostUserProtocolFeatures::MQ,
        VhostUserProtocolFeatures::REPLY_ACK,
        VhostUserProtocolFeatures::BACKEND_REQ,
        VhostUserProtocolFeatures::BACKEND_SEND_FD,
        VhostUserProtocolFeatures::SHMEM,
    ] {
        assert!(proto.contains(f), "{f:?} offered");
    }
    // The host-visible region (shmid 1): --shm-size, 8 GiB by default.
    let region = dev.shmem.as_ref().expect("the harness negotiated SHMEM");
    assert_eq!(region.size(), 8 << 30);
    assert_eq!(dev.frontend.get_queue_num().unwrap(), 2);

    let (_, config) = dev
        .frontend
        .get_config(0, 16, VhostUserConfigFlags::WRITABLE, &[0u8; 16])
        .unwrap();
    assert_eq!(config.len(), 16);
    let num_scanouts = u32::from_le_bytes(config[8..12].try_into().unwrap());
    assert_eq!(
        num_scanouts, 2,
        "virtio_gpu_config.num_scanouts follows --display"
    );
    // (A read past the 16-byte space is refused with a zero-size reply, as
    // the spec says; vhost 0.18's Frontend then waits for a payload that
    // never comes, so that case is a unit test in the broker.)
    drop(backend);
}

#[test]
fn backend_request_channel_is_accepted_as_qemu_sends_it() {
    // QEMU sends SET_BACKEND_REQ_FD right after negotiation; the broker
    // checks the socket (AF_UNIX, SOCK_STREAM) and keeps it.
    let backend = Backend::start(&[]);
    let mut frontend = vhost::vhost_user::Frontend::connect(&backend.socket, 2).unwrap();
    frontend.set_owner().unwrap();
    let features = frontend.get_features().unwrap();
    frontend.set_features(features).unwrap();
    let proto = frontend.get_protocol_features().unwrap()
        & (VhostUserProtocolFeatures::BACKEND_REQ
            | VhostUserProtocolFeatures::BACKEND_SEND_FD
            | VhostUserProtocolFeatures::REPLY_ACK);
    frontend.set_protocol_features(proto).unwrap();
    frontend.set_hdr_flags(vhost::vhost_user::message::VhostUserHeaderFlag::NEED_REPLY);
    let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    frontend.set_backend_request_fd(&ours).unwrap();
    assert!(backend
        .log
        .wait_for(&["back-end request channel"], Duration::from_secs(5))
        .is_some());
    // The connection is still served.
    assert!(frontend.get_queue_num().is_err(), "MQ was not acked");
    assert_eq!(frontend.get_features().unwrap(), features);
}

#[test]
fn unoffered_feature_bits_from_the_front_end_are_dropped_not_fatal() {
    // QEMU 10 acks VIRTIO_F_RING_RESET (bit 40), which it negotiated with
    // the guest itself, though the device never offered it.
    let backend = Backend::start(&[]);
    let frontend = vhost::vhost_user::Frontend::connect(&backend.socket, 2).unwrap();
    frontend.set_owner().unwrap();
    let offered = frontend.get_features().unwrap();
    assert_eq!(offered & (1 << 40), 0);
    frontend.set_features(offered | 1 << 40).unwrap();
    assert!(backend
        .log
        .wait_for(&["feature bits [40]", "ignoring"], Duration::from_secs(5))
        .is_some());
    assert_eq!(frontend.get_features().unwrap(), offered, "still served");
}

#[test]
fn get_display_info_reports_configured_scanouts() {
    let backend = Backend::start(&["--display", "1024x768", "--display", "800x600"]);
    let mut dev = Device::connect(&backend.socket);
    let modes = display_info(&mut dev);
    assert_eq!(modes[0], (1024, 768, 1));
    assert_eq!(modes[1], (800, 600, 1));
    assert!(
        modes[2..].iter().all(|m| m.2 == 0),
        "other scanouts disabled"
    );
}

#[test]
fn default_display_is_one_1280x800_scanout() {
    let backend = Backend::start(&[]);
    let mut dev = Device::connect(&backend.socket);
    let modes = display_info(&mut dev);
    assert_eq!(modes[0], (1280, 800, 1));
    assert_eq!(modes[1].2, 0);
}

#[test]
fn get_edid_answers_per_scanout() {
    let backend = Backend::start(&["--display", "1920x1080"]);
    let mut dev = Device::connect(&backend.socket);
    let mut req = ctrl_hdr(CMD_GET_EDID, 0, 0);
    req.extend_from_slice(&[0u8; 8]);
    let (len, resp) = dev.control(&req, 2048);
    assert_eq!(len, 24 + 8 + 1024);
    assert_eq!(parse_hdr(&resp).0, RESP_OK_EDID);
    let size = u32::from_le_bytes(resp[24..28].try_into().unwrap());
    assert_eq!(size, 128);
    let edid = &resp[32..160];
    assert_eq!(edid[0..8], [0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]);
    assert_eq!(edid.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
    let w = u32::from(edid[56]) | u32::from(edid[58] >> 4) << 8;
    let h = u32::from(edid[59]) | u32::from(edid[61] >> 4) << 8;
    assert_eq!((w, h), (1920, 1080));

    let mut bad = ctrl_hdr(CMD_GET_EDID, 0, 0);
    bad.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
    let (_, resp) = dev.control(&bad, 2048);
    assert_eq!(parse_hdr(&resp).0, RESP_ERR_INVALID_PARAMETER);
}

#[test]
fn unknown_command_gets_err_unspec_and_fence_is_honoured() {
    let backend = Backend::start(&[]);
    let mut dev = Device::connect(&backend.socket);
    let (len, resp) = dev.control(&ctrl_hdr(0x0777, FLAG_FENCE, 0xfeed), 64);
    assert_eq!(len, 24);
    assert_eq!(parse_hdr(&resp), (RESP_ERR_UNSPEC, FLAG_FENCE, 0xfeed));

    // RESOURCE_CREATE_3D, whole: a 3D command, on a device that offers no
    // context type (so no VIRGL feature).
    let mut create_3d = ctrl_hdr(0x0204, 0, 0);
    create_3d.extend_from_slice(&[0u8; 48]);
    let (_, resp) = dev.control(&create_3d, 64);
    assert_eq!(parse_hdr(&resp), (RESP_ERR_UNSPEC, 0, 0));
    // A 2D command too short for its body is a parameter error.
    let (_, resp) = dev.control(&ctrl_hdr(CMD_RESOURCE_CREATE_2D, 0, 0), 64);
    assert_eq!(parse_hdr(&resp), (RESP_ERR_INVALID_PARAMETER, 0, 0));

    let (_, resp) = dev.control(&ctrl_hdr(CMD_GET_DISPLAY_INFO, FLAG_FENCE, 77), 1024);
    assert_eq!(parse_hdr(&resp), (RESP_OK_DISPLAY_INFO, FLAG_FENCE, 77));

    // The cursor queue answers too: hiding the cursor on scanout 0 is
    // fine, a cursor on scanout 5 of a one-scanout device is not.
    for (scanout, want) in [(0u32, RESP_OK_NODATA), (5, RESP_ERR_INVALID_SCANOUT_ID)] {
        let mut req = ctrl_hdr(CMD_UPDATE_CURSOR, 0, 0);
        req.extend_from_slice(&scanout.to_le_bytes());
        req.extend_from_slice(&[0u8; 28]); // x, y, padding, resource 0, hot spot
        dev.mem.write_slice(&req, GuestAddress(DATA_BASE)).unwrap();
        let resp_at = DATA_BASE + 0x100;
        dev.cursorq.push_raw(
            &dev.mem,
            0,
            &[
                (DATA_BASE, req.len() as u32, VRING_DESC_F_NEXT, 1),
                (resp_at, 24, VRING_DESC_F_WRITE, 0),
            ],
            0,
        );
        let (_, len) = dev
            .cursorq
            .wait_used(&dev.mem, Duration::from_secs(10))
            .expect("cursor queue answered");
        assert_eq!(len, 24);
        let mut hdr = [0u8; 24];
        dev.mem.read_slice(&mut hdr, GuestAddress(resp_at)).unwrap();
        assert_eq!(parse_hdr(&hdr).0, want, "cursor on scanout {scanout}");
    }
}

/// Pushes a malformed chain and returns the used length it got back.
fn push_malformed(dev: &mut Device, descs: &[(u64, u32, u16, u16)], head: u16) -> u32 {
    dev.controlq.push_raw(&dev.mem, 0, descs, head);
    let (id, len) = dev
        .controlq
        .wait_used(&dev.mem, Duration::from_secs(10))
        .expect("a malformed chain is still returned on the used ring");
    assert_eq!(id, u32::from(head));
    len
}

#[test]
fn malformed_chains_get_errors_and_the_device_keeps_working() {
    let backend = Backend::start(&[]);
    let mut dev = Device::connect(&backend.socket);
    let req = DATA_BASE;
    let resp = DATA_BASE + 0x1000;
    dev.mem
        .write_slice(&ctrl_hdr(CMD_GET_DISPLAY_INFO, 0, 0), GuestAddress(req))
        .unwrap();

    // 1. Too short: 8 bytes of request, a sound response buffer.
    dev.mem.write_obj(0u32, GuestAddress(resp)).unwrap();
    let len = push_malformed(
        &mut dev,
        &[
            (req, 8, VRING_DESC_F_NEXT, 1),
            (resp, 64, VRING_DESC_F_WRITE, 0),
        ],
        0,
    );
    assert_eq!(len, 24);
    let t: u32 = dev.mem.read_obj(GuestAddress(resp)).unwrap();
    assert_eq!(t, RESP_ERR_UNSPEC);

    // 2. A loop: the descriptor names itself as next.
    let len = push_malformed(&mut dev, &[(req, 24, VRING_DESC_F_NEXT, 0)], 0);
    assert_eq!(len, 0, "no writable descriptor: returned with length 0");

    // 3. A request outside guest memory.
    let len = push_malformed(
        &mut dev,
        &[
            (0x7fff_0000_0000, 24, VRING_DESC_F_NEXT, 1),
            (resp, 64, VRING_DESC_F_WRITE, 0),
        ],
        0,
    );
    assert_eq!(len, 0);

    // 4. A zero-length request descriptor.
    dev.mem.write_obj(0u32, GuestAddress(resp)).unwrap();
    let len = push_malformed(
        &mut dev,
        &[
            (req, 0, VRING_DESC_F_NEXT, 1),
            (resp, 64, VRING_DESC_F_WRITE, 0),
        ],
        0,
    );
    assert_eq!(len, 24);
    let t: u32 = dev.mem.read_obj(GuestAddress(resp)).unwrap();
    assert_eq!(t, RESP_ERR_UNSPEC);

    // 5. A next index past the queue.
    let len = push_malformed(&mut dev, &[(req, 24, VRING_DESC_F_NEXT, QUEUE_SIZE + 5)], 0);
    assert_eq!(len, 0);

    // The device still answers, and said why it refused, at most a few
    // lines per second.
    let modes = display_info(&mut dev);
    assert_eq!(modes[0], (1280, 800, 1));
    assert!(backend
        .log
        .wait_for(&["refusing chain", "loops"], Duration::from_secs(5))
        .is_some());
    assert!(backend
        .log
        .wait_for(&["shorter than a command header"], Duration::from_secs(5))
        .is_some());
}

#[test]
fn broker_relays_guest_memory_without_mapping_it() {
    let backend = Backend::start(&[]);
    let (gpu, _) = backend.worker_pids();
    let mut dev = Device::connect(&backend.socket);
    display_info(&mut dev);
    assert!(
        maps_memfd(gpu, "gpu-airlock-guest-ram"),
        "gpu-worker maps the guest memory it was sent"
    );
    assert!(
        !maps_memfd(backend.pid(), "gpu-airlock-guest-ram"),
        "the broker never maps guest memory"
    );
    assert!(
        !fd_targets(backend.pid())
            .iter()
            .any(|t| t.contains("gpu-airlock-guest-ram")),
        "the broker keeps no guest-memory descriptor"
    );
}

#[test]
fn get_vring_base_reports_consumed_requests() {
    let backend = Backend::start(&[]);
    let mut dev = Device::connect(&backend.socket);
    for _ in 0..3 {
        display_info(&mut dev);
    }
    assert_eq!(dev.controlq.used_idx(&dev.mem), 3);
    let base = dev.frontend.get_vring_base(0).unwrap();
    assert_eq!(
        base, 3,
        "GET_VRING_BASE stops the ring at the next available index"
    );
}

/// Waits until `f` returns the same value twice, 50 ms apart.
fn settled(mut f: impl FnMut() -> [usize; 3]) -> [usize; 3] {
    let mut last = f();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = f();
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

#[test]
fn reconnect_serves_again_and_leaks_nothing() {
    let backend = Backend::start(&[]);
    let (gpu, render) = backend.worker_pids();
    let broker = backend.pid();
    let counts = || [fd_count(broker), fd_count(gpu), fd_count(render)];
    let before = settled(counts);
    let gpu_fds_before = fd_targets(gpu);

    for cycle in 0..3 {
        let mut dev = Device::connect(&backend.socket);
        let modes = display_info(&mut dev);
        assert_eq!(modes[0], (1280, 800, 1), "cycle {cycle}");
        drop(dev);
        // The backend notices the hang-up and is ready for the next one.
        let deadline = Instant::now() + Duration::from_secs(5);
        while settled(counts) != before && Instant::now() < deadline {}
        assert_eq!(
            settled(counts),
            before,
            "open descriptors of broker, gpu-worker and render-worker after cycle {cycle}; \
             gpu-worker's before: {gpu_fds_before:?}, after: {:?}",
            fd_targets(gpu)
        );
    }
    assert_eq!(
        backend.worker_pids(),
        (gpu, render),
        "workers live across reconnections"
    );
    assert!(process_alive(broker));
}

#[test]
fn frontend_that_breaks_protocol_is_dropped_and_next_is_served() {
    let backend = Backend::start(&[]);
    {
        let mut frontend = vhost::vhost_user::Frontend::connect(&backend.socket, 2).unwrap();
        frontend.set_owner().unwrap();
        frontend.get_features().unwrap();
        // Not offered: the broker refuses and closes this connection.
        let _ = frontend.set_protocol_features(VhostUserProtocolFeatures::all());
    }
    let mut dev = Device::connect(&backend.socket);
    assert_eq!(display_info(&mut dev)[0], (1280, 800, 1));
}

fn kill_worker_and_check(which: &str, signal: nix::sys::signal::Signal, says: &str) {
    let mut backend = Backend::start(&[]);
    let (gpu, render) = backend.worker_pids();
    let (victim, survivor) = if which == "gpu-worker" {
        (gpu, render)
    } else {
        (render, gpu)
    };
    let mut dev = Device::connect(&backend.socket);
    display_info(&mut dev);

    let killed_at = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), signal).unwrap();
    let status = backend
        .wait_exit(Duration::from_secs(2))
        .expect("the broker exits within 2 seconds of a worker's death");
    assert!(killed_at.elapsed() < Duration::from_secs(2));
    assert!(!status.success(), "the broker exits non-zero");

    let line = backend
        .log
        .wait_for(
            &[which, &format!("pid {victim}"), says],
            Duration::from_secs(2),
        )
        .unwrap_or_else(|| {
            panic!(
                "no line naming {which} and {says}: {:#?}",
                backend.log.lines()
            )
        });
    assert!(
        line.contains("ERROR"),
        "logged at the default level: {line}"
    );

    // The front-end connection is closed: a request now fails.
    assert!(dev.frontend.get_features().is_err());
    // No orphan.
    let deadline = Instant::now() + Duration::from_secs(2);
    while process_alive(survivor) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!process_alive(survivor), "the other worker is gone too");
    assert!(!backend.socket.exists(), "the socket path is removed");
}

#[test]
fn kill_gpu_worker_ends_the_device() {
    kill_worker_and_check("gpu-worker", Signal::SIGKILL, "was killed by SIGKILL");
}

#[test]
fn kill_render_worker_ends_the_device() {
    kill_worker_and_check("render-worker", Signal::SIGKILL, "was killed by SIGKILL");
}

/// A seccomp kill is a death by SIGSYS; delivering the signal takes the
/// same path through the broker without any test hook in the worker.
#[test]
fn worker_dead_of_sigsys_is_reported_as_a_seccomp_violation() {
    kill_worker_and_check(
        "gpu-worker",
        Signal::SIGSYS,
        "was killed by SIGSYS (a seccomp violation)",
    );
}

/// SIGTERM (systemd's stop) and SIGINT (^C): the broker ends both workers,
/// removes its socket, says so in one line and exits 0.
#[test]
fn sigterm_and_sigint_stop_the_device_cleanly() {
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let mut backend = Backend::start(&[]);
        let (gpu, render) = backend.worker_pids();
        // A connected front-end does not hold the stop up.
        let _dev = Device::connect(&backend.socket);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(backend.pid() as i32), sig).unwrap();
        let status = backend
            .wait_exit(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("the broker exits on {sig}"));
        assert!(status.success(), "{sig}: exit status {status:?}");
        assert!(!backend.socket.exists(), "{sig}: the socket file is gone");
        for pid in [gpu, render] {
            let deadline = Instant::now() + Duration::from_secs(5);
            while process_alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(!process_alive(pid), "{sig}: worker {pid} is gone");
        }
        assert!(
            backend
                .log
                .wait_for(
                    &[&format!("{sig}: stopping the workers")],
                    Duration::from_secs(5)
                )
                .is_some(),
            "{:#?}",
            backend.log.lines()
        );
    }
}

/// QEMU's backend-program convention, as libvirt uses it: `--fd N` names
/// one end of a connected socket pair. That is the one front-end; when it
/// hangs up, the broker ends its workers and exits 0. (It used to take
/// every --fd as a listening socket: `cannot accept a front-end
/// connection: Invalid argument`.)
#[test]
fn a_connected_fd_is_the_one_front_end_and_its_end_ends_the_device() {
    let (mut backend, stream) = Backend::start_on_connected_fd(&[]);
    let (gpu, render) = backend.worker_pids();
    let mut dev = Device::over(stream, GUEST_MEM_SIZE, true);
    let modes = display_info(&mut dev);
    assert_eq!(modes[0], (1280, 800, 1));
    drop(dev);
    let status = backend
        .wait_exit(Duration::from_secs(10))
        .expect("the broker exits once its one front-end is gone");
    assert!(status.success(), "{status:?}: {:#?}", backend.log.lines());
    for pid in [gpu, render] {
        let deadline = Instant::now() + Duration::from_secs(5);
        while process_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!process_alive(pid), "worker {pid} is gone");
    }
    assert!(!backend
        .log
        .lines()
        .iter()
        .any(|l| l.contains("cannot accept")));
}

/// `--fd` of a socket that is neither listening nor a stream: one line
/// naming the option, and no start.
#[test]
fn an_fd_that_is_no_stream_socket_is_refused() {
    use std::os::unix::net::UnixDatagram;
    let (_ours, theirs) = UnixDatagram::pair().unwrap();
    let mut cmd = std::process::Command::new(binary("gpu-airlock"));
    cmd.args(["--fd", "3"]);
    give_fd_3(&mut cmd, theirs.as_raw_fd());
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--fd 3 is a Datagram socket"), "{err}");
}
