//! A device reset (VHOST_USER_RESET_DEVICE, which QEMU sends on every
//! virtio reset: a guest reboot, a driver unload) ends everything the old
//! driver made: 2D resources and what the display showed of them, blobs
//! and their mappings, contexts. The rebooted driver starts from nothing,
//! with the ids it used before.

use std::time::Duration;

use harness::blob_wire::*;
use harness::display::Event;
use harness::shmem::ShmemEvent;
use harness::*;

#[test]
fn a_reset_ends_what_the_old_driver_made_and_the_next_starts_afresh() {
    let socket = UnservedSocket::new();
    let backend = Backend::start(&["--wayland-socket", &socket.arg(), "--display", "16x16"]);
    let (mut dev, display) = Device::connect_with_display(
        &backend.socket,
        DisplayConfig {
            modes: vec![(16, 16)],
            edid: false,
        },
    );
    let region = dev.shmem.clone().unwrap();
    // The old driver: resource 1 on scanout 0, a mapped host blob 11.
    assert_eq!(
        dev.answer(&cmd(CMD_RESOURCE_CREATE_2D, &[1, 1, 16, 16])),
        RESP_OK_NODATA
    );
    assert_eq!(
        dev.answer(&cmd(CMD_SET_SCANOUT, &[0, 0, 16, 16, 0, 1])),
        RESP_OK_NODATA
    );
    let (blob_id, size, _) = image_requirements(&mut dev, 32, 32);
    assert_eq!(dev.answer(&host_blob(11, blob_id, size)), RESP_OK_NODATA);
    let (_, resp) = dev.control(&map_blob(11, 0), 64);
    assert_eq!(parse_hdr(&resp).0, RESP_OK_MAP_INFO);

    dev.reset();

    assert_eq!(
        region.events().last(),
        Some(&ShmemEvent::Unmap {
            offset: 0,
            len: size
        }),
        "the blob left the guest's region"
    );
    display.wait_for(Duration::from_secs(10), |e| {
        e.last()
            == Some(&Event::Scanout {
                scanout: 0,
                width: 0,
                height: 0,
            })
    });
    // The rebooted driver uses the same ids again.
    assert_eq!(
        dev.answer(&cmd(CMD_RESOURCE_CREATE_2D, &[1, 1, 16, 16])),
        RESP_OK_NODATA
    );
    let (blob_id, size, _) = image_requirements(&mut dev, 32, 32);
    assert_eq!(dev.answer(&host_blob(11, blob_id, size)), RESP_OK_NODATA);
    let (_, resp) = dev.control(&map_blob(11, 0), 64);
    assert_eq!(
        parse_hdr(&resp).0,
        RESP_OK_MAP_INFO,
        "offset 0 is free again"
    );
    assert!(backend
        .log
        .wait_for(&["front-end reset the device"], Duration::from_secs(5))
        .is_some());
}

/// QEMU 11's generic vhost-user device sends no RESET_DEVICE at a guest
/// reboot (seen with a real guest): it drops its shared-memory mappings
/// itself, stops the rings, and starts them again at 0. The device sees
/// the reset in the ring that restarts elsewhere than it stopped, and the
/// broker sends no SHMEM_UNMAP for mappings the front-end already dropped.
/// A pause (rings restarted where they stopped) keeps everything.
#[test]
fn a_reset_seen_only_in_the_rings_ends_the_old_driver_too() {
    let socket = UnservedSocket::new();
    let backend = Backend::start(&["--wayland-socket", &socket.arg()]);
    let mut dev = Device::connect(&backend.socket);
    let region = dev.shmem.clone().unwrap();
    assert_eq!(
        dev.answer(&cmd(CMD_RESOURCE_CREATE_2D, &[1, 1, 16, 16])),
        RESP_OK_NODATA
    );
    let (blob_id, size, _) = image_requirements(&mut dev, 32, 32);
    assert_eq!(dev.answer(&host_blob(11, blob_id, size)), RESP_OK_NODATA);
    let (_, resp) = dev.control(&map_blob(11, 0), 64);
    assert_eq!(parse_hdr(&resp).0, RESP_OK_MAP_INFO);

    dev.pause_and_resume();
    assert_eq!(
        dev.answer(&cmd(CMD_RESOURCE_CREATE_2D, &[1, 1, 16, 16])),
        RESP_ERR_INVALID_RESOURCE_ID,
        "a pause keeps the driver's resources"
    );

    let events_before = region.events().len();
    dev.reset_without_reset_device();
    assert_eq!(
        dev.answer(&cmd(CMD_RESOURCE_CREATE_2D, &[1, 1, 16, 16])),
        RESP_OK_NODATA,
        "the rebooted driver uses the same ids again"
    );
    let (blob_id, size, _) = image_requirements(&mut dev, 32, 32);
    assert_eq!(dev.answer(&host_blob(11, blob_id, size)), RESP_OK_NODATA);
    let (_, resp) = dev.control(&map_blob(11, 0), 64);
    assert_eq!(
        parse_hdr(&resp).0,
        RESP_OK_MAP_INFO,
        "offset 0 is free again"
    );
    assert_eq!(
        region.events()[events_before..],
        [ShmemEvent::Map {
            offset: 0,
            len: size,
            writable: true
        }],
        "no SHMEM_UNMAP for what the front-end dropped itself"
    );
    for line in ["restarted ring 0", "the front-end already dropped it"] {
        assert!(
            backend
                .log
                .wait_for(&[line], Duration::from_secs(5))
                .is_some(),
            "{line}: {:#?}",
            backend.log.lines()
        );
    }
}
