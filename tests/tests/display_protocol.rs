//! The display path end to end through the harness: the harness plays
//! QEMU's side of the vhost-user-gpu display protocol (tests/src/display.rs)
//! and checks what reaches it — the protocol-feature handshake, display
//! info and EDID from the display, SCANOUT, UPDATE pixels in the display's
//! format, the cursor, two scanouts, and a new display socket mid-session.

use std::time::Duration;

use harness::display::{display_edid, Event};
use harness::*;
use vm_memory::{Bytes, GuestAddress};

const B8G8R8A8: u32 = 1;
const B8G8R8X8: u32 = 2;
const R8G8B8A8: u32 = 67;
const A8B8G8R8: u32 = 121;
const WAIT: Duration = Duration::from_secs(10);

/// Deterministic bytes for `len`, different per `seed`.
fn bytes(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13 ^ seed) as u8)
        .collect()
}

/// Creates resource `id` (`w`×`h`, `format`), backs it with guest memory at
/// `at` holding `pixels`, and transfers all of it.
fn resource(dev: &mut Device, id: u32, format: u32, (w, h): (u32, u32), pixels: &[u8], at: u64) {
    assert_eq!(pixels.len(), (w * h * 4) as usize);
    assert_eq!(
        dev.answer(&cmd(CMD_RESOURCE_CREATE_2D, &[id, format, w, h])),
        RESP_OK_NODATA
    );
    dev.mem.write_slice(pixels, GuestAddress(at)).unwrap();
    let mut attach = cmd(CMD_RESOURCE_ATTACH_BACKING, &[id, 1]);
    attach.extend_from_slice(&at.to_le_bytes());
    attach.extend_from_slice(&(pixels.len() as u32).to_le_bytes());
    attach.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(dev.answer(&attach), RESP_OK_NODATA);
    assert_eq!(
        dev.answer(&cmd(CMD_TRANSFER_TO_HOST_2D, &[0, 0, w, h, 0, 0, id, 0])),
        RESP_OK_NODATA
    );
}

/// `rect` (x, y, w, h) of a `width`-pixel-wide 4-byte image, row by row.
fn crop(pixels: &[u8], width: u32, (x, y, w, h): (u32, u32, u32, u32)) -> Vec<u8> {
    let mut out = Vec::new();
    for row in y..y + h {
        let at = ((row * width + x) * 4) as usize;
        out.extend_from_slice(&pixels[at..at + (w * 4) as usize]);
    }
    out
}

/// The display's byte order (B, G, R, X) from a format's, one pixel at a
/// time, written out per format rather than shared with the code under test.
fn as_display(format: u32, pixels: &[u8]) -> Vec<u8> {
    pixels
        .chunks(4)
        .flat_map(|p| match format {
            B8G8R8A8 | B8G8R8X8 => [p[0], p[1], p[2], p[3]],
            R8G8B8A8 => [p[2], p[1], p[0], p[3]],
            A8B8G8R8 => [p[1], p[2], p[3], p[0]],
            _ => panic!("format {format} not used here"),
        })
        .collect()
}

fn update_count(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Update { .. }))
        .count()
}

fn no_bad_events(events: &[Event]) {
    let bad: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::Bad(_)))
        .collect();
    assert!(bad.is_empty(), "the display understood everything: {bad:?}");
}

#[test]
fn flushes_reach_the_display_pixel_for_pixel() {
    let backend = Backend::start(&["--display", "64x32"]);
    let (mut dev, display) = Device::connect_with_display(
        &backend.socket,
        DisplayConfig {
            modes: vec![(200, 100)],
            edid: true,
        },
    );

    // The guest sees the display's mode, not --display's.
    let (len, resp) = dev.control(&ctrl_hdr(CMD_GET_DISPLAY_INFO, 0, 0), 408);
    assert_eq!(len, 408);
    assert_eq!(parse_hdr(&resp).0, RESP_OK_DISPLAY_INFO);
    let word = |o: usize| u32::from_le_bytes(resp[o..o + 4].try_into().unwrap());
    assert_eq!(
        (word(32), word(36), word(40)),
        (200, 100, 1),
        "w, h, enabled"
    );
    let events = display.wait_events(3);
    assert_eq!(
        events[..3],
        [
            Event::GetProtocolFeatures,
            Event::SetProtocolFeatures(1),
            Event::GetDisplayInfo
        ],
        "the handshake (EDID acked) comes before the first request"
    );

    // And the display's EDID.
    let (len, resp) = dev.control(&cmd(CMD_GET_EDID, &[0, 0]), 1056);
    assert_eq!(len, 1056);
    assert_eq!(parse_hdr(&resp).0, RESP_OK_EDID);
    let size = u32::from_le_bytes(resp[24..28].try_into().unwrap()) as usize;
    assert_eq!(&resp[32..32 + size], &display_edid(0)[..]);

    // A 64x32 R8G8B8A8 resource, of which (8,4)+32x16 is shown.
    let pixels = bytes(64 * 32 * 4, 1);
    resource(&mut dev, 1, R8G8B8A8, (64, 32), &pixels, 0x40_0000);
    assert_eq!(
        dev.answer(&cmd(CMD_SET_SCANOUT, &[8, 4, 32, 16, 0, 1])),
        RESP_OK_NODATA
    );
    display.wait_for(WAIT, |e| {
        e.contains(&Event::Scanout {
            scanout: 0,
            width: 32,
            height: 16,
        })
    });

    // Flushing resource rectangle (10,6)+8x4 updates scanout (2,2)+8x4.
    assert_eq!(
        dev.answer(&cmd(CMD_RESOURCE_FLUSH, &[10, 6, 8, 4, 1, 0])),
        RESP_OK_NODATA
    );
    let events = display.wait_for(WAIT, |e| update_count(e) == 1);
    assert_eq!(
        events.last(),
        Some(&Event::Update {
            scanout: 0,
            x: 2,
            y: 2,
            width: 8,
            height: 4
        })
    );
    let shown = display.surface(0).expect("scanout 0 shows a surface");
    assert_eq!(
        crop(&shown.pixels, 32, (2, 2, 8, 4)),
        as_display(R8G8B8A8, &crop(&pixels, 64, (10, 6, 8, 4)))
    );

    // A whole-resource flush updates exactly what the scanout shows.
    assert_eq!(
        dev.answer(&cmd(CMD_RESOURCE_FLUSH, &[0, 0, 64, 32, 1, 0])),
        RESP_OK_NODATA
    );
    display.wait_for(WAIT, |e| update_count(e) == 2);
    let shown = display.surface(0).unwrap();
    assert_eq!((shown.width, shown.height), (32, 16));
    assert_eq!(
        shown.pixels,
        as_display(R8G8B8A8, &crop(&pixels, 64, (8, 4, 32, 16)))
    );

    // DETACH_BACKING: transfers stop, the host copy stays flushable.
    assert_eq!(
        dev.answer(&cmd(CMD_RESOURCE_DETACH_BACKING, &[1, 0])),
        RESP_OK_NODATA
    );
    assert_eq!(
        dev.answer(&cmd(CMD_TRANSFER_TO_HOST_2D, &[0, 0, 64, 32, 0, 0, 1, 0])),
        RESP_ERR_UNSPEC
    );
    assert_eq!(
        dev.answer(&cmd(CMD_RESOURCE_FLUSH, &[0, 0, 64, 32, 1, 0])),
        RESP_OK_NODATA
    );
    let events = display.wait_for(WAIT, |e| update_count(e) == 3);
    no_bad_events(&events);
}

#[test]
fn two_scanouts_and_the_cursor() {
    let backend = Backend::start(&["--display", "32x16", "--display", "16x16"]);
    let (mut dev, display) = Device::connect_with_display(
        &backend.socket,
        DisplayConfig {
            // Output 1 is off at the display: the device still drives it.
            modes: vec![(32, 16), (0, 0)],
            edid: true,
        },
    );
    let first = bytes(32 * 16 * 4, 2);
    let second = bytes(16 * 16 * 4, 3);
    resource(&mut dev, 1, B8G8R8X8, (32, 16), &first, 0x40_0000);
    resource(&mut dev, 2, A8B8G8R8, (16, 16), &second, 0x50_0000);
    for (scanout, id, w, h) in [(0, 1, 32, 16), (1, 2, 16, 16)] {
        assert_eq!(
            dev.answer(&cmd(CMD_SET_SCANOUT, &[0, 0, w, h, scanout, id])),
            RESP_OK_NODATA
        );
        assert_eq!(
            dev.answer(&cmd(CMD_RESOURCE_FLUSH, &[0, 0, w, h, id, 0])),
            RESP_OK_NODATA
        );
    }
    display.wait_for(WAIT, |e| update_count(e) == 2);
    assert_eq!(display.surface(0).unwrap().pixels, first);
    assert_eq!(
        display.surface(1).unwrap().pixels,
        as_display(A8B8G8R8, &second)
    );

    // The cursor: a 64x64 image on scanout 1, moved, then hidden.
    let image = bytes(64 * 64 * 4, 4);
    resource(&mut dev, 3, B8G8R8A8, (64, 64), &image, 0x60_0000);
    // virtio_gpu_update_cursor: scanout, x, y, padding, resource, hot x, y.
    dev.cursor(&cmd(CMD_UPDATE_CURSOR, &[1, 5, 6, 0, 3, 7, 8, 0]));
    dev.cursor(&cmd(CMD_MOVE_CURSOR, &[1, 9, 10, 0, 3, 0, 0, 0]));
    dev.cursor(&cmd(CMD_UPDATE_CURSOR, &[1, 0, 0, 0, 0, 0, 0, 0]));
    // A cursor on a scanout the device lacks reaches nothing.
    dev.cursor(&cmd(CMD_MOVE_CURSOR, &[2, 1, 1, 0, 3, 0, 0, 0]));
    let events = display.wait_for(WAIT, |e| {
        e.iter().any(|e| matches!(e, Event::CursorHide { .. }))
    });
    let cursor: Vec<&Event> = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::CursorUpdate { .. } | Event::CursorPos { .. } | Event::CursorHide { .. }
            )
        })
        .collect();
    assert_eq!(
        cursor,
        [
            &Event::CursorUpdate {
                pos: (1, 5, 6),
                hot: (7, 8),
                image: image.clone()
            },
            &Event::CursorPos {
                scanout: 1,
                x: 9,
                y: 10
            },
            &Event::CursorHide { scanout: 1 },
        ]
    );
    assert!(backend
        .log
        .wait_for(&["cursor on scanout 2"], WAIT)
        .is_some());

    // EDID: the display's for the output it has enabled; for the one it
    // has not, the device's own (QEMU never answers GET_EDID for an output
    // it lacks, and a disabled one may be that).
    for (scanout, from_display) in [(0u32, true), (1, false)] {
        let (len, resp) = dev.control(&cmd(CMD_GET_EDID, &[scanout, 0]), 1056);
        assert_eq!((len, parse_hdr(&resp).0), (1056, RESP_OK_EDID));
        let size = u32::from_le_bytes(resp[24..28].try_into().unwrap()) as usize;
        assert_eq!(
            resp[32..32 + size] == display_edid(scanout)[..],
            from_display,
            "scanout {scanout}"
        );
    }
    let events = display.events();
    assert!(events.contains(&Event::GetEdid(0)));
    assert!(!events.contains(&Event::GetEdid(1)));
    no_bad_events(&events);
}

#[test]
fn scanouts_go_dark_and_a_new_display_socket_starts_over() {
    let backend = Backend::start(&["--display", "16x8"]);
    let config = DisplayConfig {
        modes: vec![(16, 8)],
        edid: false,
    };
    let (mut dev, first) = Device::connect_with_display(&backend.socket, config.clone());
    let pixels = bytes(16 * 8 * 4, 5);
    resource(&mut dev, 1, B8G8R8A8, (16, 8), &pixels, 0x40_0000);
    let show = cmd(CMD_SET_SCANOUT, &[0, 0, 16, 8, 0, 1]);
    let off = Event::Scanout {
        scanout: 0,
        width: 0,
        height: 0,
    };
    let on = Event::Scanout {
        scanout: 0,
        width: 16,
        height: 8,
    };
    assert_eq!(dev.answer(&show), RESP_OK_NODATA);
    // Resource 0 disables the scanout; showing it again re-enables it.
    assert_eq!(
        dev.answer(&cmd(CMD_SET_SCANOUT, &[0, 0, 0, 0, 0, 0])),
        RESP_OK_NODATA
    );
    assert_eq!(dev.answer(&show), RESP_OK_NODATA);
    // Releasing the shown resource disables its scanout too.
    assert_eq!(
        dev.answer(&cmd(CMD_RESOURCE_UNREF, &[1, 0])),
        RESP_OK_NODATA
    );
    let events = first.wait_events(4);
    assert_eq!(events, [on.clone(), off.clone(), on.clone(), off.clone()]);

    // A display without EDID: the device makes its own (a real EDID
    // header), and never asks this display for one.
    let (len, resp) = dev.control(&cmd(CMD_GET_EDID, &[0, 0]), 1056);
    assert_eq!((len, parse_hdr(&resp).0), (1056, RESP_OK_EDID));
    assert_eq!(&resp[32..40], &[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]);
    let events = first.wait_events(6);
    assert_eq!(
        events[4..],
        [Event::GetProtocolFeatures, Event::SetProtocolFeatures(0)]
    );
    assert!(!events.iter().any(|e| matches!(e, Event::GetEdid(_))));

    // QEMU sends a new display socket on every DRIVER_OK. The new display
    // has no surfaces: the next flush first says the scanout's size.
    resource(&mut dev, 2, B8G8R8A8, (16, 8), &pixels, 0x40_0000);
    assert_eq!(
        dev.answer(&cmd(CMD_SET_SCANOUT, &[0, 0, 16, 8, 0, 2])),
        RESP_OK_NODATA
    );
    let second = dev.set_display(config);
    assert_eq!(
        dev.answer(&cmd(CMD_RESOURCE_FLUSH, &[0, 0, 16, 8, 2, 0])),
        RESP_OK_NODATA
    );
    let events = second.wait_events(2);
    assert_eq!(events[0], on);
    assert!(matches!(events[1], Event::Update { .. }));
    assert_eq!(second.surface(0).unwrap().pixels, pixels);
    first.wait_for(WAIT, |e| e.last() == Some(&Event::Closed));
    no_bad_events(&second.events());
}

/// A full-HD frame through the jailed back-end: the broker's display
/// thread grows its buffer from 4 to 8 MiB, which glibc does with mremap.
#[test]
fn a_full_hd_frame_flushes_inside_the_jail() {
    let backend = Backend::start(&["--display", "1920x1080", "--seccomp", "trap"]);
    let (mut dev, display) = Device::connect_with_display(
        &backend.socket,
        DisplayConfig {
            modes: vec![(1920, 1080)],
            edid: true,
        },
    );
    let pixels = bytes(1920 * 1080 * 4, 6);
    resource(&mut dev, 1, B8G8R8X8, (1920, 1080), &pixels, 0x40_0000);
    // Half first, then full: the buffer grows (realloc) between them.
    for (i, rect) in [[0, 0, 1920, 540], [0, 0, 1920, 1080]].iter().enumerate() {
        if i == 0 {
            assert_eq!(
                dev.answer(&cmd(CMD_SET_SCANOUT, &[0, 0, 1920, 1080, 0, 1])),
                RESP_OK_NODATA
            );
        }
        let mut body = rect.to_vec();
        body.extend_from_slice(&[1, 0]);
        assert_eq!(dev.answer(&cmd(CMD_RESOURCE_FLUSH, &body)), RESP_OK_NODATA);
        display.wait_for(WAIT, |e| update_count(e) == i + 1);
    }
    assert_eq!(display.surface(0).unwrap().pixels, pixels);
    assert!(
        !backend.log.lines().iter().any(|l| l.contains("seccomp")),
        "{:#?}",
        backend.log.lines()
    );
}

/// SET_SCANOUT_BLOB, as Linux uses it for dumb buffers when the device
/// has blobs: a guest-memory blob, rows padded (stride 320 for 64 pixels)
/// and starting 128 bytes in, scattered over two guest ranges. Each flush
/// reads the guest's pages afresh.
#[test]
fn a_guest_memory_blob_is_shown_with_set_scanout_blob() {
    let backend = Backend::start(&["--display", "64x32"]);
    let (mut dev, display) = Device::connect_with_display(
        &backend.socket,
        DisplayConfig {
            modes: vec![(64, 32)],
            edid: true,
        },
    );
    let (stride, offset, size) = (320u32, 128u32, 12288u32);
    let ranges = [(0x40_0000u64, 8192u32), (0x60_0000, 4096)];
    let write_blob = |dev: &mut Device, blob: &[u8]| {
        dev.mem
            .write_slice(&blob[..8192], GuestAddress(ranges[0].0))
            .unwrap();
        dev.mem
            .write_slice(&blob[8192..], GuestAddress(ranges[1].0))
            .unwrap();
    };
    // The 64x32 picture inside the blob's layout.
    let picture = |blob: &[u8]| -> Vec<u8> {
        let mut out = Vec::new();
        for y in 0..32 {
            let at = (offset + y * stride) as usize;
            out.extend_from_slice(&blob[at..at + 256]);
        }
        out
    };
    let blob = bytes(size as usize, 7);
    write_blob(&mut dev, &blob);
    assert_eq!(
        dev.answer(&guest_blob(5, 0, u64::from(size), &ranges)),
        RESP_OK_NODATA
    );
    let scanout_blob = |id: u32, stride: u32, offset: u32| {
        // rect, scanout, resource, width, height, format, padding,
        // strides[4], offsets[4]
        cmd(
            harness::CMD_SET_SCANOUT_BLOB,
            &[
                0, 0, 64, 32, 0, id, 64, 32, B8G8R8X8, 0, stride, 0, 0, 0, offset, 0, 0, 0,
            ],
        )
    };
    assert_eq!(
        dev.answer(&scanout_blob(5, 255, offset)),
        RESP_ERR_INVALID_PARAMETER,
        "stride shorter than a row"
    );
    assert_eq!(
        dev.answer(&scanout_blob(5, stride, 4096)),
        RESP_ERR_INVALID_PARAMETER,
        "the picture runs past the blob"
    );
    assert_eq!(
        dev.answer(&scanout_blob(6, stride, offset)),
        RESP_ERR_INVALID_RESOURCE_ID
    );
    assert_eq!(dev.answer(&scanout_blob(5, stride, offset)), RESP_OK_NODATA);
    assert_eq!(
        dev.answer(&cmd(CMD_RESOURCE_FLUSH, &[0, 0, 64, 32, 5, 0])),
        RESP_OK_NODATA
    );
    display.wait_for(WAIT, |e| update_count(e) == 1);
    assert_eq!(display.surface(0).unwrap().pixels, picture(&blob));

    // The guest draws into its pages (no transfer) and flushes a part.
    let mut drawn = blob.clone();
    drawn.copy_from_slice(&bytes(size as usize, 8));
    write_blob(&mut dev, &drawn);
    assert_eq!(
        dev.answer(&cmd(CMD_RESOURCE_FLUSH, &[8, 8, 16, 4, 5, 0])),
        RESP_OK_NODATA
    );
    display.wait_for(WAIT, |e| update_count(e) == 2);
    let shown = display.surface(0).unwrap().pixels;
    let (old, new) = (picture(&blob), picture(&drawn));
    assert_eq!(
        crop(&shown, 64, (8, 8, 16, 4)),
        crop(&new, 64, (8, 8, 16, 4))
    );
    assert_eq!(
        crop(&shown, 64, (0, 0, 64, 8)),
        crop(&old, 64, (0, 0, 64, 8))
    );

    // Releasing the blob darkens its scanout.
    assert_eq!(
        dev.answer(&cmd(CMD_RESOURCE_UNREF, &[5, 0])),
        RESP_OK_NODATA
    );
    display.wait_for(WAIT, |e| {
        e.last()
            == Some(&Event::Scanout {
                scanout: 0,
                width: 0,
                height: 0,
            })
    });
    no_bad_events(&display.events());
}

/// A guest-memory blob's RESOURCE_CREATE_BLOB, as Linux lays it out.
fn guest_blob(id: u32, flags: u32, size: u64, ranges: &[(u64, u32)]) -> Vec<u8> {
    let mut create = cmd(
        harness::CMD_RESOURCE_CREATE_BLOB,
        &[id, 1 /* BLOB_MEM_GUEST */, flags, ranges.len() as u32],
    );
    create.extend_from_slice(&0u64.to_le_bytes());
    create.extend_from_slice(&size.to_le_bytes());
    for (addr, len) in ranges {
        create.extend_from_slice(&addr.to_le_bytes());
        create.extend_from_slice(&len.to_le_bytes());
        create.extend_from_slice(&0u32.to_le_bytes());
    }
    create
}

/// What a real Linux 6.1 guest sends once RESOURCE_BLOB is offered without
/// VIRGL (seen on QEMU 11's generic device): its fbdev console is a
/// shareable guest-memory blob, and every plane update sends
/// TRANSFER_TO_HOST_2D for it, the first before SET_SCANOUT_BLOB; a
/// cursor buffer is a 64x64 blob too, shown with UPDATE_CURSOR. Each is
/// answered OK, and the pixels come from the guest's pages.
#[test]
fn linux_dumb_buffers_as_blobs_transfer_flush_and_cursor() {
    let backend = Backend::start(&["--display", "64x32"]);
    let (mut dev, display) = Device::connect_with_display(
        &backend.socket,
        DisplayConfig {
            modes: vec![(64, 32)],
            edid: true,
        },
    );
    let picture = bytes(64 * 32 * 4, 9);
    dev.mem
        .write_slice(&picture, GuestAddress(0x40_0000))
        .unwrap();
    let shareable = 2;
    assert_eq!(
        dev.answer(&guest_blob(2, shareable, 8192, &[(0x40_0000, 8192)])),
        RESP_OK_NODATA
    );
    // virtio_gpu_update_dumb_bo, before the plane is first set: offset,
    // rect, resource.
    let transfer =
        |id: u32, offset: u32| cmd(CMD_TRANSFER_TO_HOST_2D, &[0, 0, 64, 32, offset, 0, id, 0]);
    assert_eq!(dev.answer(&transfer(2, 0)), RESP_OK_NODATA);
    assert_eq!(
        dev.answer(&transfer(2, 8192)),
        RESP_ERR_INVALID_PARAMETER,
        "an offset past the blob"
    );
    assert_eq!(
        dev.answer(&cmd(
            harness::CMD_SET_SCANOUT_BLOB,
            &[0, 0, 64, 32, 0, 2, 64, 32, B8G8R8X8, 0, 256, 0, 0, 0, 0, 0, 0, 0],
        )),
        RESP_OK_NODATA
    );
    assert_eq!(dev.answer(&transfer(2, 0)), RESP_OK_NODATA);
    assert_eq!(
        dev.answer(&cmd(CMD_RESOURCE_FLUSH, &[0, 0, 64, 32, 2, 0])),
        RESP_OK_NODATA
    );
    display.wait_for(WAIT, |e| update_count(e) == 1);
    assert_eq!(display.surface(0).unwrap().pixels, picture);

    // The cursor: a 64x64 ARGB8888 dumb buffer, two guest ranges.
    let image = bytes(64 * 64 * 4, 10);
    dev.mem
        .write_slice(&image[..8192], GuestAddress(0x50_0000))
        .unwrap();
    dev.mem
        .write_slice(&image[8192..], GuestAddress(0x58_0000))
        .unwrap();
    assert_eq!(
        dev.answer(&guest_blob(
            3,
            shareable,
            16384,
            &[(0x50_0000, 8192), (0x58_0000, 8192)]
        )),
        RESP_OK_NODATA
    );
    assert_eq!(dev.answer(&transfer(3, 0)), RESP_OK_NODATA);
    // Too small for a cursor image: refused, and nothing reaches the
    // display.
    assert_eq!(
        dev.answer(&guest_blob(4, shareable, 4096, &[(0x60_0000, 4096)])),
        RESP_OK_NODATA
    );
    dev.cursor(&cmd(CMD_UPDATE_CURSOR, &[0, 1, 1, 0, 4, 0, 0, 0]));
    dev.cursor(&cmd(CMD_UPDATE_CURSOR, &[0, 5, 6, 0, 3, 7, 8, 0]));
    let events = display.wait_for(WAIT, |e| {
        e.iter().any(|e| matches!(e, Event::CursorUpdate { .. }))
    });
    let cursor: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::CursorUpdate { .. }))
        .collect();
    assert_eq!(
        cursor,
        [&Event::CursorUpdate {
            pos: (0, 5, 6),
            hot: (7, 8),
            image
        }]
    );
    assert!(backend
        .log
        .wait_for(&["holds no 64x64 cursor image"], WAIT)
        .is_some());
    no_bad_events(&display.events());
}

/// SET_SCANOUT_BLOB with a new layout replaces the host copy; when the new
/// one cannot be made (past --max-resource-memory), the old one is gone
/// all the same, and the broker is told to let go of it (its scanout goes
/// dark) rather than keep its descriptor and mapping.
#[test]
fn a_failed_shadow_swap_still_releases_the_old_surface() {
    let backend = Backend::start(&["--display", "64x32", "--max-resource-memory", "1"]);
    let (mut dev, display) = Device::connect_with_display(
        &backend.socket,
        DisplayConfig {
            modes: vec![(64, 32)],
            edid: true,
        },
    );
    let size = 2u32 << 20;
    assert_eq!(
        dev.answer(&guest_blob(5, 0, u64::from(size), &[(0x40_0000, size)])),
        RESP_OK_NODATA
    );
    let scanout_blob = |w: u32, h: u32, stride: u32| {
        cmd(
            harness::CMD_SET_SCANOUT_BLOB,
            &[
                0, 0, w, h, 0, 5, w, h, B8G8R8X8, 0, stride, 0, 0, 0, 0, 0, 0, 0,
            ],
        )
    };
    assert_eq!(dev.answer(&scanout_blob(64, 32, 256)), RESP_OK_NODATA);
    assert_eq!(
        dev.answer(&cmd(CMD_RESOURCE_FLUSH, &[0, 0, 64, 32, 5, 0])),
        RESP_OK_NODATA
    );
    display.wait_for(WAIT, |e| update_count(e) == 1);
    // 1024x512 needs 2 MiB of host copy: past the 1 MiB limit.
    assert_eq!(
        dev.answer(&scanout_blob(1024, 512, 4096)),
        RESP_ERR_OUT_OF_MEMORY
    );
    display.wait_for(WAIT, |e| {
        e.last()
            == Some(&Event::Scanout {
                scanout: 0,
                width: 0,
                height: 0,
            })
    });
    no_bad_events(&display.events());
}
