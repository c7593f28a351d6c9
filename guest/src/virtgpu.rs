//! The Linux kernel's virtgpu DRM interface (`include/uapi/drm/virtgpu_drm.h`
//! and the GEM close of `drm.h`), as guest programs drive it: the ioctl
//! structures in the header's layout, and [`Gpu`], a render node with one
//! safe method per ioctl.
//!
//! The layouts are those of Linux 6.1, the first long-term kernel with
//! every ioctl here. Later kernels extend `drm_virtgpu_execbuffer` at its
//! end (syncobjs); DRM zero-fills what an older caller leaves out, so the
//! shorter structure works on them too.

use std::ffi::c_void;
use std::fs::OpenOptions;
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

/// `VIRTGPU_PARAM_*`: what `DRM_IOCTL_VIRTGPU_GETPARAM` asks.
pub const PARAM_3D_FEATURES: u64 = 1;
pub const PARAM_CAPSET_QUERY_FIX: u64 = 2;
pub const PARAM_RESOURCE_BLOB: u64 = 3;
pub const PARAM_HOST_VISIBLE: u64 = 4;
pub const PARAM_CROSS_DEVICE: u64 = 5;
pub const PARAM_CONTEXT_INIT: u64 = 6;
pub const PARAM_SUPPORTED_CAPSET_IDS: u64 = 7;

/// `VIRTGPU_CONTEXT_PARAM_*`.
pub const CONTEXT_PARAM_CAPSET_ID: u64 = 1;
pub const CONTEXT_PARAM_NUM_RINGS: u64 = 2;
pub const CONTEXT_PARAM_POLL_RINGS_MASK: u64 = 3;

/// `VIRTGPU_BLOB_MEM_*`.
pub const BLOB_MEM_GUEST: u32 = 1;
pub const BLOB_MEM_HOST3D: u32 = 2;
pub const BLOB_MEM_HOST3D_GUEST: u32 = 3;
/// `VIRTGPU_BLOB_FLAG_USE_*`.
pub const BLOB_FLAG_USE_MAPPABLE: u32 = 1;
pub const BLOB_FLAG_USE_SHAREABLE: u32 = 2;
pub const BLOB_FLAG_USE_CROSS_DEVICE: u32 = 4;

/// `VIRTGPU_EXECBUF_*`.
pub const EXECBUF_FENCE_FD_IN: u32 = 1;
pub const EXECBUF_FENCE_FD_OUT: u32 = 2;
pub const EXECBUF_RING_IDX: u32 = 4;

/// `VIRTGPU_EVENT_FENCE_SIGNALED`: the DRM event a context's polled ring
/// delivers on the render node when one of its fences signals.
pub const EVENT_FENCE_SIGNALED: u32 = 0x9000_0000;

/// `VIRTGPU_WAIT_NOWAIT`.
pub const WAIT_NOWAIT: u32 = 1;

/// `struct drm_virtgpu_map`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct DrmVirtgpuMap {
    /// Out: the offset to mmap the render node at.
    pub offset: u64,
    pub handle: u32,
    pub pad: u32,
}

/// `struct drm_virtgpu_execbuffer` (Linux 6.1's length).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct DrmVirtgpuExecbuffer {
    pub flags: u32,
    pub size: u32,
    /// A pointer to `size` bytes of commands.
    pub command: u64,
    /// A pointer to `num_bo_handles` u32 GEM handles.
    pub bo_handles: u64,
    pub num_bo_handles: u32,
    pub fence_fd: i32,
    pub ring_idx: u32,
    pub pad: u32,
}

/// `struct drm_virtgpu_getparam`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct DrmVirtgpuGetparam {
    pub param: u64,
    /// A pointer the kernel writes an int to.
    pub value: u64,
}

/// `struct drm_virtgpu_3d_wait`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct DrmVirtgpu3dWait {
    pub handle: u32,
    pub flags: u32,
}

/// `struct drm_virtgpu_get_caps`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct DrmVirtgpuGetCaps {
    pub cap_set_id: u32,
    pub cap_set_ver: u32,
    /// A pointer to `size` bytes.
    pub addr: u64,
    pub size: u32,
    pub pad: u32,
}

/// `struct drm_virtgpu_resource_create_blob`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct DrmVirtgpuResourceCreateBlob {
    pub blob_mem: u32,
    pub blob_flags: u32,
    /// Out: the GEM handle.
    pub bo_handle: u32,
    /// Out: the virtio-gpu resource id.
    pub res_handle: u32,
    pub size: u64,
    pub pad: u32,
    pub cmd_size: u32,
    pub cmd: u64,
    pub blob_id: u64,
}

/// `struct drm_virtgpu_context_set_param`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct DrmVirtgpuContextSetParam {
    pub param: u64,
    pub value: u64,
}

/// `struct drm_virtgpu_context_init`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct DrmVirtgpuContextInit {
    pub num_params: u32,
    pub pad: u32,
    /// A pointer to `num_params` [`DrmVirtgpuContextSetParam`].
    pub ctx_set_params: u64,
}

/// `struct drm_gem_close` (drm.h).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct DrmGemClose {
    pub handle: u32,
    pub pad: u32,
}

/// DRM_IOCTL_BASE and DRM_COMMAND_BASE (drm.h).
const DRM_IOCTL_BASE: u8 = b'd';
const DRM_COMMAND_BASE: u8 = 0x40;

mod ioctls {
    use super::*;
    nix::ioctl_write_ptr!(gem_close, DRM_IOCTL_BASE, 0x09, DrmGemClose);
    nix::ioctl_readwrite!(map, DRM_IOCTL_BASE, DRM_COMMAND_BASE + 0x01, DrmVirtgpuMap);
    nix::ioctl_readwrite!(
        execbuffer,
        DRM_IOCTL_BASE,
        DRM_COMMAND_BASE + 0x02,
        DrmVirtgpuExecbuffer
    );
    nix::ioctl_readwrite!(
        getparam,
        DRM_IOCTL_BASE,
        DRM_COMMAND_BASE + 0x03,
        DrmVirtgpuGetparam
    );
    nix::ioctl_readwrite!(
        wait,
        DRM_IOCTL_BASE,
        DRM_COMMAND_BASE + 0x08,
        DrmVirtgpu3dWait
    );
    nix::ioctl_readwrite!(
        get_caps,
        DRM_IOCTL_BASE,
        DRM_COMMAND_BASE + 0x09,
        DrmVirtgpuGetCaps
    );
    nix::ioctl_readwrite!(
        resource_create_blob,
        DRM_IOCTL_BASE,
        DRM_COMMAND_BASE + 0x0a,
        DrmVirtgpuResourceCreateBlob
    );
    nix::ioctl_readwrite!(
        context_init,
        DRM_IOCTL_BASE,
        DRM_COMMAND_BASE + 0x0b,
        DrmVirtgpuContextInit
    );
}

/// A blob as the kernel gave it: its GEM handle (this file's) and its
/// virtio-gpu resource id (what cross-domain commands name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blob {
    pub bo: u32,
    pub res: u32,
    pub size: u64,
}

/// An open virtgpu DRM node.
#[derive(Debug)]
pub struct Gpu {
    fd: OwnedFd,
}

fn errno(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl Gpu {
    /// Opens a render node; an error names it. A render node is its
    /// seat's: Debian's udev gives it to group `render` and, through
    /// logind's `uaccess` ACL, to the user of the active session on the
    /// seat. A refusal says so.
    pub fn open(path: &Path) -> io::Result<Gpu> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::PermissionDenied => io::Error::new(
                    e.kind(),
                    format!(
                        "{}: {e} (a render node is open to the active session on its seat \
                         (logind's uaccess) and to group render: log in on the VM's \
                         console or display, or add the user to group render)",
                        path.display()
                    ),
                ),
                _ => io::Error::new(e.kind(), format!("{}: {e}", path.display())),
            })?;
        Ok(Gpu { fd: file.into() })
    }

    /// The first render node whose driver is virtio_gpu.
    pub fn find_render_node() -> io::Result<PathBuf> {
        for minor in 128..192 {
            let name = format!("renderD{minor}");
            // The DRM device is the virtio transport (virtio-pci's PCI
            // device, say); its virtio child is driven by virtio_gpu.
            let device = Path::new("/sys/class/drm").join(&name).join("device");
            let driven_by_virtio_gpu = |dev: &Path| {
                std::fs::read_link(dev.join("driver"))
                    .ok()
                    .is_some_and(|t| t.file_name().is_some_and(|n| n == "virtio_gpu"))
            };
            let children = std::fs::read_dir(&device)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("virtio"));
            let mut candidates = std::iter::once(device.clone()).chain(children.map(|e| e.path()));
            if candidates.any(|d| driven_by_virtio_gpu(&d)) {
                return Ok(Path::new("/dev/dri").join(name));
            }
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no virtio_gpu render node under /sys/class/drm",
        ))
    }

    /// DRM_IOCTL_VIRTGPU_GETPARAM. The kernel writes an int.
    pub fn param(&self, param: u64) -> io::Result<u64> {
        let mut value = 0u64;
        let mut p = DrmVirtgpuGetparam {
            param,
            value: std::ptr::addr_of_mut!(value) as u64,
        };
        // SAFETY: `p` is the ioctl's structure; its pointer names `value`,
        // which outlives the call and has room for the int written.
        unsafe { ioctls::getparam(self.fd.as_raw_fd(), &mut p) }.map_err(errno)?;
        Ok(value & 0xffff_ffff)
    }

    /// DRM_IOCTL_VIRTGPU_GET_CAPS into `buf`.
    pub fn caps(&self, id: u32, version: u32, buf: &mut [u8]) -> io::Result<()> {
        let mut c = DrmVirtgpuGetCaps {
            cap_set_id: id,
            cap_set_ver: version,
            addr: buf.as_mut_ptr() as u64,
            size: u32::try_from(buf.len()).map_err(|_| io::ErrorKind::InvalidInput)?,
            pad: 0,
        };
        // SAFETY: `addr` and `size` describe `buf`, borrowed for the call.
        unsafe { ioctls::get_caps(self.fd.as_raw_fd(), &mut c) }.map_err(errno)?;
        Ok(())
    }

    /// DRM_IOCTL_VIRTGPU_CONTEXT_INIT: this file's context, of `capset`,
    /// with `num_rings` rings (and which of them the kernel polls).
    pub fn context_init(&self, capset: u32, num_rings: u32, poll_rings: u64) -> io::Result<()> {
        let mut params = vec![
            DrmVirtgpuContextSetParam {
                param: CONTEXT_PARAM_CAPSET_ID,
                value: u64::from(capset),
            },
            DrmVirtgpuContextSetParam {
                param: CONTEXT_PARAM_NUM_RINGS,
                value: u64::from(num_rings),
            },
        ];
        if poll_rings != 0 {
            params.push(DrmVirtgpuContextSetParam {
                param: CONTEXT_PARAM_POLL_RINGS_MASK,
                value: poll_rings,
            });
        }
        let mut init = DrmVirtgpuContextInit {
            num_params: params.len() as u32,
            pad: 0,
            ctx_set_params: params.as_ptr() as u64,
        };
        // SAFETY: the pointer and count describe `params`, alive for the
        // call.
        unsafe { ioctls::context_init(self.fd.as_raw_fd(), &mut init) }.map_err(errno)?;
        Ok(())
    }

    /// DRM_IOCTL_VIRTGPU_RESOURCE_CREATE_BLOB, with no command.
    pub fn create_blob(
        &self,
        blob_mem: u32,
        blob_flags: u32,
        size: u64,
        blob_id: u64,
    ) -> io::Result<Blob> {
        let mut b = DrmVirtgpuResourceCreateBlob {
            blob_mem,
            blob_flags,
            size,
            blob_id,
            ..Default::default()
        };
        // SAFETY: `b` is the ioctl's structure, with no pointers (cmd 0).
        unsafe { ioctls::resource_create_blob(self.fd.as_raw_fd(), &mut b) }.map_err(errno)?;
        Ok(Blob {
            bo: b.bo_handle,
            res: b.res_handle,
            size,
        })
    }

    /// DRM_IOCTL_VIRTGPU_MAP and mmap: the blob's memory in this process.
    pub fn map(&self, blob: &Blob) -> io::Result<Mapping> {
        let mut m = DrmVirtgpuMap {
            handle: blob.bo,
            ..Default::default()
        };
        // SAFETY: `m` is the ioctl's structure, with no pointers.
        unsafe { ioctls::map(self.fd.as_raw_fd(), &mut m) }.map_err(errno)?;
        let len = usize::try_from(blob.size)
            .ok()
            .and_then(NonZeroUsize::new)
            .ok_or(io::ErrorKind::InvalidInput)?;
        let offset = i64::try_from(m.offset).map_err(|_| io::ErrorKind::InvalidData)?;
        // SAFETY: a new shared mapping of the DRM node at the offset the
        // kernel gave for this object; nothing else in this process is at
        // the address the kernel picks.
        let ptr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                self.fd.as_fd(),
                offset,
            )
        }
        .map_err(errno)?;
        Ok(Mapping {
            ptr,
            len: len.get(),
        })
    }

    /// DRM_IOCTL_VIRTGPU_EXECBUFFER: `commands` to this file's context, on
    /// `ring` if given, fencing `bos` (which [`Gpu::wait`] then waits on).
    pub fn execbuffer(&self, commands: &[u8], bos: &[u32], ring: Option<u32>) -> io::Result<()> {
        let mut e = DrmVirtgpuExecbuffer {
            flags: if ring.is_some() { EXECBUF_RING_IDX } else { 0 },
            size: u32::try_from(commands.len()).map_err(|_| io::ErrorKind::InvalidInput)?,
            command: commands.as_ptr() as u64,
            bo_handles: bos.as_ptr() as u64,
            num_bo_handles: bos.len() as u32,
            fence_fd: -1,
            ring_idx: ring.unwrap_or(0),
            pad: 0,
        };
        // SAFETY: the pointers and sizes describe `commands` and `bos`,
        // borrowed for the call.
        unsafe { ioctls::execbuffer(self.fd.as_raw_fd(), &mut e) }.map_err(errno)?;
        Ok(())
    }

    /// DRM_IOCTL_VIRTGPU_WAIT: until every fence on `bo` has signalled (the
    /// kernel gives up after 15 s with EBUSY).
    pub fn wait(&self, bo: u32) -> io::Result<()> {
        let mut w = DrmVirtgpu3dWait {
            handle: bo,
            flags: 0,
        };
        // SAFETY: `w` is the ioctl's structure, with no pointers.
        unsafe { ioctls::wait(self.fd.as_raw_fd(), &mut w) }.map_err(errno)?;
        Ok(())
    }

    /// DRM_IOCTL_GEM_CLOSE: drops this file's handle; the kernel frees the
    /// resource (unmapping it first) once nothing else holds it.
    pub fn close(&self, bo: u32) -> io::Result<()> {
        let c = DrmGemClose { handle: bo, pad: 0 };
        // SAFETY: `c` is the ioctl's structure, with no pointers.
        unsafe { ioctls::gem_close(self.fd.as_raw_fd(), &c) }.map_err(errno)?;
        Ok(())
    }
}

impl AsFd for Gpu {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Gpu {
    /// Reads the DRM events waiting on the node (call when it polls
    /// readable) and counts the fence-signalled ones of polled rings.
    pub fn fence_events(&self) -> io::Result<usize> {
        let mut buf = [0u8; 1024];
        let n = nix::unistd::read(&self.fd, &mut buf).map_err(errno)?;
        // `struct drm_event`: type, then the length of the whole event.
        let mut at = 0;
        let mut fences = 0;
        while at + 8 <= n {
            let kind = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
            let len = u32::from_le_bytes([buf[at + 4], buf[at + 5], buf[at + 6], buf[at + 7]]);
            if kind == EVENT_FENCE_SIGNALED {
                fences += 1;
            }
            at += (len as usize).max(8);
        }
        Ok(fences)
    }
}

/// A blob mapped into this process; unmapped when dropped.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<c_void>,
    len: usize,
}

impl Mapping {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The mapped bytes. Volatile in truth (the host may write them); the
    /// programs here read what they or the host wrote before a fence.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until `self` is dropped.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in as_slice, writable, and `&mut self` is the only
        // view in this process.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().cast(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping `mmap` returned, not used after this.
        let _ = unsafe { munmap(self.ptr, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    /// The sizes of Linux 6.1's `virtgpu_drm.h` and `drm.h` structures;
    /// the ioctl numbers encode them, so a wrong one is a wrong ioctl.
    #[test]
    fn structures_have_the_kernel_header_sizes() {
        assert_eq!(size_of::<DrmVirtgpuMap>(), 16);
        assert_eq!(size_of::<DrmVirtgpuExecbuffer>(), 40);
        assert_eq!(size_of::<DrmVirtgpuGetparam>(), 16);
        assert_eq!(size_of::<DrmVirtgpu3dWait>(), 8);
        assert_eq!(size_of::<DrmVirtgpuGetCaps>(), 24);
        assert_eq!(size_of::<DrmVirtgpuResourceCreateBlob>(), 48);
        assert_eq!(size_of::<DrmVirtgpuContextSetParam>(), 16);
        assert_eq!(size_of::<DrmVirtgpuContextInit>(), 16);
        assert_eq!(size_of::<DrmGemClose>(), 8);
    }

    /// Field offsets where padding could hide a mistake.
    #[test]
    fn fields_sit_where_the_header_puts_them() {
        use std::mem::offset_of;
        assert_eq!(offset_of!(DrmVirtgpuExecbuffer, command), 8);
        assert_eq!(offset_of!(DrmVirtgpuExecbuffer, fence_fd), 28);
        assert_eq!(offset_of!(DrmVirtgpuExecbuffer, ring_idx), 32);
        assert_eq!(offset_of!(DrmVirtgpuResourceCreateBlob, size), 16);
        assert_eq!(offset_of!(DrmVirtgpuResourceCreateBlob, cmd_size), 28);
        assert_eq!(offset_of!(DrmVirtgpuResourceCreateBlob, blob_id), 40);
        assert_eq!(offset_of!(DrmVirtgpuGetCaps, size), 16);
    }

    /// The request codes as `virtgpu_drm.h` computes them with DRM_IOWR.
    #[test]
    fn ioctl_numbers_match_the_header() {
        // _IOC(dir, type, nr, size): dir << 30 | size << 16 | type << 8 | nr.
        let iowr = |nr: u32, size: usize| (3u32 << 30) | ((size as u32) << 16) | (0x64 << 8) | nr;
        assert_eq!(
            nix::request_code_readwrite!(b'd', 0x4a, size_of::<DrmVirtgpuResourceCreateBlob>())
                as u32,
            iowr(0x4a, 48)
        );
        assert_eq!(iowr(0x4a, 48), 0xc030_644a);
        assert_eq!(iowr(0x42, 40), 0xc028_6442);
        assert_eq!(
            nix::request_code_write!(b'd', 0x09, size_of::<DrmGemClose>()) as u32,
            0x4008_6409
        );
    }
}
