//! Requests of the blob path, built as a guest driver lays them out, and
//! the cross-domain steps that produce a mappable blob without a
//! compositor (tests and the map-latency benchmark share them).

use vm_memory::{Bytes, GuestAddress};

use crate::gpu_wire::*;
use crate::Device;

pub const CTX: u32 = 1;
pub use wire::cross_domain::CAPSET_CROSS_DOMAIN;
pub const BLOB_MEM_GUEST: u32 = 1;
pub const BLOB_MEM_HOST3D: u32 = 2;
pub const BLOB_FLAG_MAPPABLE: u32 = 1;
/// Shareable: rutabaga keeps its handle when it exports one (otherwise it
/// hands over its only one, and the host side is the mapping alone).
pub const BLOB_FLAG_SHAREABLE: u32 = 2;
/// Guest pages for the query ring.
pub const RING_AT: u64 = 0x40_0000;
pub use wire::cross_domain::DRM_FORMAT_XRGB8888 as XRGB8888;

/// A header naming context `ctx` (with a fence on `ring` if given).
pub fn hdr(type_: u32, ctx: u32, fence: Option<(u64, Option<u8>)>) -> Vec<u8> {
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
    vm_memory::ByteValued::as_slice(&wire::CtrlHdr {
        type_: type_.into(),
        flags: flags.into(),
        fence_id: fence_id.into(),
        ctx_id: ctx.into(),
        ring_idx,
        padding: [0; 3],
    })
    .to_vec()
}

pub fn words(mut v: Vec<u8>, body: &[u32]) -> Vec<u8> {
    for w in body {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v
}

pub fn ctx_create(ctx: u32, context_init: u32, name: &str) -> Vec<u8> {
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
pub fn create_blob(
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

pub fn submit(ctx: u32, commands: &[u8], fence: Option<(u64, Option<u8>)>) -> Vec<u8> {
    let mut v = words(hdr(CMD_SUBMIT_3D, ctx, fence), &[commands.len() as u32, 0]);
    v.extend_from_slice(commands);
    v
}

/// A cross-domain command: its 8-byte header, then `body` words.
pub fn cross_domain(cmd: u8, body: &[u32], tail: &[u8]) -> Vec<u8> {
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

pub fn map_blob(id: u32, offset: u64) -> Vec<u8> {
    let mut v = words(hdr(CMD_RESOURCE_MAP_BLOB, 0, None), &[id, 0]);
    v.extend_from_slice(&offset.to_le_bytes());
    v
}

/// Sends a request and returns the response's type (any length).
pub fn code(dev: &mut Device, request: &[u8]) -> u32 {
    let (_, resp) = dev.control(request, 1024);
    parse_hdr(&resp).0
}

/// A cross-domain context with its query ring, initialised without a
/// channel; returns the memory requirements rutabaga wrote to the ring for
/// a `w`×`h` XRGB8888 image: (blob_id, size, map_info).
pub fn image_requirements(dev: &mut Device, w: u32, h: u32) -> (u32, u64, u32) {
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
    more_image_requirements(dev, w, h)
}

/// On a context [`image_requirements`] set up: asks again (a new blob id
/// each time) and returns (blob_id, size, map_info).
pub fn more_image_requirements(dev: &mut Device, w: u32, h: u32) -> (u32, u64, u32) {
    // CROSS_DOMAIN_CMD_GET_IMAGE_REQUIREMENTS, fenced on the query ring:
    // the fence signals once the answer is in the ring.
    let reqs = cross_domain(2, &[w, h, XRGB8888, 0], &[]);
    let (_, resp) = dev.control(&submit(CTX, &reqs, Some((7, Some(0)))), 64);
    assert_eq!(
        parse_hdr(&resp),
        (RESP_OK_NODATA, FLAG_FENCE | FLAG_INFO_RING_IDX, 7)
    );
    let r: wire::cross_domain::ImageRequirements = dev.mem.read_obj(GuestAddress(RING_AT)).unwrap();
    assert_eq!(r.strides[0].to_native(), w * 4, "the stride rutabaga chose");
    (
        r.blob_id.to_native(),
        r.size.to_native(),
        r.map_info.to_native(),
    )
}

/// RESOURCE_CREATE_BLOB of a mappable, shareable host blob `id` on [`CTX`]
/// from image requirements (`blob_id`, `size`).
pub fn host_blob(id: u32, blob_id: u32, size: u64) -> Vec<u8> {
    create_blob(
        CTX,
        id,
        BLOB_MEM_HOST3D,
        BLOB_FLAG_MAPPABLE | BLOB_FLAG_SHAREABLE,
        u64::from(blob_id),
        size,
        &[],
    )
}
