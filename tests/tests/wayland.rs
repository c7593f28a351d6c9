//! Cross-domain Wayland against a real compositor: weston (headless) on a
//! private socket, reached by render-worker inside its jail through the
//! one bind-mounted socket. The harness is the guest's proxy.

use std::os::unix::net::UnixListener;
use std::time::Duration;

use harness::blob_wire::*;
use harness::wayland::*;
use harness::*;

/// gpu-airlock on weston's socket, a connected device, and an open channel.
fn open_to(weston: &Weston) -> (Backend, Device, WaylandChannel) {
    let backend = Backend::start(&["--wayland-socket", &weston.arg()]);
    let mut dev = Device::connect(&backend.socket);
    let (channel, init) = WaylandChannel::open(&mut dev);
    assert_eq!(init, RESP_OK_NODATA, "INIT reached weston");
    (backend, dev, channel)
}

/// wl_display.get_registry (new id 2) and wl_display.sync (new id 3).
fn registry_and_sync() -> Vec<u8> {
    let mut v = wl_msg(1, 1, &2u32.to_le_bytes());
    v.extend(wl_msg(1, 0, &3u32.to_le_bytes()));
    v
}

#[test]
#[ignore = "needs weston: tests/guest/prepare.sh (apt-get install weston)"]
fn the_guest_lists_westons_globals_through_the_jailed_render_worker() {
    let weston = harness::guest::needed(Weston::start());
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
#[ignore = "needs weston: tests/guest/prepare.sh (apt-get install weston)"]
fn the_compositor_going_away_is_an_end_of_channel_not_a_hang() {
    let mut weston = harness::guest::needed(Weston::start());
    let (_backend, mut dev, mut channel) = open_to(&weston);
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
    // RECEIVE on the dead channel: answered (not left hanging), and the
    // device goes on.
    let again = channel.receive(&mut dev, Duration::from_secs(10));
    assert!(again.is_some(), "a POLL on a dead channel is answered");
    let (len, _) = dev.control(&ctrl_hdr(CMD_GET_DISPLAY_INFO, 0, 0), 1024);
    assert_eq!(len, 408);
}

#[test]
#[ignore = "needs weston: tests/guest/prepare.sh (apt-get install weston)"]
fn bad_sends_get_error_responses() {
    let weston = harness::guest::needed(Weston::start());
    let (_backend, mut dev, mut channel) = open_to(&weston);
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

/// The name of global `interface` in the registry events.
fn global(events: &[harness::wayland::WlEvent], interface: &str) -> u32 {
    events
        .iter()
        .find(|e| e.object == 2 && e.opcode == 0 && e.string_at(4) == interface)
        .unwrap_or_else(|| panic!("{interface} is advertised"))
        .u32_at(0)
}

/// wl_registry.bind(name, interface, version, new id).
fn bind(name: u32, interface: &str, version: u32, id: u32) -> Vec<u8> {
    let mut args = name.to_le_bytes().to_vec();
    args.extend(wl_string(interface));
    args.extend_from_slice(&version.to_le_bytes());
    args.extend_from_slice(&id.to_le_bytes());
    wl_msg(2, 0, &args)
}

fn args(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// A window whose pixels are a host blob: a shm pool made from the blob's
/// memfd (sent as a descriptor with SEND), a buffer, an xdg toplevel
/// surface, attach, commit — and weston's frame callback comes back.
#[test]
#[ignore = "needs weston: tests/guest/prepare.sh (apt-get install weston)"]
fn a_blob_becomes_a_shm_buffer_on_a_surface_and_the_frame_callback_arrives() {
    let weston = harness::guest::needed(Weston::start());
    let (_backend, mut dev, mut channel) = open_to(&weston);
    channel.send(&mut dev, &registry_and_sync(), &[]);
    let events = channel.receive_until(&mut dev, |e| e.object == 3 && e.opcode == 0);

    // Objects: 4 xdg_wm_base, 5 wl_compositor, 6 wl_shm, 7 wl_surface,
    // 8 xdg_surface, 9 xdg_toplevel, 10 pool, 11 buffer, 12 frame callback.
    let mut setup = bind(global(&events, "xdg_wm_base"), "xdg_wm_base", 1, 4);
    setup.extend(bind(
        global(&events, "wl_compositor"),
        "wl_compositor",
        4,
        5,
    ));
    setup.extend(bind(global(&events, "wl_shm"), "wl_shm", 1, 6));
    setup.extend(wl_msg(5, 0, &args(&[7]))); // create_surface
    setup.extend(wl_msg(4, 2, &args(&[8, 7]))); // get_xdg_surface
    setup.extend(wl_msg(8, 1, &args(&[9]))); // get_toplevel
    setup.extend(wl_msg(7, 6, &[])); // commit
    assert_eq!(channel.send(&mut dev, &setup, &[]), RESP_OK_NODATA);
    let events = channel.receive_until(&mut dev, |e| e.object == 8 && e.opcode == 0);
    let serial = events
        .iter()
        .find(|e| e.object == 8 && e.opcode == 0)
        .unwrap()
        .u32_at(0);

    // The pixels: a host blob from the cross-domain context, in the
    // context's resources so SEND can pass its memfd.
    let (blob_id, size, _) = more_image_requirements(&mut dev, 64, 64);
    let create = host_blob(30, blob_id, size);
    let (_, resp) = dev.control(&create, 64);
    assert_eq!(parse_hdr(&resp).0, RESP_OK_NODATA);
    let (_, resp) = dev.control(
        &words(hdr(CMD_CTX_ATTACH_RESOURCE, CTX, None), &[30, 0]),
        64,
    );
    assert_eq!(parse_hdr(&resp).0, RESP_OK_NODATA);

    let mut frame = wl_msg(8, 4, &args(&[serial])); // ack_configure
                                                    // create_pool(new id, fd, size): the fd travels as the blob.
    frame.extend(wl_msg(6, 0, &args(&[10, size as u32])));
    // create_buffer(new id, offset, width, height, stride, XRGB8888)
    frame.extend(wl_msg(10, 0, &args(&[11, 0, 64, 64, 256, 1])));
    frame.extend(wl_msg(7, 1, &args(&[11, 0, 0]))); // attach
    frame.extend(wl_msg(7, 2, &args(&[0, 0, 64, 64]))); // damage
    frame.extend(wl_msg(7, 3, &args(&[12]))); // frame
    frame.extend(wl_msg(7, 6, &[])); // commit
    assert_eq!(channel.send(&mut dev, &frame, &[30]), RESP_OK_NODATA);
    let events = channel.receive_until(&mut dev, |e| {
        // wl_callback 12 done, or wl_display.error.
        e.opcode == 0 && (e.object == 12 || e.object == 1)
    });
    assert!(
        !events.iter().any(|e| e.object == 1 && e.opcode == 0),
        "no wl_display.error: {events:?}"
    );
    assert!(events.iter().any(|e| e.object == 12 && e.opcode == 0));
}

/// Without the namespace layer (`--sandbox none`) render-worker reaches the
/// compositor by its host path, with the same seccomp filter.
#[test]
#[ignore = "needs weston: tests/guest/prepare.sh (apt-get install weston)"]
fn without_namespaces_the_host_path_is_used() {
    let weston = harness::guest::needed(Weston::start());
    let backend = Backend::start(&["--wayland-socket", &weston.arg(), "--sandbox", "none"]);
    let mut dev = Device::connect(&backend.socket);
    let (mut channel, init) = WaylandChannel::open(&mut dev);
    assert_eq!(init, RESP_OK_NODATA, "INIT reached weston");
    channel.send(&mut dev, &registry_and_sync(), &[]);
    channel.receive_until(&mut dev, |e| e.object == 3 && e.opcode == 0);
}
