//! The display thread's re-checks, without a front-end: every request a
//! compromised gpu-worker could make, against what the thread saw itself.

use super::*;
use nix::sys::memfd::{memfd_create, MFdFlags};

/// A memfd of `len` bytes, sealed against shrinking if `sealed`.
fn memfd(len: i64, sealed: bool) -> OwnedFd {
    let fd = memfd_create("test", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).unwrap();
    nix::unistd::ftruncate(&fd, len).unwrap();
    if sealed {
        fcntl(&fd, FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK)).unwrap();
    }
    fd
}

fn surface(id: u32, width: u32, height: u32) -> SharedSurface {
    SharedSurface {
        resource_id: id,
        width,
        height,
        stride: width * 4,
        format: wire::FORMAT_B8G8R8X8_UNORM,
    }
}

fn rect(x: u32, y: u32, width: u32, height: u32) -> PixelRect {
    PixelRect {
        x,
        y,
        width,
        height,
    }
}

fn is_refused(a: &Answer) -> bool {
    matches!(a, Reply::Refused(_))
}

/// What a compromised gpu-worker could send: every request is checked
/// against what the broker itself saw, not against gpu-worker's word.
#[test]
fn forged_requests_are_refused() {
    let mut d = Display::new(Arc::default(), 2, 1 << 20);
    let share =
        |d: &mut Display, s: SharedSurface, fd| d.handle(DisplayRequest::ShareSurface(s), fd);
    assert!(
        is_refused(&share(&mut d, surface(1, 16, 16), None)),
        "no fd"
    );
    assert!(
        is_refused(&share(&mut d, surface(1, 16, 16), Some(memfd(1024, false)))),
        "not sealed: it could shrink under the mapping"
    );
    assert!(
        is_refused(&share(&mut d, surface(1, 16, 16), Some(memfd(1023, true)))),
        "smaller than the surface"
    );
    let narrow = SharedSurface {
        stride: 60,
        ..surface(1, 16, 16)
    };
    assert!(
        is_refused(&share(&mut d, narrow, Some(memfd(1024, true)))),
        "stride"
    );
    let odd = SharedSurface {
        format: 999,
        ..surface(1, 16, 16)
    };
    assert!(
        is_refused(&share(&mut d, odd, Some(memfd(1024, true)))),
        "format"
    );
    assert!(
        is_refused(&share(
            &mut d,
            surface(1, 1024, 1024),
            Some(memfd(4 << 20, true))
        )),
        "past --max-resource-memory"
    );
    assert_eq!(
        share(&mut d, surface(1, 16, 16), Some(memfd(1024, true))),
        Reply::Done
    );
    assert!(
        is_refused(&share(&mut d, surface(1, 16, 16), Some(memfd(1024, true)))),
        "shared twice"
    );

    let set = |d: &mut Display, scanout, source| {
        d.handle(DisplayRequest::SetScanout { scanout, source }, None)
    };
    assert!(is_refused(&set(&mut d, 2, Some((1, rect(0, 0, 16, 16))))));
    assert!(is_refused(&set(&mut d, 0, Some((7, rect(0, 0, 16, 16))))));
    assert!(is_refused(&set(&mut d, 0, Some((1, rect(8, 0, 16, 16))))));
    assert!(is_refused(&set(
        &mut d,
        0,
        Some((1, rect(u32::MAX, 0, 2, 1)))
    )));

    let flush =
        |d: &mut Display, scanout, r| d.handle(DisplayRequest::Flush { scanout, rect: r }, None);
    assert!(
        is_refused(&flush(&mut d, 0, rect(0, 0, 1, 1))),
        "shows nothing"
    );
    assert_eq!(set(&mut d, 0, Some((1, rect(4, 4, 8, 8)))), Reply::Done);
    assert!(
        is_refused(&flush(&mut d, 0, rect(0, 0, 9, 8))),
        "outside the scanout"
    );
    assert!(is_refused(&flush(&mut d, 5, rect(0, 0, 1, 1))));
    assert_eq!(flush(&mut d, 0, rect(0, 0, 8, 8)), Reply::Done);

    let cursor = |scanout, hot_x, image: Vec<u8>| DisplayRequest::CursorUpdate {
        scanout,
        x: 0,
        y: 0,
        hot_x,
        hot_y: 0,
        format: wire::FORMAT_B8G8R8A8_UNORM,
        image,
    };
    assert!(is_refused(&d.handle(cursor(0, 0, vec![0; 100]), None)));
    assert!(is_refused(
        &d.handle(cursor(0, 64, vec![0; wire::CURSOR_BYTES]), None)
    ));
    assert!(is_refused(
        &d.handle(cursor(2, 0, vec![0; wire::CURSOR_BYTES]), None)
    ));
    assert_eq!(
        d.handle(cursor(1, 63, vec![0; wire::CURSOR_BYTES]), None),
        Reply::Done
    );

    assert!(is_refused(&d.handle(
        DisplayRequest::ReleaseSurface { resource_id: 9 },
        None
    )));
    assert_eq!(
        d.handle(DisplayRequest::ReleaseSurface { resource_id: 1 }, None),
        Reply::Done
    );
    assert_eq!(d.mapped_bytes, 0);
    assert!(
        is_refused(&flush(&mut d, 0, rect(0, 0, 8, 8))),
        "released: dark"
    );
    // No display socket: display info says so, EDID is the device's.
    assert_eq!(
        d.handle(DisplayRequest::GetDisplayInfo, None),
        Reply::Value(DisplayValue::Modes(None))
    );
    assert_eq!(
        d.handle(DisplayRequest::GetEdid { scanout: 0 }, None),
        Reply::Value(DisplayValue::Edid(None))
    );
    assert!(is_refused(
        &d.handle(DisplayRequest::GetEdid { scanout: 2 }, None)
    ));
}

/// One pixel with blue 0x11, green 0x22, red 0x33, alpha 0x44, laid out
/// in each format's byte order, must come out as B G R A.
#[test]
fn every_format_converts_to_xrgb() {
    let cases: [(u32, [u8; 4]); 8] = [
        (wire::FORMAT_B8G8R8A8_UNORM, [0x11, 0x22, 0x33, 0x44]),
        (wire::FORMAT_B8G8R8X8_UNORM, [0x11, 0x22, 0x33, 0x44]),
        (wire::FORMAT_A8R8G8B8_UNORM, [0x44, 0x33, 0x22, 0x11]),
        (wire::FORMAT_X8R8G8B8_UNORM, [0x44, 0x33, 0x22, 0x11]),
        (wire::FORMAT_R8G8B8A8_UNORM, [0x33, 0x22, 0x11, 0x44]),
        (wire::FORMAT_R8G8B8X8_UNORM, [0x33, 0x22, 0x11, 0x44]),
        (wire::FORMAT_A8B8G8R8_UNORM, [0x44, 0x11, 0x22, 0x33]),
        (wire::FORMAT_X8B8G8R8_UNORM, [0x44, 0x11, 0x22, 0x33]),
    ];
    for (format, bytes) in cases {
        let mut px = bytes.repeat(3);
        to_xrgb(format, &mut px);
        assert_eq!(px, [0x11, 0x22, 0x33, 0x44].repeat(3), "format {format}");
    }
}
