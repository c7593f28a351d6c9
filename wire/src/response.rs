//! Encoding: one [`GpuResponse`] written into a chain's writable part.
//!
//! A response that does not fit degrades to an ERR_UNSPEC header where
//! that fits, and to nothing where not even a header fits; the length
//! returned is the used entry's.

use std::io::Write;

use virtio_queue::Writer;
use vm_memory::{ByteValued, Le32};

use crate::layout::*;
use crate::*;

/// One response, before its header is filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuResponse {
    OkNoData,
    DisplayInfo(Box<RespDisplayInfo>),
    Edid(Box<RespEdid>),
    CapsetInfo {
        id: u32,
        max_version: u32,
        max_size: u32,
    },
    Capset(Vec<u8>),
    MapInfo(u32),
    Uuid([u8; 16]),
    /// An error response with this `RESP_ERR_*` code.
    Error(u32),
}

impl From<Refusal> for GpuResponse {
    fn from(r: Refusal) -> Self {
        GpuResponse::Error(r.code)
    }
}

/// The response header for `request`: a fenced request gets its fence
/// back (the response signals it).
pub fn reply_hdr(type_: u32, request: Option<&CtrlHdr>) -> CtrlHdr {
    let mut hdr = CtrlHdr {
        type_: Le32::from(type_),
        ..CtrlHdr::default()
    };
    let Some(request) = request else {
        return hdr;
    };
    let flags = request.flags.to_native();
    if flags & FLAG_FENCE != 0 {
        hdr.flags = Le32::from(flags & (FLAG_FENCE | FLAG_INFO_RING_IDX));
        hdr.fence_id = request.fence_id;
        hdr.ctx_id = request.ctx_id;
        if flags & FLAG_INFO_RING_IDX != 0 {
            hdr.ring_idx = request.ring_idx;
        }
    }
    hdr
}

/// Writes `resp` if it fits; otherwise an ERR_UNSPEC header if that fits;
/// otherwise nothing. Returns the bytes written.
fn write_fitting<R: ByteValued>(writer: &mut Writer<'_>, resp: &R) -> u32 {
    let fits = |n: usize| writer.available_bytes() >= n;
    let written = if fits(std::mem::size_of::<R>()) {
        writer.write_all(resp.as_slice())
    } else if fits(std::mem::size_of::<CtrlHdr>()) {
        writer.write_all(reply_hdr(RESP_ERR_UNSPEC, None).as_slice())
    } else {
        return 0;
    };
    match written {
        Ok(()) => used_len(writer),
        Err(_) => 0,
    }
}

fn used_len(writer: &Writer<'_>) -> u32 {
    u32::try_from(writer.bytes_written()).unwrap_or(u32::MAX)
}

impl GpuResponse {
    /// Writes the response to `request` (None: a request whose header
    /// could not be read) and returns the used entry's length.
    pub fn encode(&self, request: Option<&CtrlHdr>, writer: &mut Writer<'_>) -> u32 {
        let hdr = |type_| reply_hdr(type_, request);
        match self {
            GpuResponse::OkNoData => write_fitting(writer, &hdr(RESP_OK_NODATA)),
            GpuResponse::Error(code) => write_fitting(writer, &hdr(*code)),
            GpuResponse::DisplayInfo(r) => {
                let mut r = **r;
                r.hdr = hdr(RESP_OK_DISPLAY_INFO);
                write_fitting(writer, &r)
            }
            GpuResponse::Edid(r) => {
                let mut r = **r;
                r.hdr = hdr(RESP_OK_EDID);
                write_fitting(writer, &r)
            }
            GpuResponse::CapsetInfo {
                id,
                max_version,
                max_size,
            } => write_fitting(
                writer,
                &RespCapsetInfo {
                    hdr: hdr(RESP_OK_CAPSET_INFO),
                    capset_id: Le32::from(*id),
                    capset_max_version: Le32::from(*max_version),
                    capset_max_size: Le32::from(*max_size),
                    padding: Le32::from(0),
                },
            ),
            GpuResponse::Capset(bytes) => {
                if writer.available_bytes() < std::mem::size_of::<CtrlHdr>() + bytes.len() {
                    return write_fitting(writer, &hdr(RESP_ERR_UNSPEC));
                }
                let ok = writer.write_all(hdr(RESP_OK_CAPSET).as_slice()).is_ok()
                    && writer.write_all(bytes).is_ok();
                if ok {
                    used_len(writer)
                } else {
                    0
                }
            }
            GpuResponse::MapInfo(map_info) => write_fitting(
                writer,
                &RespMapInfo {
                    hdr: hdr(RESP_OK_MAP_INFO),
                    map_info: Le32::from(*map_info),
                    padding: Le32::from(0),
                },
            ),
            GpuResponse::Uuid(uuid) => write_fitting(
                writer,
                &RespResourceUuid {
                    hdr: hdr(RESP_OK_RESOURCE_UUID),
                    uuid: *uuid,
                },
            ),
        }
    }
}
