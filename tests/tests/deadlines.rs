//! A stalled VMM against the real three processes: a display socket that
//! never answers and a back-end request channel whose SHMEM_MAP answers
//! come too late. Every guest command is still answered (an error where
//! the VMM's part did not happen), within the nested deadlines of
//! `ipc::deadline`, the device keeps serving, a late answer never answers
//! a later request, and the next connection is served normally.

use std::time::{Duration, Instant};

use harness::blob_wire::*;
use harness::display::DisplayConfig;
use harness::shmem::ShmemEvent;
use harness::*;

/// The broker's wait on the VMM (`ipc::deadline::VMM_REPLY`).
const VMM_REPLY: Duration = ipc::deadline::VMM_REPLY;

fn display_info(dev: &mut Device, within: Duration) -> Option<(u32, u32, u32)> {
    let (_, resp) = dev.control_within(&ctrl_hdr(CMD_GET_DISPLAY_INFO, 0, 0), 1024, within)?;
    let word = |o: usize| u32::from_le_bytes(resp[o..o + 4].try_into().unwrap());
    // pmodes[0]: x, y, width, height, enabled, flags after the header.
    Some((parse_hdr(&resp).0, word(24 + 8), word(24 + 12)))
}

#[test]
fn a_display_that_never_answers_costs_one_deadline_not_the_device() {
    let backend = Backend::start(&["--display", "640x480"]);
    let mut dev = Device::connect(&backend.socket);
    // The display socket is given and then never read: QEMU's main loop
    // stuck elsewhere.
    let _stalled = dev.set_display_socket();
    let asked = Instant::now();
    let answer = display_info(&mut dev, VMM_REPLY * 4);
    let took = asked.elapsed();
    // The device falls back to --display's size when the display gives
    // none.
    assert_eq!(
        answer,
        Some((RESP_OK_DISPLAY_INFO, 640, 480)),
        "answered after {took:?}; log: {:#?}",
        backend.log.lines()
    );
    assert!(
        took >= VMM_REPLY / 2,
        "answered in {took:?}: the display cannot have been asked"
    );
    assert!(backend
        .log
        .wait_for(
            &["display socket: GET_PROTOCOL_FEATURES"],
            Duration::from_secs(5)
        )
        .is_some());
    // That socket is marked failed: the next question costs no deadline,
    // and the 2D path keeps working.
    assert_eq!(
        display_info(&mut dev, VMM_REPLY / 2),
        Some((RESP_OK_DISPLAY_INFO, 640, 480))
    );
    assert_eq!(
        parse_hdr(
            &dev.control(&cmd(CMD_RESOURCE_CREATE_2D, &[1, 1, 16, 16]), 64)
                .1
        )
        .0,
        RESP_OK_NODATA
    );
    drop(dev);

    // The next connection, with a display that answers, sees its mode.
    let (mut dev, _display) = Device::connect_with_display(
        &backend.socket,
        DisplayConfig {
            modes: vec![(200, 100)],
            edid: false,
        },
    );
    assert_eq!(
        display_info(&mut dev, Duration::from_secs(10)),
        Some((RESP_OK_DISPLAY_INFO, 200, 100))
    );
}

#[test]
fn a_map_answered_too_late_is_an_error_and_never_answers_the_next_map() {
    let socket = UnservedSocket::new();
    let backend = Backend::start(&["--wayland-socket", &socket.arg()]);
    let mut dev = Device::connect(&backend.socket);
    let region = dev.shmem.clone().expect("SHMEM negotiated");
    let (blob_id, size, _) = image_requirements(&mut dev, 64, 64);
    for id in [11, 12] {
        assert_eq!(
            code(&mut dev, &host_blob(id, blob_id, size)),
            RESP_OK_NODATA
        );
    }

    // The VMM answers SHMEM_MAP only after the broker's deadline.
    region.stall_maps(VMM_REPLY * 2);
    let asked = Instant::now();
    let answer = dev.control_within(&map_blob(11, 0), 64, VMM_REPLY * 5);
    let took = asked.elapsed();
    let Some((_, resp)) = answer else {
        panic!(
            "RESOURCE_MAP_BLOB unanswered; log: {:#?}",
            backend.log.lines()
        );
    };
    // As for a map the VMM refuses.
    assert_eq!(
        parse_hdr(&resp).0,
        RESP_ERR_INVALID_PARAMETER,
        "answered after {took:?}"
    );
    assert!(
        took < VMM_REPLY * 2,
        "the guest waited for the VMM: {took:?}"
    );
    assert!(backend
        .log
        .wait_for(
            &["no more maps for this connection"],
            Duration::from_secs(5)
        )
        .is_some());

    // The late answer comes; the next map must not take it as its own.
    region.stall_maps(Duration::ZERO);
    std::thread::sleep(VMM_REPLY * 2);
    assert_eq!(
        code(&mut dev, &map_blob(12, 0x10_0000)),
        RESP_ERR_INVALID_PARAMETER
    );
    let maps = region
        .events()
        .iter()
        .filter(|e| matches!(e, ShmemEvent::Map { .. }))
        .count();
    assert_eq!(
        maps,
        1,
        "only the late map reached the VMM: {:?}",
        region.events()
    );
    // Everything that does not map goes on.
    assert_eq!(
        code(&mut dev, &cmd(CMD_RESOURCE_CREATE_2D, &[20, 1, 16, 16])),
        RESP_OK_NODATA
    );
    assert_eq!(
        code(&mut dev, &cmd(CMD_RESOURCE_UNREF, &[12, 0])),
        RESP_OK_NODATA
    );
    drop(dev);

    // A new connection maps again.
    let mut dev = Device::connect(&backend.socket);
    let region = dev.shmem.clone().expect("SHMEM negotiated");
    let (blob_id, size, _) = image_requirements(&mut dev, 64, 64);
    assert_eq!(
        code(&mut dev, &host_blob(11, blob_id, size)),
        RESP_OK_NODATA
    );
    let (len, resp) = dev.control(&map_blob(11, 0), 64);
    assert_eq!((len, parse_hdr(&resp).0), (32, RESP_OK_MAP_INFO));
    assert_eq!(
        region.events(),
        [ShmemEvent::Map {
            offset: 0,
            len: size,
            writable: true
        }]
    );
}

#[test]
fn a_frontend_that_closes_its_channel_takes_its_mappings_and_the_last_unmaps_are_answered() {
    let socket = UnservedSocket::new();
    let backend = Backend::start(&["--wayland-socket", &socket.arg()]);
    let mut dev = Device::connect(&backend.socket);
    let (blob_id, size, _) = image_requirements(&mut dev, 64, 64);
    for (id, offset) in [(11, 0), (12, 0x10_0000)] {
        assert_eq!(
            code(&mut dev, &host_blob(id, blob_id, size)),
            RESP_OK_NODATA
        );
        assert_eq!(code(&mut dev, &map_blob(id, offset)), RESP_OK_MAP_INFO);
    }

    // QEMU's vhost-user teardown closes the channel while the guest's
    // last unmaps may still be queued (seen with QEMU 11.1 at quit, the
    // guest's driver freeing its blobs).
    dev.close_backend_channel();
    for id in [11, 12] {
        assert_eq!(
            code(
                &mut dev,
                &words(hdr(CMD_RESOURCE_UNMAP_BLOB, 0, None), &[id, 0])
            ),
            RESP_OK_NODATA,
            "unmap of {id}; log: {:#?}",
            backend.log.lines()
        );
        assert_eq!(
            code(&mut dev, &cmd(CMD_RESOURCE_UNREF, &[id, 0])),
            RESP_OK_NODATA
        );
    }
    assert!(backend
        .log
        .wait_for(
            &["the front-end closed its back-end request channel (SHMEM_UNMAP)"],
            Duration::from_secs(5)
        )
        .is_some());
    let log = backend.log.lines();
    assert!(
        !log.iter().any(|l| l.contains("WARN")),
        "the close is the front-end's teardown, not a failure: {log:#?}"
    );

    // Nothing maps on that connection again, and the rest goes on.
    assert_eq!(
        code(&mut dev, &host_blob(13, blob_id, size)),
        RESP_OK_NODATA
    );
    assert_eq!(code(&mut dev, &map_blob(13, 0)), RESP_ERR_INVALID_PARAMETER);
    assert_eq!(
        code(&mut dev, &cmd(CMD_RESOURCE_CREATE_2D, &[20, 1, 16, 16])),
        RESP_OK_NODATA
    );
    drop(dev);

    // The next connection maps again.
    let mut dev = Device::connect(&backend.socket);
    let (blob_id, size, _) = image_requirements(&mut dev, 64, 64);
    assert_eq!(
        code(&mut dev, &host_blob(11, blob_id, size)),
        RESP_OK_NODATA
    );
    assert_eq!(code(&mut dev, &map_blob(11, 0)), RESP_OK_MAP_INFO);
}
