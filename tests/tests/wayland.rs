//! Cross-domain Wayland against a real compositor: weston (headless) on a
//! private socket, reached by render-worker inside its jail through the
//! one bind-mounted socket. The harness is the guest's proxy.

use std::os::unix::net::UnixListener;
use std::time::Duration;

use harness::blob_wire::*;
use harness::wayland::*;
use harness::*;

/// wl_display.get_registry (new id 2) and wl_display.sync (new id 3).
fn registry_and_sync() -> Vec<u8> {
    let mut v = wl_msg(1, 1, &2u32.to_le_bytes());
    v.extend(wl_msg(1, 0, &3u32.to_le_bytes()));
    v
}

#[test]
fn the_guest_lists_westons_globals_through_the_jailed_render_worker() {
    let Some(weston) = Weston::start() else {
        return;
    };
    let backend = Backend::start(&["--wayland-socket", &weston.arg()]);
    let mut dev = Device::connect(&backend.socket);
    // render-worker opens the compositor connection at INIT, no earlier.
    let render = backend.worker_pids().1;
    let sockets = || {
        fd_targets(render)
            .iter()
            .filter(|t| t.starts_with("socket:"))
            .count()
    };
    let before = sockets();
    let (mut channel, init) = WaylandChannel::open(&mut dev);
    assert_eq!(init, RESP_OK_NODATA, "INIT reached weston");
    assert_eq!(sockets(), before + 1);
    assert_eq!(
        channel.send(&mut dev, &registry_and_sync(), &[]),
        RESP_OK_NODATA
    );
    // Until wl_callback 3 says done.
    let events = channel.receive_until(&mut dev, |e| e.object == 3 && e.opcode == 0);
    let globals: Vec<String> = events
        .iter()
        .filter(|e| e.object == 2 && e.opcode == 0)
        .map(|e| e.string_at(4))
        .collect();
    for want in ["wl_compositor", "wl_shm"] {
        assert!(globals.iter().any(|g| g == want), "{want} in {globals:?}");
    }
}

#[test]
fn no_compositor_at_init_is_an_error_not_a_hang() {
    // A socket file with no listener behind it: connect is refused.
    let dir = TempDir::new("dead-compositor");
    let path = dir.0.join("wayland-dead");
    drop(UnixListener::bind(&path).unwrap());
    let backend = Backend::start(&["--wayland-socket", &path.display().to_string()]);
    let mut dev = Device::connect(&backend.socket);
    let (_, init) = WaylandChannel::open(&mut dev);
    assert_ne!(init, RESP_OK_NODATA, "INIT cannot reach a compositor");
    // The device goes on.
    let (len, _) = dev.control(&ctrl_hdr(CMD_GET_DISPLAY_INFO, 0, 0), 1024);
    assert_eq!(len, 408);
}

#[test]
fn the_compositor_going_away_is_an_end_of_channel_not_a_hang() {
    let Some(mut weston) = Weston::start() else {
        return;
    };
    let backend = Backend::start(&["--wayland-socket", &weston.arg()]);
    let mut dev = Device::connect(&backend.socket);
    let (mut channel, init) = WaylandChannel::open(&mut dev);
    assert_eq!(init, RESP_OK_NODATA);
    channel.send(&mut dev, &registry_and_sync(), &[]);
    channel.receive_until(&mut dev, |e| e.object == 3 && e.opcode == 0);
    weston.kill();
    // What is left to read, then an empty RECEIVE (the channel's end).
    let mut ended = false;
    for _ in 0..8 {
        match channel.receive(&mut dev, Duration::from_secs(10)) {
            Some(bytes) if bytes.is_empty() => {
                ended = true;
                break;
            }
            Some(_) => continue,
            None => panic!("a POLL after the compositor left was never answered"),
        }
    }
    assert!(ended, "the guest learns the channel ended");
}

#[test]
fn bad_sends_get_error_responses() {
    let Some(weston) = Weston::start() else {
        return;
    };
    let backend = Backend::start(&["--wayland-socket", &weston.arg()]);
    let mut dev = Device::connect(&backend.socket);
    let (mut channel, init) = WaylandChannel::open(&mut dev);
    assert_eq!(init, RESP_OK_NODATA);
    let code = |dev: &mut Device, r: &[u8]| {
        let (_, resp) = dev.control(r, 64);
        parse_hdr(&resp).0
    };
    let sync = wl_msg(1, 0, &3u32.to_le_bytes());
    // 29 identifiers announced (28 is the most).
    let too_many = submit(CTX, &cross_domain_send(&sync, &[], 29), None);
    assert_ne!(
        code(&mut dev, &too_many),
        RESP_OK_NODATA,
        "more than 28 identifiers"
    );
    // An identifier naming a resource the context does not have.
    let unknown = submit(
        CTX,
        &cross_domain_send(&sync, &[(77, CROSS_DOMAIN_ID_TYPE_VIRTGPU_BLOB)], 1),
        None,
    );
    assert_ne!(code(&mut dev, &unknown), RESP_OK_NODATA, "unknown resource");
    // A payload said to be larger than the command carries.
    let mut oversized = cross_domain_send(&sync, &[], 0);
    oversized[12..16].copy_from_slice(&4000u32.to_le_bytes());
    assert_ne!(
        code(&mut dev, &submit(CTX, &oversized, None)),
        RESP_OK_NODATA,
        "oversized payload"
    );
    // INIT naming rings that are not rings (never created).
    let bad_init = cross_domain(1, &[90, 91, CROSS_DOMAIN_CHANNEL_TYPE_WAYLAND], &[0; 16]);
    let (_, resp) = dev.control(&ctx_create(2, 5, "second"), 64);
    assert_eq!(parse_hdr(&resp).0, RESP_OK_NODATA);
    let mut init_on_2 = submit(CTX, &bad_init, None);
    init_on_2[16..20].copy_from_slice(&2u32.to_le_bytes()); // hdr.ctx_id = 2
    assert_ne!(
        code(&mut dev, &init_on_2),
        RESP_OK_NODATA,
        "rings that are not rings"
    );
    // The channel still works after all of that.
    assert_eq!(
        channel.send(&mut dev, &registry_and_sync(), &[]),
        RESP_OK_NODATA
    );
    channel.receive_until(&mut dev, |e| e.object == 3 && e.opcode == 0);
}
