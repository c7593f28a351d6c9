//! Resources of virgl's kind (RESOURCE_CREATE_3D), their backing and
//! their transfers: checked here against what gpu-worker knows (ids, guest
//! memory, the resource's shape, `--max-resource-memory`), served by
//! rutabaga in render-worker.

use ipc::{Create3d, RenderRequest, Transfer3d};
use vm_memory::{GuestMemoryMmap, Le32, Permissions};

use super::render::FenceSlot;
use super::GpuDevice;
use crate::resources::{backing_ranges, ThreeD};
use wire::command::MAX_BLOB_ENTRIES;
use wire::*;

impl GpuDevice {
    pub(super) fn create_3d(&self, c: &ResourceCreate3d, fence: &FenceSlot) -> Result<(), Refusal> {
        let id = c.resource_id.to_native();
        let (shape, charge) = ThreeD::new(c)?;
        {
            let mut resources = self.resources();
            resources.check_new_id(id)?;
            resources.reserve(charge)?;
        }
        let n = |v: Le32| v.to_native();
        let created = self.call_done(
            RenderRequest::Create3d {
                resource_id: id,
                create: Create3d {
                    target: shape.target,
                    format: n(c.format),
                    bind: n(c.bind),
                    width: shape.width,
                    height: shape.height,
                    depth: shape.depth,
                    array_size: shape.array_size,
                    last_level: shape.last_level,
                    nr_samples: n(c.nr_samples),
                    flags: n(c.flags),
                },
            },
            fence,
        );
        let mut resources = self.resources();
        match created {
            Ok(()) => {
                resources.add_3d(id, shape, charge);
                Ok(())
            }
            Err(r) => {
                resources.release(charge);
                Err(r)
            }
        }
    }

    /// RESOURCE_ATTACH_BACKING of a 3D resource: rutabaga reads and writes
    /// the pages (transfers both ways), so each must be writable guest
    /// memory.
    pub(super) fn attach_backing_3d(
        &self,
        mem: &GuestMemoryMmap,
        id: u32,
        shape: ThreeD,
        entries: &[MemEntry],
    ) -> Result<(), Refusal> {
        if shape.backed {
            return refuse(
                RESP_ERR_UNSPEC,
                format!("resource {id} already has backing"),
            );
        }
        if entries.len() > MAX_BLOB_ENTRIES {
            return refuse(
                RESP_ERR_UNSPEC,
                format!(
                    "3D resource {id} backed by {} ranges (at most {MAX_BLOB_ENTRIES} cross to \
                     render-worker)",
                    entries.len()
                ),
            );
        }
        let ranges = backing_ranges(mem, entries, Permissions::ReadWrite)?;
        self.render_done(RenderRequest::AttachBacking {
            resource_id: id,
            entries: ranges.iter().map(|&(a, l)| (a.0, l)).collect(),
        })?;
        self.resources().set_backed(id, true);
        Ok(())
    }

    pub(super) fn detach_backing_3d(&self, id: u32, shape: ThreeD) -> Result<(), Refusal> {
        if !shape.backed {
            return refuse(RESP_ERR_UNSPEC, format!("resource {id} has no backing"));
        }
        self.render_done(RenderRequest::DetachBacking { resource_id: id })?;
        self.resources().set_backed(id, false);
        Ok(())
    }

    /// TRANSFER_TO_HOST_3D (`to_host`) or TRANSFER_FROM_HOST_3D.
    pub(super) fn transfer_3d(
        &self,
        ctx_id: u32,
        t: &TransferHost3d,
        to_host: bool,
        fence: &FenceSlot,
    ) -> Result<(), Refusal> {
        let id = t.resource_id.to_native();
        let Some(shape) = self.resources().three_d(id) else {
            return refuse(RESP_ERR_INVALID_RESOURCE_ID, format!("no 3D resource {id}"));
        };
        let b = &t.box_;
        let boxed = [b.x, b.y, b.z, b.w, b.h, b.d].map(|v| v.to_native());
        let level = t.level.to_native();
        shape.check_box(id, level, boxed)?;
        if !shape.backed {
            return refuse(
                RESP_ERR_UNSPEC,
                format!("3D resource {id} has no backing to transfer with"),
            );
        }
        self.call_done(
            RenderRequest::Transfer3d(Transfer3d {
                ctx_id,
                resource_id: id,
                to_host,
                boxed,
                level,
                stride: t.stride.to_native(),
                layer_stride: t.layer_stride.to_native(),
                offset: t.offset.to_native(),
            }),
            fence,
        )
    }
}
