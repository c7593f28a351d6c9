//! Contexts and blob resources through the real three processes, with the
//! harness as a front-end that implements SHMEM_MAP/UNMAP for real: a
//! cross-domain context (no compositor: channel type 0) asks rutabaga for
//! an image's memory requirements through its query ring, a host blob is
//! created from them and mapped into the host-visible region, and the
//! bytes written on the host side are the bytes the guest reads there.

use std::fs;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use harness::shmem::ShmemEvent;
use harness::*;
use vm_memory::{Bytes, GuestAddress};

const CTX: u32 = 1;
const CAPSET_CROSS_DOMAIN: u32 = 5;
const BLOB_MEM_GUEST: u32 = 1;
const BLOB_MEM_HOST3D: u32 = 2;
const BLOB_FLAG_MAPPABLE: u32 = 1;
/// Shareable: rutabaga keeps its handle when it exports one (otherwise it
/// hands over its only one, and the host side is the mapping alone).
const BLOB_FLAG_SHAREABLE: u32 = 2;
/// Guest pages for the query ring.
const RING_AT: u64 = 0x40_0000;
/// DRM_FORMAT_XRGB8888.
const XRGB8888: u32 = u32::from_le_bytes(*b"XR24");

/// A header naming context `ctx` (with a fence on `ring` if given).
fn hdr(type_: u32, ctx: u32, fence: Option<(u64, Option<u8>)>) -> Vec<u8> {
    let mut flags = 0u32;
    let (mut fence_id, mut ring_idx) = (0u64, 0u8);
    if let Some((id, ring)) = fence {
        flags |= FLAG_FENCE;
        fence_id = id;
        if let Some(r) = ring {
            flags |= FLAG_INFO_RING_IDX;
            ring_idx = r;
        }
    }
    let mut v = Vec::with_capacity(24);
    v.extend_from_slice(&type_.to_le_bytes());
    v.extend_from_slice(&flags.to_le_bytes());
    v.extend_from_slice(&fence_id.to_le_bytes());
    v.extend_from_slice(&ctx.to_le_bytes());
    v.extend_from_slice(&[ring_idx, 0, 0, 0]);
    v
}

fn words(mut v: Vec<u8>, body: &[u32]) -> Vec<u8> {
    for w in body {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v
}

fn ctx_create(ctx: u32, context_init: u32, name: &str) -> Vec<u8> {
    let mut v = words(
        hdr(CMD_CTX_CREATE, ctx, None),
        &[name.len() as u32, context_init],
    );
    let mut debug_name = [0u8; 64];
    debug_name[..name.len()].copy_from_slice(name.as_bytes());
    v.extend_from_slice(&debug_name);
    v
}

#[allow(clippy::too_many_arguments)]
fn create_blob(
    ctx: u32,
    id: u32,
    blob_mem: u32,
    flags: u32,
    blob_id: u64,
    size: u64,
    entries: &[(u64, u32)],
) -> Vec<u8> {
    let mut v = words(
        hdr(CMD_RESOURCE_CREATE_BLOB, ctx, None),
        &[id, blob_mem, flags, entries.len() as u32],
    );
    v.extend_from_slice(&blob_id.to_le_bytes());
    v.extend_from_slice(&size.to_le_bytes());
    for (addr, len) in entries {
        v.extend_from_slice(&addr.to_le_bytes());
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
    }
    v
}

fn submit(ctx: u32, commands: &[u8], fence: Option<(u64, Option<u8>)>) -> Vec<u8> {
    let mut v = words(hdr(CMD_SUBMIT_3D, ctx, fence), &[commands.len() as u32, 0]);
    v.extend_from_slice(commands);
    v
}

/// A cross-domain command: its 8-byte header, then `body` words.
fn cross_domain(cmd: u8, body: &[u32], tail: &[u8]) -> Vec<u8> {
    let size = 8 + body.len() * 4 + tail.len();
    let mut v = vec![cmd, 0];
    v.extend_from_slice(&(size as u16).to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    for w in body {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v.extend_from_slice(tail);
    v
}

fn map_blob(id: u32, offset: u64) -> Vec<u8> {
    let mut v = words(hdr(CMD_RESOURCE_MAP_BLOB, 0, None), &[id, 0]);
    v.extend_from_slice(&offset.to_le_bytes());
    v
}

/// Sends a request and returns the response's type (any length).
fn code(dev: &mut Device, request: &[u8]) -> u32 {
    let (_, resp) = dev.control(request, 1024);
    parse_hdr(&resp).0
}

/// A cross-domain context with its query ring, initialised without a
/// channel; returns the memory requirements rutabaga wrote to the ring for
/// a `w`×`h` XRGB8888 image: (blob_id, size, map_info).
fn image_requirements(dev: &mut Device, w: u32, h: u32) -> (u32, u64, u32) {
    assert_eq!(
        code(dev, &ctx_create(CTX, CAPSET_CROSS_DOMAIN, "test")),
        RESP_OK_NODATA
    );
    assert_eq!(
        code(
            dev,
            // As Linux sends it: a guest-memory blob names no context.
            &create_blob(0, 10, BLOB_MEM_GUEST, 0, 0, 4096, &[(RING_AT, 4096)])
        ),
        RESP_OK_NODATA
    );
    assert_eq!(
        code(
            dev,
            &words(hdr(CMD_CTX_ATTACH_RESOURCE, CTX, None), &[10, 0])
        ),
        RESP_OK_NODATA
    );
    // CROSS_DOMAIN_CMD_INIT: query ring 10, no channel ring, channel type 0.
    let init = cross_domain(1, &[10, 0, 0], &[0; 16]);
    assert_eq!(code(dev, &submit(CTX, &init, None)), RESP_OK_NODATA);
    // CROSS_DOMAIN_CMD_GET_IMAGE_REQUIREMENTS, fenced on the query ring:
    // the fence signals once the answer is in the ring.
    let reqs = cross_domain(2, &[w, h, XRGB8888, 0], &[]);
    let (_, resp) = dev.control(&submit(CTX, &reqs, Some((7, Some(0)))), 64);
    assert_eq!(
        parse_hdr(&resp),
        (RESP_OK_NODATA, FLAG_FENCE | FLAG_INFO_RING_IDX, 7)
    );
    // struct CrossDomainImageRequirements: strides[4], offsets[4],
    // modifier, size, blob_id, map_info, ...
    let mut ring = [0u8; 64];
    dev.mem
        .read_slice(&mut ring, GuestAddress(RING_AT))
        .unwrap();
    let u32_at = |o: usize| u32::from_le_bytes(ring[o..o + 4].try_into().unwrap());
    let size = u64::from_le_bytes(ring[40..48].try_into().unwrap());
    assert_eq!(u32_at(0), w * 4, "the stride rutabaga chose");
    (u32_at(48), size, u32_at(52))
}

/// The descriptor of render-worker's memfd named `name`, opened through
/// /proc (the test runs as the same user; the host side of the blob).
fn render_worker_memfd(backend: &Backend, name: &str) -> fs::File {
    let pid = backend.worker_pids().1;
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let path = entry.unwrap().path();
        let target = fs::read_link(&path).map(|t| t.display().to_string());
        if target.is_ok_and(|t| t.contains(name)) {
            return fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
        }
    }
    panic!("render-worker holds no memfd named {name}");
}

#[test]
fn a_host_blob_is_mapped_into_the_guest_region_and_out_again() {
    let backend = Backend::start(&[]);
    let mut dev = Device::connect(&backend.socket);
    let region = dev.shmem.clone().expect("SHMEM negotiated");

    // The capset the device offers: cross-domain.
    let (_, resp) = dev.control(&words(hdr(CMD_GET_CAPSET_INFO, 0, None), &[0, 0]), 64);
    let word = |r: &[u8], o: usize| u32::from_le_bytes(r[o..o + 4].try_into().unwrap());
    assert_eq!(parse_hdr(&resp).0, RESP_OK_CAPSET_INFO);
    assert_eq!(word(&resp, 24), CAPSET_CROSS_DOMAIN);
    let capset_size = word(&resp, 32);
    let (len, resp) = dev.control(
        &words(hdr(CMD_GET_CAPSET, 0, None), &[CAPSET_CROSS_DOMAIN, 0]),
        1024,
    );
    assert_eq!(parse_hdr(&resp).0, RESP_OK_CAPSET);
    assert_eq!(len, 24 + capset_size, "header and the capset");
    assert_eq!(word(&resp, 24), 1, "cross-domain capabilities version 1");

    let (blob_id, size, map_info) = image_requirements(&mut dev, 64, 64);
    assert!(size >= 64 * 64 * 4 && size.is_multiple_of(4096), "{size}");
    assert_eq!(map_info & 0xf, 1, "VIRTIO_GPU_MAP_CACHE_CACHED");

    // A host blob from those requirements, mapped at 64 KiB.
    assert_eq!(
        code(
            &mut dev,
            &create_blob(
                CTX,
                11,
                BLOB_MEM_HOST3D,
                BLOB_FLAG_MAPPABLE | BLOB_FLAG_SHAREABLE,
                u64::from(blob_id),
                size,
                &[]
            )
        ),
        RESP_OK_NODATA
    );
    let offset = 0x1_0000;
    let (len, resp) = dev.control(&map_blob(11, offset), 64);
    assert_eq!((len, parse_hdr(&resp).0), (32, RESP_OK_MAP_INFO));
    assert_eq!(word(&resp, 24), 1, "map_info: cached");
    assert_eq!(
        region.events(),
        [ShmemEvent::Map {
            offset,
            len: size,
            writable: true
        }]
    );
    assert!(region.backing_name(offset).contains("rutabaga_gralloc"));

    // Host side → guest side, and back.
    let host = render_worker_memfd(&backend, "rutabaga_gralloc");
    let pattern: Vec<u8> = (0..size).map(|i| (i * 13 % 251) as u8).collect();
    host.write_all_at(&pattern, 0).unwrap();
    assert_eq!(region.read(offset, size as usize).unwrap(), pattern);
    assert!(region.write(offset + 100, b"written by the guest"));
    let mut back = [0u8; 20];
    host.read_exact_at(&mut back, 100).unwrap();
    assert_eq!(&back, b"written by the guest");

    // UUIDs: one per resource, stable, version 4.
    let uuid = |dev: &mut Device, id: u32| {
        let (_, r) = dev.control(&words(hdr(CMD_RESOURCE_ASSIGN_UUID, 0, None), &[id, 0]), 64);
        assert_eq!(parse_hdr(&r).0, RESP_OK_RESOURCE_UUID);
        r[24..40].to_vec()
    };
    let u = uuid(&mut dev, 11);
    assert_eq!(u, uuid(&mut dev, 11));
    assert_eq!(u[6] >> 4, 4);
    assert_ne!(u, uuid(&mut dev, 10));

    // Unmap: the front-end really unmaps.
    assert_eq!(
        code(
            &mut dev,
            &words(hdr(CMD_RESOURCE_UNMAP_BLOB, 0, None), &[11, 0])
        ),
        RESP_OK_NODATA
    );
    assert_eq!(
        region.events().last(),
        Some(&ShmemEvent::Unmap { offset, len: size })
    );
    assert_eq!(region.backing_name(offset), "", "back to the reservation");
    assert!(region.read(offset, 1).is_none());

    // A mapped blob is unmapped before its unref. (Requirements stay
    // usable: a second blob from them is a second allocation.)
    assert_eq!(
        code(
            &mut dev,
            &create_blob(
                CTX,
                12,
                BLOB_MEM_HOST3D,
                BLOB_FLAG_MAPPABLE,
                u64::from(blob_id),
                size,
                &[]
            )
        ),
        RESP_OK_NODATA
    );
    assert_eq!(code(&mut dev, &map_blob(12, 0)), RESP_OK_MAP_INFO);
    assert_eq!(
        code(&mut dev, &cmd(CMD_RESOURCE_UNREF, &[12, 0])),
        RESP_OK_NODATA
    );
    assert_eq!(
        region.events()[2..],
        [
            ShmemEvent::Map {
                offset: 0,
                len: size,
                writable: true
            },
            ShmemEvent::Unmap {
                offset: 0,
                len: size
            }
        ]
    );
    assert_eq!(
        code(&mut dev, &cmd(CMD_RESOURCE_UNREF, &[11, 0])),
        RESP_OK_NODATA
    );
    assert_eq!(
        code(&mut dev, &cmd(CMD_RESOURCE_UNREF, &[10, 0])),
        RESP_OK_NODATA
    );
    assert_eq!(
        code(&mut dev, &hdr(CMD_CTX_DESTROY, CTX, None)),
        RESP_OK_NODATA
    );
    assert!(backend
        .log
        .wait_for(&["mapped resource 11"], Duration::from_secs(5))
        .is_some());
}

#[test]
fn bad_blob_and_context_requests_get_the_spec_codes() {
    let backend = Backend::start(&[]);
    let mut dev = Device::connect(&backend.socket);
    let region = dev.shmem.clone().unwrap();
    // 64x64: four pages, so a map one page in overlaps.
    let (blob_id, size, _) = image_requirements(&mut dev, 64, 64);
    let host_blob = |id: u32| {
        create_blob(
            CTX,
            id,
            BLOB_MEM_HOST3D,
            BLOB_FLAG_MAPPABLE,
            u64::from(blob_id),
            size,
            &[],
        )
    };
    assert_eq!(code(&mut dev, &host_blob(20)), RESP_OK_NODATA);
    assert_eq!(code(&mut dev, &map_blob(20, 0x20_000)), RESP_OK_MAP_INFO);

    let cases: Vec<(&str, Vec<u8>, u32)> = vec![
        (
            "context id 0",
            ctx_create(0, CAPSET_CROSS_DOMAIN, ""),
            RESP_ERR_INVALID_CONTEXT_ID,
        ),
        (
            "context already exists",
            ctx_create(CTX, CAPSET_CROSS_DOMAIN, ""),
            RESP_ERR_INVALID_CONTEXT_ID,
        ),
        (
            "unknown context",
            hdr(CMD_CTX_DESTROY, 99, None),
            RESP_ERR_INVALID_CONTEXT_ID,
        ),
        (
            "submit to context 0",
            submit(0, &[0; 8], None),
            RESP_ERR_INVALID_CONTEXT_ID,
        ),
        (
            "submit to unknown context",
            submit(99, &[0; 8], None),
            RESP_ERR_INVALID_CONTEXT_ID,
        ),
        (
            "capset index past the end",
            words(hdr(CMD_GET_CAPSET_INFO, 0, None), &[1, 0]),
            RESP_ERR_INVALID_PARAMETER,
        ),
        (
            "SUBMIT_3D larger than its descriptor",
            words(hdr(CMD_SUBMIT_3D, CTX, None), &[4096, 0]),
            RESP_ERR_INVALID_PARAMETER,
        ),
        (
            "blob of 0 bytes",
            create_blob(0, 21, BLOB_MEM_GUEST, 0, 0, 0, &[(RING_AT, 4096)]),
            RESP_ERR_INVALID_PARAMETER,
        ),
        (
            "guest blob outside guest memory",
            create_blob(
                CTX,
                21,
                BLOB_MEM_GUEST,
                0,
                0,
                4096,
                &[(GUEST_MEM_SIZE as u64, 4096)],
            ),
            RESP_ERR_INVALID_PARAMETER,
        ),
        (
            "blob id in use",
            create_blob(0, 20, BLOB_MEM_GUEST, 0, 0, 4096, &[(RING_AT, 4096)]),
            RESP_ERR_INVALID_RESOURCE_ID,
        ),
        (
            "map over a mapping",
            map_blob(20, 0x20_000),
            RESP_ERR_INVALID_PARAMETER,
        ),
        (
            "map of an unknown resource",
            map_blob(77, 0x80_000),
            RESP_ERR_INVALID_RESOURCE_ID,
        ),
        (
            "map of a guest blob (not mappable)",
            map_blob(10, 0x80_000),
            RESP_ERR_INVALID_PARAMETER,
        ),
        (
            "unmap of a blob not mapped",
            words(hdr(CMD_RESOURCE_UNMAP_BLOB, 0, None), &[10, 0]),
            RESP_ERR_INVALID_PARAMETER,
        ),
    ];
    for (what, request, want) in cases {
        assert_eq!(code(&mut dev, &request), want, "{what}");
    }

    // Offsets the broker refuses before the front-end hears of them: each
    // needs a fresh blob (one mapping per blob). Overlapping, unaligned,
    // wrapping, past the region.
    for (i, offset) in [0x20_000 + 4096, 0x80_001, u64::MAX - 4095, region.size()]
        .into_iter()
        .enumerate()
    {
        let (blob_id, size, _) = {
            // New requirements for a new blob from the same context.
            let reqs = cross_domain(2, &[64, 64, XRGB8888, 0], &[]);
            assert_eq!(code(&mut dev, &submit(CTX, &reqs, None)), RESP_OK_NODATA);
            let mut ring = [0u8; 64];
            dev.mem
                .read_slice(&mut ring, GuestAddress(RING_AT))
                .unwrap();
            (
                u32::from_le_bytes(ring[48..52].try_into().unwrap()),
                u64::from_le_bytes(ring[40..48].try_into().unwrap()),
                (),
            )
        };
        let id = 30 + i as u32;
        assert_eq!(
            code(
                &mut dev,
                &create_blob(
                    CTX,
                    id,
                    BLOB_MEM_HOST3D,
                    BLOB_FLAG_MAPPABLE,
                    u64::from(blob_id),
                    size,
                    &[]
                )
            ),
            RESP_OK_NODATA
        );
        assert_eq!(
            code(&mut dev, &map_blob(id, offset)),
            RESP_ERR_INVALID_PARAMETER,
            "offset {offset:#x}"
        );
    }
    // The front-end saw only the one good map.
    assert_eq!(region.events().len(), 1, "{:?}", region.events());
    for refusal in ["overlaps", "not a multiple", "wraps", "past the"] {
        assert!(
            backend
                .log
                .wait_for(&[refusal], Duration::from_secs(5))
                .is_some(),
            "the broker logged why ({refusal})"
        );
    }
    // Still serving.
    assert_eq!(
        code(
            &mut dev,
            &words(hdr(CMD_RESOURCE_UNMAP_BLOB, 0, None), &[20, 0])
        ),
        RESP_OK_NODATA
    );
}

/// QEMU 10 negotiates the back-end request channel but not SHMEM: a map
/// request gets an error response and a log line saying why, and the rest
/// of the device (contexts, blobs, 2D) works on.
#[test]
fn without_shmem_a_map_is_refused_and_nothing_else_breaks() {
    let backend = Backend::start(&[]);
    let mut dev = Device::connect_without_shmem(&backend.socket);
    assert!(dev.shmem.is_none());
    let (blob_id, size, _) = image_requirements(&mut dev, 64, 64);
    assert_eq!(
        code(
            &mut dev,
            &create_blob(
                CTX,
                11,
                BLOB_MEM_HOST3D,
                BLOB_FLAG_MAPPABLE | BLOB_FLAG_SHAREABLE,
                u64::from(blob_id),
                size,
                &[]
            )
        ),
        RESP_OK_NODATA
    );
    assert_eq!(code(&mut dev, &map_blob(11, 0)), RESP_ERR_INVALID_PARAMETER);
    assert!(backend
        .log
        .wait_for(&["did not negotiate SHMEM"], Duration::from_secs(5))
        .is_some());
    assert_eq!(
        code(&mut dev, &cmd(CMD_RESOURCE_UNREF, &[11, 0])),
        RESP_OK_NODATA
    );
    assert_eq!(
        code(&mut dev, &cmd(CMD_RESOURCE_CREATE_2D, &[12, 1, 16, 16])),
        RESP_OK_NODATA
    );
}
