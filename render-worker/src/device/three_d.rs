//! 3D resources (virgl): created and backed in rutabaga, and the host
//! copy that shows one on a scanout, read back at each flush.

use std::os::fd::OwnedFd;

use ipc::Reply;
use rutabaga_gfx::{ResourceCreate3D, Transfer3D};

use super::memory::map_sealed;
use super::{
    code_of, refused, Answer, Held, RenderDevice, ERR_INVALID_PARAMETER, ERR_INVALID_RESOURCE_ID,
    ERR_UNSPEC,
};

/// The host copy that shows a 3D resource, mapped read-write here: the
/// resource is read back into it at each flush.
pub(super) struct Shadow {
    map: vm_memory::mmap::MmapRegion<()>,
    width: u32,
    height: u32,
    stride: u32,
}

impl RenderDevice {
    /// The host copy of 3D resource `resource_id` on a scanout.
    pub(super) fn take_shadow(
        &mut self,
        resource_id: u32,
        width: u32,
        height: u32,
        stride: u32,
        fds: Vec<OwnedFd>,
    ) -> Answer {
        if !self.held.contains_key(&resource_id) {
            return refused(
                ERR_INVALID_RESOURCE_ID,
                format!("no 3D resource {resource_id}"),
            );
        }
        let Ok([fd]) = <[OwnedFd; 1]>::try_from(fds) else {
            return refused(ERR_UNSPEC, "a scanout copy without its one descriptor");
        };
        let len = u64::from(stride) * u64::from(height);
        if u64::from(width) * 4 > u64::from(stride) || len > usize::MAX as u64 {
            return refused(
                ERR_UNSPEC,
                format!("a scanout copy of {width}x{height}, stride {stride}"),
            );
        }
        match map_sealed(
            fd,
            len as usize,
            nix::libc::PROT_READ | nix::libc::PROT_WRITE,
        ) {
            Ok(map) => {
                self.shadows.insert(
                    resource_id,
                    Shadow {
                        map,
                        width,
                        height,
                        stride,
                    },
                );
                Reply::Done
            }
            Err(why) => refused(
                ERR_UNSPEC,
                format!("the scanout copy of {resource_id}: {why}"),
            ),
        }
    }

    /// Reads `rect` of 3D resource `resource_id` back into its host copy.
    pub(super) fn read_back(&mut self, resource_id: u32, rect: ipc::PixelRect) -> Answer {
        let Some(shadow) = self.shadows.get(&resource_id) else {
            return refused(
                ERR_INVALID_RESOURCE_ID,
                format!("3D resource {resource_id} has no scanout copy"),
            );
        };
        if !rect.fits_in(shadow.width, shadow.height) {
            return refused(
                ERR_INVALID_PARAMETER,
                format!(
                    "read back {rect:?} of a {}x{} resource",
                    shadow.width, shadow.height
                ),
            );
        }
        let transfer = Transfer3D {
            x: rect.x,
            y: rect.y,
            z: 0,
            w: rect.width,
            h: rect.height,
            d: 1,
            level: 0,
            stride: shadow.stride,
            layer_stride: 0,
            offset: u64::from(rect.y) * u64::from(shadow.stride) + u64::from(rect.x) * 4,
        };
        // SAFETY: the mapping holds `size()` bytes for as long as the
        // shadow lives (sealed against shrinking); the broker reads it
        // meanwhile, which costs it at most a torn frame.
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(shadow.map.as_ptr(), shadow.map.size()) };
        // Context 0: the resource itself, whichever context drew it.
        match self.rutabaga.transfer_read(
            0,
            resource_id,
            transfer,
            Some(std::io::IoSliceMut::new(bytes)),
        ) {
            Ok(()) => Reply::Done,
            Err(e) => refused(code_of(&e), format!("read back of {resource_id}: {e}")),
        }
    }

    pub(super) fn create_3d(&mut self, resource_id: u32, c: ipc::Create3d) -> Answer {
        let create = ResourceCreate3D {
            target: c.target,
            format: c.format,
            bind: c.bind,
            width: c.width,
            height: c.height,
            depth: c.depth,
            array_size: c.array_size,
            last_level: c.last_level,
            nr_samples: c.nr_samples,
            flags: c.flags,
        };
        if let Err(e) = self.rutabaga.resource_create_3d(resource_id, create) {
            return refused(code_of(&e), format!("3D resource {resource_id}: {e}"));
        }
        self.held.insert(
            resource_id,
            Held {
                size: 0,
                flags: 0,
                mapped: None,
                generation: None,
            },
        );
        Reply::Done
    }

    pub(super) fn attach_backing(&mut self, resource_id: u32, entries: &[(u64, u32)]) -> Answer {
        if !self.held.contains_key(&resource_id) {
            return refused(
                ERR_INVALID_RESOURCE_ID,
                format!("no 3D resource {resource_id}"),
            );
        }
        let (iovecs, generation) = match self.iovecs(entries) {
            Ok(v) => v,
            Err(why) => return refused(ERR_INVALID_PARAMETER, why.to_string()),
        };
        if let Err(e) = self.rutabaga.attach_backing(resource_id, iovecs) {
            return refused(code_of(&e), format!("backing of {resource_id}: {e}"));
        }
        if let Some(h) = self.held.get_mut(&resource_id) {
            h.generation = Some(generation);
        }
        Reply::Done
    }
}
