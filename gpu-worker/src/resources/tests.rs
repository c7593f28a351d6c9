//! 2D resources, their backing, scanouts and the cursor, checked without a device.

use super::*;
use ipc::PixelRect;
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use vm_memory::{Bytes, Le32};

const MIB: u64 = 1 << 20;

fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), (4 * MIB) as usize)]).unwrap()
}

fn res(scanouts: usize, max: u64) -> Resources {
    Resources::new(
        &vec![
            ScanoutSize {
                width: 64,
                height: 64
            };
            scanouts
        ],
        max,
    )
}

fn create(id: u32, format: u32, w: u32, h: u32) -> ResourceCreate2d {
    ResourceCreate2d {
        resource_id: Le32::from(id),
        format: Le32::from(format),
        width: Le32::from(w),
        height: Le32::from(h),
    }
}

fn rect(x: u32, y: u32, w: u32, h: u32) -> Rect {
    Rect {
        x: Le32::from(x),
        y: Le32::from(y),
        width: Le32::from(w),
        height: Le32::from(h),
    }
}

fn entry(addr: u64, len: u32) -> MemEntry {
    MemEntry {
        addr: addr.into(),
        length: Le32::from(len),
        padding: Le32::from(0),
    }
}

fn code<T: std::fmt::Debug>(r: Result<T, Refusal>) -> u32 {
    r.unwrap_err().code
}

#[test]
fn create_accepts_every_spec_format_and_refuses_others() {
    let mut r = res(1, 64 * MIB);
    for (i, f) in FORMATS_2D.iter().enumerate() {
        r.create_2d(&create(i as u32 + 1, *f, 16, 16)).unwrap();
    }
    assert_eq!(r.used_bytes(), 8 * 16 * 16 * 4);
    assert_eq!(
        code(r.create_2d(&create(100, 5, 16, 16))),
        RESP_ERR_INVALID_PARAMETER
    );
    assert_eq!(
        code(r.create_2d(&create(0, 1, 16, 16))),
        RESP_ERR_INVALID_RESOURCE_ID
    );
    assert_eq!(
        code(r.create_2d(&create(1, 1, 16, 16))),
        RESP_ERR_INVALID_RESOURCE_ID
    );
    assert_eq!(
        code(r.create_2d(&create(101, 1, 0, 16))),
        RESP_ERR_INVALID_PARAMETER
    );
}

#[test]
fn create_is_capped_by_max_resource_memory_and_overflow() {
    let mut r = res(1, 64 * 64 * 4);
    r.create_2d(&create(1, 1, 64, 64)).unwrap();
    assert_eq!(
        code(r.create_2d(&create(2, 1, 1, 1))),
        RESP_ERR_OUT_OF_MEMORY
    );
    r.unref(1).unwrap();
    assert_eq!(r.used_bytes(), 0);
    r.create_2d(&create(2, 1, 1, 1)).unwrap();
    let mut big = res(1, u64::MAX);
    assert_eq!(
        code(big.create_2d(&create(1, 1, u32::MAX, u32::MAX))),
        RESP_ERR_OUT_OF_MEMORY
    );
}

#[test]
fn unref_of_unknown_resource_and_scanout_release() {
    let mut r = res(2, 64 * MIB);
    assert_eq!(code(r.unref(7)), RESP_ERR_INVALID_RESOURCE_ID);
    r.create_2d(&create(7, 1, 32, 32)).unwrap();
    r.set_scanout(&SetScanout {
        r: rect(0, 0, 32, 32),
        scanout_id: Le32::from(1),
        resource_id: Le32::from(7),
    })
    .unwrap();
    assert!(r.scanout(1).is_some());
    r.unref(7).unwrap();
    assert!(
        r.scanout(1).is_none(),
        "unref disables the scanout showing it"
    );
}

#[test]
fn backing_entries_are_checked_against_guest_memory() {
    let m = mem();
    let mut r = res(1, 64 * MIB);
    r.create_2d(&create(1, 1, 16, 16)).unwrap();
    assert_eq!(
        code(r.attach_backing(&m, 1, &[entry(4 * MIB - 16, 32)])),
        RESP_ERR_INVALID_PARAMETER
    );
    assert_eq!(
        code(r.attach_backing(&m, 1, &[entry(u64::MAX - 4, 16)])),
        RESP_ERR_INVALID_PARAMETER
    );
    assert_eq!(
        code(r.attach_backing(&m, 1, &[entry(0, 0)])),
        RESP_ERR_INVALID_PARAMETER
    );
    assert_eq!(
        code(r.attach_backing(&m, 2, &[entry(0, 16)])),
        RESP_ERR_INVALID_RESOURCE_ID
    );
    r.attach_backing(&m, 1, &[entry(0, 512), entry(8192, 512)])
        .unwrap();
    assert_eq!(
        code(r.attach_backing(&m, 1, &[entry(0, 16)])),
        RESP_ERR_UNSPEC
    );
    r.detach_backing(1).unwrap();
    assert_eq!(code(r.detach_backing(1)), RESP_ERR_UNSPEC);
}

#[test]
fn transfer_copies_sub_rectangles_across_scattered_backing() {
    let m = mem();
    let mut r = res(1, 64 * MIB);
    // 4x4 pixels, stride 16 bytes, backed by two 32-byte runs.
    r.create_2d(&create(1, 1, 4, 4)).unwrap();
    let guest: Vec<u8> = (0..64u8).collect();
    m.write_slice(&guest[..32], GuestAddress(0x1000)).unwrap();
    m.write_slice(&guest[32..], GuestAddress(0x9000)).unwrap();
    r.attach_backing(&m, 1, &[entry(0x1000, 32), entry(0x9000, 32)])
        .unwrap();
    // The 2x2 block at (1,1): offset = 1*16 + 1*4.
    r.transfer_to_host_2d(
        &m,
        &TransferToHost2d {
            r: rect(1, 1, 2, 2),
            offset: 20u64.into(),
            resource_id: Le32::from(1),
            padding: Le32::from(0),
        },
    )
    .unwrap();
    let px = r.pixels(1).unwrap();
    assert_eq!(&px[20..28], &guest[20..28]);
    assert_eq!(
        &px[36..44],
        &guest[36..44],
        "second row from the second run"
    );
    assert!(
        px[..20].iter().all(|b| *b == 0),
        "outside the rect untouched"
    );
    assert!(px[28..36].iter().all(|b| *b == 0));
}

#[test]
fn transfer_refusals() {
    let m = mem();
    let mut r = res(1, 64 * MIB);
    r.create_2d(&create(1, 1, 4, 4)).unwrap();
    let t = |x, y, w, h, off: u64| TransferToHost2d {
        r: rect(x, y, w, h),
        offset: off.into(),
        resource_id: Le32::from(1),
        padding: Le32::from(0),
    };
    assert_eq!(
        code(r.transfer_to_host_2d(&m, &t(0, 0, 4, 4, 0))),
        RESP_ERR_UNSPEC
    );
    r.attach_backing(&m, 1, &[entry(0, 64)]).unwrap();
    r.transfer_to_host_2d(&m, &t(0, 0, 4, 4, 0)).unwrap();
    for bad in [
        t(1, 0, 4, 1, 0),
        t(0, 0, 1, 5, 0),
        t(u32::MAX, 0, 2, 1, 0),
        t(0, 0, 4, 4, 8),
        t(0, 0, 1, 1, u64::MAX),
    ] {
        assert_eq!(
            code(r.transfer_to_host_2d(&m, &bad)),
            RESP_ERR_INVALID_PARAMETER,
            "{bad:?}"
        );
    }
    let mut other = t(0, 0, 1, 1, 0);
    other.resource_id = Le32::from(9);
    assert_eq!(
        code(r.transfer_to_host_2d(&m, &other)),
        RESP_ERR_INVALID_RESOURCE_ID
    );
}

#[test]
fn scanout_and_flush_checks() {
    let mut r = res(2, 64 * MIB);
    r.create_2d(&create(1, 1, 32, 32)).unwrap();
    let s = |id: u32, res: u32, rc: Rect| SetScanout {
        r: rc,
        scanout_id: Le32::from(id),
        resource_id: Le32::from(res),
    };
    assert_eq!(
        code(r.set_scanout(&s(2, 1, rect(0, 0, 32, 32)))),
        RESP_ERR_INVALID_SCANOUT_ID
    );
    assert_eq!(
        code(r.set_scanout(&s(0, 5, rect(0, 0, 32, 32)))),
        RESP_ERR_INVALID_RESOURCE_ID
    );
    assert_eq!(
        code(r.set_scanout(&s(0, 1, rect(16, 0, 32, 32)))),
        RESP_ERR_INVALID_PARAMETER
    );
    assert_eq!(
        code(r.set_scanout(&s(0, 1, rect(0, 0, 0, 32)))),
        RESP_ERR_INVALID_PARAMETER
    );
    r.set_scanout(&s(0, 1, rect(0, 0, 32, 32))).unwrap();
    r.set_scanout(&s(1, 1, rect(8, 8, 16, 16))).unwrap();
    let f = |res: u32, rc: Rect| ResourceFlush {
        r: rc,
        resource_id: Le32::from(res),
        padding: Le32::from(0),
    };
    let pr = |x, y, width, height| PixelRect {
        x,
        y,
        width,
        height,
    };
    assert_eq!(
        r.flush(&f(1, rect(0, 0, 32, 32))).unwrap(),
        vec![(0, pr(0, 0, 32, 32)), (1, pr(0, 0, 16, 16))]
    );
    // Scanout 1 shows (8,8)-(24,24): a flush of (20,4)-(30,12) reaches
    // it as (12,0)-(16,4) in its own coordinates.
    assert_eq!(
        r.flush(&f(1, rect(20, 4, 10, 8))).unwrap(),
        vec![(0, pr(20, 4, 10, 8)), (1, pr(12, 0, 4, 4))]
    );
    // Outside what scanout 1 shows: only scanout 0.
    assert_eq!(
        r.flush(&f(1, rect(0, 0, 8, 32))).unwrap(),
        vec![(0, pr(0, 0, 8, 32))]
    );
    assert_eq!(
        code(r.flush(&f(1, rect(0, 0, 33, 1)))),
        RESP_ERR_INVALID_PARAMETER
    );
    assert_eq!(
        code(r.flush(&f(2, rect(0, 0, 1, 1)))),
        RESP_ERR_INVALID_RESOURCE_ID
    );
    // Resource 0 disables a scanout.
    r.set_scanout(&s(1, 0, rect(0, 0, 0, 0))).unwrap();
    assert_eq!(
        r.flush(&f(1, rect(0, 0, 32, 32))).unwrap(),
        vec![(0, pr(0, 0, 32, 32))]
    );
}

#[test]
fn backing_reads_find_their_range_and_stop_at_the_end() {
    let m = mem();
    let data: Vec<u8> = (0..=255u8).collect();
    m.write_slice(&data, GuestAddress(0x1000)).unwrap();
    // Three ranges of 100, 56 and 100 bytes, out of order in memory.
    let b = Backing::new(vec![
        (GuestAddress(0x1000), 100),
        (GuestAddress(0x1000 + 200), 56),
        (GuestAddress(0x1000 + 100), 100),
    ]);
    let mut out = [0u8; 10];
    assert!(b.read(&m, 95, &mut out));
    assert_eq!(&out[..5], &data[95..100]);
    assert_eq!(&out[5..], &data[200..205], "crosses into the second range");
    assert!(b.read(&m, 150, &mut out));
    assert_eq!(&out[..6], &data[250..256]);
    assert_eq!(&out[6..], &data[100..104], "crosses into the third range");
    assert!(b.read(&m, 246, &mut out), "ends exactly at the last byte");
    assert!(!b.read(&m, 247, &mut out), "one byte past the end");
    assert!(!b.read(&m, u64::MAX, &mut out));
    assert!(Backing::default().read(&m, 0, &mut []));
    assert!(!Backing::default().read(&m, 0, &mut out));
}

#[test]
fn pixel_memory_is_a_sealed_page_aligned_memfd() {
    for len in [1, 4096, 8 << 20] {
        let p = Pixels::new(len).unwrap();
        assert_eq!(p.as_slice().as_ptr() as usize % 4096, 0);
        assert_eq!(p.as_slice().len(), len);
        assert!(p.as_slice().iter().all(|b| *b == 0));
        let seals = fcntl(p.fd(), FcntlArg::F_GET_SEALS).unwrap();
        let want = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
        assert_eq!(SealFlag::from_bits_truncate(seals) & want, want);
        let size = nix::sys::stat::fstat(p.fd()).unwrap().st_size;
        assert_eq!(size as usize, len);
    }
    assert!(Pixels::new(usize::MAX).is_err());
}

#[test]
fn sharing_happens_once_and_unref_reports_it() {
    let mut r = res(1, 64 * MIB);
    r.create_2d(&create(4, 1, 16, 8)).unwrap();
    let shared = r.share(4).unwrap().unwrap();
    assert_eq!((shared.width, shared.height, shared.stride), (16, 8, 64));
    assert_eq!(r.share(4).unwrap(), None, "shared once");
    assert!(r.memfd(4).is_some());
    assert!(r.unref(4).unwrap().shared, "unref says it was shared");
    r.create_2d(&create(5, 1, 16, 8)).unwrap();
    assert!(!r.unref(5).unwrap().shared);
    assert_eq!(code(r.share(5)), RESP_ERR_INVALID_RESOURCE_ID);
}

#[test]
fn cursor_image_is_the_top_left_64x64() {
    let m = mem();
    let mut r = res(1, 64 * MIB);
    r.create_2d(&create(6, 1, 80, 2)).unwrap();
    let pattern: Vec<u8> = (0..80 * 2 * 4).map(|i| (i % 253) as u8).collect();
    m.write_slice(&pattern, GuestAddress(0x1000)).unwrap();
    r.attach_backing(&m, 6, &[entry(0x1000, pattern.len() as u32)])
        .unwrap();
    let t = TransferToHost2d {
        r: rect(0, 0, 80, 2),
        resource_id: Le32::from(6),
        ..TransferToHost2d::default()
    };
    r.transfer_to_host_2d(&m, &t).unwrap();
    let (format, image) = r.cursor_image(6).unwrap();
    assert_eq!(format, 1);
    assert_eq!(image.len(), CURSOR_BYTES);
    assert_eq!(&image[..256], &pattern[..256], "row 0, first 64 pixels");
    assert_eq!(&image[256..512], &pattern[320..576], "row 1");
    assert!(image[512..].iter().all(|b| *b == 0), "transparent below");
}

#[test]
fn cursor_checks() {
    let mut r = res(1, 64 * MIB);
    let c = |scanout: u32, res: u32| UpdateCursor {
        scanout_id: Le32::from(scanout),
        resource_id: Le32::from(res),
        ..UpdateCursor::default()
    };
    assert_eq!(
        code(r.update_cursor(&c(1, 0), false)),
        RESP_ERR_INVALID_SCANOUT_ID
    );
    assert_eq!(
        code(r.update_cursor(&c(1, 0), true)),
        RESP_ERR_INVALID_SCANOUT_ID
    );
    assert_eq!(
        code(r.update_cursor(&c(0, 3), false)),
        RESP_ERR_INVALID_RESOURCE_ID
    );
    r.create_2d(&create(3, 1, 64, 64)).unwrap();
    r.update_cursor(&c(0, 3), false).unwrap();
    r.update_cursor(&c(0, 0), false).unwrap();
    r.update_cursor(&c(0, 99), true).unwrap();
}

fn uuid_source(seed: u8) -> impl FnOnce() -> Result<[u8; 16], Refusal> {
    move || Ok([seed; 16])
}

/// RESOURCE_UNREF is one removal: the UUID goes with the resource, so a
/// resource re-created with a freed id gets a new one, and a guest that
/// cycles CREATE_2D, ASSIGN_UUID and UNREF leaves nothing behind.
#[test]
fn a_uuid_lives_and_dies_with_its_resource() {
    let mut r = res(1, 64 * MIB);
    for cycle in 0..20_000u32 {
        r.create_2d(&create(5, 1, 4, 4)).unwrap();
        let seed = (cycle % 250) as u8;
        assert_eq!(r.assign_uuid(5, uuid_source(seed)).unwrap(), [seed; 16]);
        // Asked again, the same one.
        assert_eq!(
            r.assign_uuid(5, uuid_source(seed.wrapping_add(1))).unwrap(),
            [seed; 16]
        );
        r.unref(5).unwrap();
        assert_eq!(r.count(), 0, "cycle {cycle} left an entry");
    }
    assert_eq!(r.used_bytes(), 0);
    assert_eq!(
        code(r.assign_uuid(5, uuid_source(1))),
        RESP_ERR_INVALID_RESOURCE_ID
    );
}

fn guest_blob(size: u64) -> Blob {
    Blob {
        size,
        guest: Some(vec![(GuestAddress(0x1000), size as u32)]),
    }
}

/// A blob is one entry like a 2D resource: its id is taken for both kinds,
/// its UUID and its charge go with one unref, and its shadow's pixels too.
#[test]
fn a_blob_is_one_entry_with_its_uuid_charge_and_shadow() {
    let m = mem();
    let mut r = res(1, 64 * MIB);
    r.reserve(4096).unwrap();
    r.add_blob(9, guest_blob(64 * 64 * 4), 4096);
    assert!(r.is_blob(9) && r.exists(9));
    assert_eq!(
        code(r.create_2d(&create(9, 1, 4, 4))),
        RESP_ERR_INVALID_RESOURCE_ID,
        "a blob's id is in use for 2D resources too"
    );
    assert_eq!(
        code(r.attach_backing(&m, 9, &[entry(0x1000, 4096)])),
        RESP_ERR_INVALID_RESOURCE_ID,
        "a blob has no 2D backing"
    );
    r.assign_uuid(9, uuid_source(7)).unwrap();
    let (was_shared, made) = r.blob_shadow(9, 64, 64, 1, 0, 256);
    assert!(!was_shared);
    made.unwrap();
    assert!(r.blob_is_shown(9));
    assert_eq!(r.used_bytes(), 4096 + 64 * 64 * 4);
    r.show(0, 9, &rect(0, 0, 64, 64)).unwrap();
    assert!(r.share(9).unwrap().is_some());
    let gone = r.unref(9).unwrap();
    assert!(gone.rendered && gone.shared);
    assert_eq!(r.used_bytes(), 0, "the blob's charge and its shadow's");
    assert_eq!(r.count(), 0);
    assert!(r.scanout(0).is_none());
    // The id is free for a new resource, with a UUID of its own.
    r.create_2d(&create(9, 1, 4, 4)).unwrap();
    assert_eq!(r.assign_uuid(9, uuid_source(8)).unwrap(), [8; 16]);
}

/// A new layout replaces a blob's shadow: the old one's pixels are
/// released, and its having been shared is reported.
#[test]
fn a_new_shadow_layout_replaces_the_old_copy() {
    let mut r = res(1, 64 * MIB);
    r.add_blob(3, guest_blob(64 * 64 * 4), 0);
    r.blob_shadow(3, 64, 64, 1, 0, 256).1.unwrap();
    r.share(3).unwrap();
    let (unchanged, made) = r.blob_shadow(3, 64, 64, 1, 0, 256);
    assert!(!unchanged && made.is_ok(), "the same layout keeps the copy");
    let (was_shared, made) = r.blob_shadow(3, 32, 32, 1, 0, 256);
    assert!(was_shared);
    made.unwrap();
    assert_eq!(r.used_bytes(), 32 * 32 * 4);
    // A host blob has no pages to copy from.
    r.add_blob(
        4,
        Blob {
            size: 4096,
            guest: None,
        },
        0,
    );
    assert_eq!(code(r.blob_shadow(4, 32, 32, 1, 0, 128).1), RESP_ERR_UNSPEC);
}
