//! Decoding: the bytes that follow a request's header become one
//! [`GpuCommand`], or a [`Refusal`] with the response code the spec gives
//! a malformed request. Only shape is checked here (bodies long enough,
//! announced entries present, counts within gpu-airlock's limits); what a
//! command means for the device's state is its handler's business.

use std::io::Read;

use virtio_queue::Reader;
use vm_memory::ByteValued;

use crate::layout::*;
use crate::*;

/// Which virtqueue a chain came from (spec 5.7.2: controlq and cursorq).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    Control,
    Cursor,
}

/// Most backing entries one RESOURCE_ATTACH_BACKING may carry: 2^18
/// entries of 16 bytes (4 MiB of request), far more than any real
/// resource needs (Linux sends one per page run).
pub const MAX_BACKING_ENTRIES: u32 = 1 << 18;
/// Most guest memory entries one blob may have (they cross to
/// render-worker in one ipc frame).
pub const MAX_BLOB_ENTRIES: usize = 2048;
/// Most bytes of one SUBMIT_3D: 1 MiB. Mesa's virgl driver flushes its
/// command buffer at 256 KiB, and a texture upload travels inline in it;
/// a stream past one ipc frame crosses to render-worker through a shared
/// buffer of this size (see gpu-worker's `submit`).
pub const MAX_SUBMIT_BYTES: usize = 1 << 20;

/// One request, decoded. Context commands act on the header's `ctx_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuCommand {
    GetDisplayInfo,
    GetEdid {
        scanout: u32,
    },
    ResourceCreate2d(ResourceCreate2d),
    ResourceUnref {
        resource_id: u32,
    },
    SetScanout(SetScanout),
    ResourceFlush(ResourceFlush),
    TransferToHost2d(TransferToHost2d),
    AttachBacking {
        resource_id: u32,
        entries: Vec<MemEntry>,
    },
    DetachBacking {
        resource_id: u32,
    },
    AssignUuid {
        resource_id: u32,
    },
    GetCapsetInfo {
        index: u32,
    },
    GetCapset {
        id: u32,
        version: u32,
    },
    CtxCreate {
        context_init: u32,
        /// The debug name, up to its announced length (lossy UTF-8).
        name: String,
    },
    CtxDestroy,
    CtxAttachResource {
        resource_id: u32,
    },
    CtxDetachResource {
        resource_id: u32,
    },
    Submit3d {
        commands: Vec<u8>,
    },
    ResourceCreate3d(ResourceCreate3d),
    /// TRANSFER_TO_HOST_3D (`to_host`) or TRANSFER_FROM_HOST_3D.
    Transfer3d {
        transfer: TransferHost3d,
        to_host: bool,
    },
    CreateBlob {
        blob: ResourceCreateBlob,
        entries: Vec<MemEntry>,
    },
    SetScanoutBlob(SetScanoutBlob),
    MapBlob {
        resource_id: u32,
        offset: u64,
    },
    UnmapBlob {
        resource_id: u32,
    },
    UpdateCursor(UpdateCursor),
    MoveCursor(UpdateCursor),
}

/// A virtio-gpu feature a command needs the driver to have acked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feature {
    /// Its bit in the device features.
    pub bit: u32,
    /// Its name in the spec, for log lines.
    pub name: &'static str,
}

const EDID: Feature = Feature {
    bit: F_EDID,
    name: "EDID",
};
const RESOURCE_UUID: Feature = Feature {
    bit: F_RESOURCE_UUID,
    name: "RESOURCE_UUID",
};
const RESOURCE_BLOB: Feature = Feature {
    bit: F_RESOURCE_BLOB,
    name: "RESOURCE_BLOB",
};
const VIRGL: Feature = Feature {
    bit: F_VIRGL,
    name: "VIRGL",
};

/// Reads a command's body; a request too short for it is refused.
fn body<T: ByteValued>(reader: &mut Reader<'_>) -> Result<T, Refusal> {
    reader.read_obj::<T>().map_err(|_| {
        Refusal::invalid(format!(
            "request too short for its {}-byte body",
            std::mem::size_of::<T>()
        ))
    })
}

/// Reads `n` memory entries, refusing a request that does not hold them.
fn entries(reader: &mut Reader<'_>, n: usize) -> Result<Vec<MemEntry>, Refusal> {
    if reader.available_bytes() < n * std::mem::size_of::<MemEntry>() {
        return Err(Refusal::invalid(format!(
            "{n} entries announced, {} bytes follow",
            reader.available_bytes()
        )));
    }
    (0..n)
        .map(|_| reader.read_obj::<MemEntry>())
        .collect::<Result<_, _>>()
        .map_err(|_| Refusal::invalid("memory entries could not be read"))
}

impl GpuCommand {
    /// Decodes the request whose header is `hdr` from the rest of the
    /// chain's readable part. A command on the wrong queue is unknown
    /// there.
    pub fn decode(
        queue: Queue,
        hdr: &CtrlHdr,
        reader: &mut Reader<'_>,
    ) -> Result<GpuCommand, Refusal> {
        let cmd = hdr.type_.to_native();
        Ok(match (queue, cmd) {
            (Queue::Control, CMD_GET_DISPLAY_INFO) => GpuCommand::GetDisplayInfo,
            (Queue::Control, CMD_GET_EDID) => {
                let b: GetEdid = body(reader)?;
                GpuCommand::GetEdid {
                    scanout: b.scanout.to_native(),
                }
            }
            (Queue::Control, CMD_RESOURCE_CREATE_2D) => GpuCommand::ResourceCreate2d(body(reader)?),
            (Queue::Control, CMD_RESOURCE_UNREF) => GpuCommand::ResourceUnref {
                resource_id: body::<ResourceId>(reader)?.resource_id.to_native(),
            },
            (Queue::Control, CMD_SET_SCANOUT) => GpuCommand::SetScanout(body(reader)?),
            (Queue::Control, CMD_RESOURCE_FLUSH) => GpuCommand::ResourceFlush(body(reader)?),
            (Queue::Control, CMD_TRANSFER_TO_HOST_2D) => {
                GpuCommand::TransferToHost2d(body(reader)?)
            }
            (Queue::Control, CMD_RESOURCE_ATTACH_BACKING) => {
                let a: AttachBacking = body(reader)?;
                let n = a.nr_entries.to_native();
                if n == 0 || n > MAX_BACKING_ENTRIES {
                    return Err(Refusal::invalid(format!(
                        "{n} backing entries (1 to {MAX_BACKING_ENTRIES} allowed)"
                    )));
                }
                GpuCommand::AttachBacking {
                    resource_id: a.resource_id.to_native(),
                    entries: entries(reader, n as usize)?,
                }
            }
            (Queue::Control, CMD_RESOURCE_DETACH_BACKING) => GpuCommand::DetachBacking {
                resource_id: body::<ResourceId>(reader)?.resource_id.to_native(),
            },
            (Queue::Control, CMD_RESOURCE_ASSIGN_UUID) => GpuCommand::AssignUuid {
                resource_id: body::<ResourceId>(reader)?.resource_id.to_native(),
            },
            (Queue::Control, CMD_GET_CAPSET_INFO) => GpuCommand::GetCapsetInfo {
                index: body::<GetCapsetInfo>(reader)?.capset_index.to_native(),
            },
            (Queue::Control, CMD_GET_CAPSET) => {
                let b: GetCapset = body(reader)?;
                GpuCommand::GetCapset {
                    id: b.capset_id.to_native(),
                    version: b.capset_version.to_native(),
                }
            }
            (Queue::Control, CMD_CTX_CREATE) => {
                let b: CtxCreate = body(reader)?;
                let nlen = (b.nlen.to_native() as usize).min(b.debug_name.len());
                GpuCommand::CtxCreate {
                    context_init: b.context_init.to_native(),
                    name: String::from_utf8_lossy(&b.debug_name[..nlen]).into_owned(),
                }
            }
            (Queue::Control, CMD_CTX_DESTROY) => GpuCommand::CtxDestroy,
            (Queue::Control, CMD_CTX_ATTACH_RESOURCE) => GpuCommand::CtxAttachResource {
                resource_id: body::<CtxResource>(reader)?.resource_id.to_native(),
            },
            (Queue::Control, CMD_CTX_DETACH_RESOURCE) => GpuCommand::CtxDetachResource {
                resource_id: body::<CtxResource>(reader)?.resource_id.to_native(),
            },
            (Queue::Control, CMD_SUBMIT_3D) => {
                let b: CmdSubmit = body(reader)?;
                let size = b.size.to_native() as usize;
                if size > reader.available_bytes() {
                    return Err(Refusal::invalid(format!(
                        "SUBMIT_3D of {size} bytes, {} follow",
                        reader.available_bytes()
                    )));
                }
                if size > MAX_SUBMIT_BYTES {
                    return Err(Refusal::invalid(format!(
                        "SUBMIT_3D of {size} bytes (at most {MAX_SUBMIT_BYTES})"
                    )));
                }
                let mut commands = vec![0u8; size];
                reader
                    .read_exact(&mut commands)
                    .map_err(|_| Refusal::invalid("SUBMIT_3D commands could not be read"))?;
                GpuCommand::Submit3d { commands }
            }
            (Queue::Control, CMD_RESOURCE_CREATE_BLOB) => {
                let blob: ResourceCreateBlob = body(reader)?;
                let n = blob.nr_entries.to_native() as usize;
                if n > MAX_BLOB_ENTRIES {
                    return Err(Refusal::invalid(format!(
                        "{n} memory entries (1 to {MAX_BLOB_ENTRIES})"
                    )));
                }
                GpuCommand::CreateBlob {
                    blob,
                    entries: entries(reader, n)?,
                }
            }
            (Queue::Control, CMD_SET_SCANOUT_BLOB) => GpuCommand::SetScanoutBlob(body(reader)?),
            (Queue::Control, CMD_RESOURCE_MAP_BLOB) => {
                let b: ResourceMapBlob = body(reader)?;
                GpuCommand::MapBlob {
                    resource_id: b.resource_id.to_native(),
                    offset: b.offset.to_native(),
                }
            }
            (Queue::Control, CMD_RESOURCE_UNMAP_BLOB) => GpuCommand::UnmapBlob {
                resource_id: body::<ResourceId>(reader)?.resource_id.to_native(),
            },
            (Queue::Cursor, CMD_UPDATE_CURSOR) => GpuCommand::UpdateCursor(body(reader)?),
            (Queue::Cursor, CMD_MOVE_CURSOR) => GpuCommand::MoveCursor(body(reader)?),
            (Queue::Control, CMD_RESOURCE_CREATE_3D) => GpuCommand::ResourceCreate3d(body(reader)?),
            (Queue::Control, CMD_TRANSFER_TO_HOST_3D) => GpuCommand::Transfer3d {
                transfer: body(reader)?,
                to_host: true,
            },
            (Queue::Control, CMD_TRANSFER_FROM_HOST_3D) => GpuCommand::Transfer3d {
                transfer: body(reader)?,
                to_host: false,
            },
            _ => return refuse(RESP_ERR_UNSPEC, "not a command of this queue"),
        })
    }

    /// The feature the driver must have acked for the device to serve the
    /// command, if any.
    pub fn required_feature(&self) -> Option<Feature> {
        use GpuCommand::*;
        match self {
            GetEdid { .. } => Some(EDID),
            AssignUuid { .. } => Some(RESOURCE_UUID),
            CreateBlob { .. } | SetScanoutBlob(_) | MapBlob { .. } | UnmapBlob { .. } => {
                Some(RESOURCE_BLOB)
            }
            CtxCreate { .. }
            | CtxDestroy
            | CtxAttachResource { .. }
            | CtxDetachResource { .. }
            | Submit3d { .. }
            | ResourceCreate3d(_)
            | Transfer3d { .. } => Some(VIRGL),
            GetDisplayInfo
            | ResourceCreate2d(_)
            | ResourceUnref { .. }
            | SetScanout(_)
            | ResourceFlush(_)
            | TransferToHost2d(_)
            | AttachBacking { .. }
            | DetachBacking { .. }
            | GetCapsetInfo { .. }
            | GetCapset { .. }
            | UpdateCursor(_)
            | MoveCursor(_) => None,
        }
    }

    /// Whether a context fence the command carries is the context's (the
    /// command is served by render-worker's rutabaga, or beside it, and
    /// render-worker signals the fence), rather than signalled by the
    /// response itself.
    pub fn is_context_command(&self) -> bool {
        use GpuCommand::*;
        match self {
            GetCapsetInfo { .. }
            | GetCapset { .. }
            | CtxCreate { .. }
            | CtxDestroy
            | CtxAttachResource { .. }
            | CtxDetachResource { .. }
            | Submit3d { .. }
            | ResourceCreate3d(_)
            | Transfer3d { .. }
            | CreateBlob { .. }
            | MapBlob { .. }
            | UnmapBlob { .. }
            | AssignUuid { .. } => true,
            GetDisplayInfo
            | GetEdid { .. }
            | ResourceCreate2d(_)
            | ResourceUnref { .. }
            | SetScanout(_)
            | ResourceFlush(_)
            | TransferToHost2d(_)
            | AttachBacking { .. }
            | DetachBacking { .. }
            | SetScanoutBlob(_)
            | UpdateCursor(_)
            | MoveCursor(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::QueueOwnedT;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    /// Decodes `request` (a header and its body) as the guest laid it out.
    fn decode(queue: Queue, request: &[u8]) -> Result<GpuCommand, Refusal> {
        let mem: GuestMemoryMmap =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        mem.write_slice(request, GuestAddress(0x1000)).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        let d = Descriptor::new(0x1000, request.len() as u32, 0, 0);
        vq.desc_table().store(0, RawDescriptor::from(d)).unwrap();
        vq.avail().ring().ref_at(0).unwrap().store(0u16);
        vq.avail().idx().store(1u16);
        let mut q: virtio_queue::Queue = vq.create_queue().unwrap();
        let chain = q.iter(&mem).unwrap().next().unwrap();
        let mut reader = Reader::new(&mem, chain).unwrap();
        let hdr: CtrlHdr = reader.read_obj().unwrap();
        GpuCommand::decode(queue, &hdr, &mut reader)
    }

    fn request(type_: u32, body: &[u32]) -> Vec<u8> {
        let hdr = CtrlHdr {
            type_: type_.into(),
            ..Default::default()
        };
        let mut v = hdr.as_slice().to_vec();
        body.iter()
            .for_each(|w| v.extend_from_slice(&w.to_le_bytes()));
        v
    }

    #[test]
    fn each_command_decodes_from_its_layout() {
        assert_eq!(
            decode(Queue::Control, &request(CMD_GET_EDID, &[3, 0])),
            Ok(GpuCommand::GetEdid { scanout: 3 })
        );
        assert_eq!(
            decode(Queue::Control, &request(CMD_RESOURCE_UNREF, &[7, 0])),
            Ok(GpuCommand::ResourceUnref { resource_id: 7 })
        );
        let attach = request(CMD_RESOURCE_ATTACH_BACKING, &[5, 1, 0x2000, 0, 4096, 0]);
        match decode(Queue::Control, &attach) {
            Ok(GpuCommand::AttachBacking {
                resource_id: 5,
                entries,
            }) => {
                assert_eq!(entries.len(), 1);
                assert_eq!(entries[0].addr.to_native(), 0x2000);
                assert_eq!(entries[0].length.to_native(), 4096);
            }
            other => panic!("{other:?}"),
        }
        let mut submit = request(CMD_SUBMIT_3D, &[4, 0]);
        submit.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            decode(Queue::Control, &submit),
            Ok(GpuCommand::Submit3d {
                commands: vec![1, 2, 3, 4]
            })
        );
        let create = request(
            CMD_RESOURCE_CREATE_3D,
            &[9, 2, 1, 2, 64, 32, 1, 1, 0, 0, 0, 0],
        );
        match decode(Queue::Control, &create) {
            Ok(GpuCommand::ResourceCreate3d(c)) => {
                assert_eq!(c.resource_id.to_native(), 9);
                assert_eq!((c.width.to_native(), c.height.to_native()), (64, 32));
                assert_eq!(c.format.to_native(), 1);
            }
            other => panic!("{other:?}"),
        }
        // box 1,2,0 3x4x1, offset 256, resource 9, level 0, stride 256.
        let words = [1, 2, 0, 3, 4, 1, 256, 0, 9, 0, 256, 0];
        for (cmd, to_host) in [
            (CMD_TRANSFER_TO_HOST_3D, true),
            (CMD_TRANSFER_FROM_HOST_3D, false),
        ] {
            match decode(Queue::Control, &request(cmd, &words)) {
                Ok(GpuCommand::Transfer3d {
                    transfer: t,
                    to_host: got,
                }) => {
                    assert_eq!(got, to_host);
                    assert_eq!(t.resource_id.to_native(), 9);
                    assert_eq!(t.offset.to_native(), 256);
                    assert_eq!((t.box_.w.to_native(), t.box_.h.to_native()), (3, 4));
                    assert_eq!(t.stride.to_native(), 256);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn malformed_requests_get_the_specs_codes() {
        let code = |q, r: &[u8]| decode(q, r).unwrap_err().code;
        // Short bodies, missing entries or submit bytes: invalid parameter.
        assert_eq!(
            code(Queue::Control, &request(CMD_RESOURCE_CREATE_2D, &[1])),
            RESP_ERR_INVALID_PARAMETER
        );
        assert_eq!(
            code(
                Queue::Control,
                &request(CMD_RESOURCE_ATTACH_BACKING, &[5, 2, 0x2000, 0, 4096, 0])
            ),
            RESP_ERR_INVALID_PARAMETER
        );
        assert_eq!(
            code(
                Queue::Control,
                &request(CMD_RESOURCE_ATTACH_BACKING, &[5, MAX_BACKING_ENTRIES + 1])
            ),
            RESP_ERR_INVALID_PARAMETER
        );
        assert_eq!(
            code(Queue::Control, &request(CMD_SUBMIT_3D, &[8, 0, 1])),
            RESP_ERR_INVALID_PARAMETER
        );
        // 3D bodies cut short.
        for cmd in [
            CMD_RESOURCE_CREATE_3D,
            CMD_TRANSFER_TO_HOST_3D,
            CMD_TRANSFER_FROM_HOST_3D,
        ] {
            assert_eq!(
                code(Queue::Control, &request(cmd, &[0; 11])),
                RESP_ERR_INVALID_PARAMETER,
                "{cmd:#x}"
            );
        }
        // A command on the other queue, an unknown one: unspec.
        assert_eq!(
            code(Queue::Cursor, &request(CMD_GET_DISPLAY_INFO, &[])),
            RESP_ERR_UNSPEC
        );
        assert_eq!(
            code(Queue::Control, &request(CMD_UPDATE_CURSOR, &[0; 8])),
            RESP_ERR_UNSPEC
        );
        assert_eq!(code(Queue::Control, &request(0xdead, &[])), RESP_ERR_UNSPEC);
        assert_eq!(
            code(Queue::Cursor, &request(CMD_RESOURCE_CREATE_3D, &[0; 12])),
            RESP_ERR_UNSPEC
        );
    }
}
