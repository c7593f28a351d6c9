//! Blobs into and out of the guest's host-visible region: render-worker
//! exports a blob's memory (through a sealed, padded private copy where the
//! compositor's descriptor could change or shrink under the VM) and asks
//! the broker's mapper to map it; the broker checks and sends SHMEM_MAP.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use ipc::{MapRequest, RenderValue, Reply};
use log::{info, warn};
use rutabaga_gfx::{
    RutabagaHandle, RUTABAGA_BLOB_FLAG_USE_MAPPABLE, RUTABAGA_HANDLE_TYPE_MEM_OPAQUE_FD,
    RUTABAGA_MAP_ACCESS_MASK, RUTABAGA_MAP_ACCESS_READ, RUTABAGA_MAP_CACHE_MASK,
};

use super::{
    refused, Answer, RenderDevice, ERR_INVALID_PARAMETER, ERR_INVALID_RESOURCE_ID,
    ERR_OUT_OF_MEMORY, ERR_UNSPEC,
};

/// Seals `fd` against resizing; or finds it sealed so already, and still
/// writable (venus's shared memory comes sealed against resizing and
/// against more seals, F_SEAL_SEAL, so no seal can be added to it).
fn sealed(fd: &OwnedFd) -> bool {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    let added = fcntl(
        fd,
        FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW),
    );
    added.is_ok()
        || fcntl(fd, FcntlArg::F_GET_SEALS)
            .map(SealFlag::from_bits_truncate)
            .is_ok_and(|s| {
                s.contains(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW)
                    && !s.intersects(SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_FUTURE_WRITE)
            })
}

/// Where the memory of an opaque descriptor from Mesa's lavapipe starts.
/// Its memfd (`os_malloc_aligned_fd`, which lavapipe's own import reads
/// back the same way) opens with a header, its length and the offset of
/// the memory (two native-endian words), then padding to a page; the
/// memory follows. Checked against what the descriptor holds: its length
/// is the file's, the offset a page boundary past the header, and `size`
/// bytes fit after it. Any other opaque descriptor is refused: there is no
/// other way to map one.
pub(super) fn opaque_memory_offset(fd: &OwnedFd, fd_len: u64, size: u64) -> Result<u64, String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = File::from(fd.try_clone().map_err(|e| e.to_string())?);
    let mut header = [0u8; 16];
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_exact(&mut header))
        .map_err(|e| format!("its opaque memory's header: {e}"))?;
    let _ = file.seek(SeekFrom::Start(0));
    let word = |i: usize| u64::from_ne_bytes(header[i..i + 8].try_into().unwrap());
    let (len, offset) = (word(0), word(8));
    let fits = offset.checked_add(size).is_some_and(|end| end <= fd_len);
    // A page boundary, and not 0: the header comes first.
    if len != fd_len || offset == 0 || offset % 4096 != 0 || !fits {
        return Err(format!(
            "an opaque memory descriptor not of lavapipe's kind (header: length {len}, memory \
             at {offset}; the descriptor holds {fd_len} bytes, the blob {size}): it cannot be \
             mapped"
        ));
    }
    Ok(offset)
}

/// What `fd` is, for the log: a memfd and its seals, or not a memfd (no
/// path: render-worker's jail has no /proc).
fn descriptor_name(fd: &OwnedFd) -> String {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    match fcntl(fd, FcntlArg::F_GET_SEALS) {
        Ok(s) => format!("a memfd sealed {:?}", SealFlag::from_bits_truncate(s)),
        Err(e) => format!("not a memfd ({e})"),
    }
}

/// A memfd of `size` bytes holding the first `len` of `fd`'s, sealed
/// against resizing.
fn padded_copy(fd: &OwnedFd, len: u64, size: u64) -> std::io::Result<OwnedFd> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    use nix::sys::memfd::{memfd_create, MFdFlags};
    use std::io::{Read, Seek, SeekFrom, Write};

    let copy = memfd_create(
        c"airlock-compositor-copy",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )?;
    let mut from = File::from(fd.try_clone()?);
    from.seek(SeekFrom::Start(0))?;
    let mut to = File::from(copy);
    to.set_len(size)?;
    // By read and write: std::io::copy between files would reach for
    // copy_file_range and sendfile, which the policy does not allow.
    let mut buf = [0u8; 4096];
    let mut left = len;
    while left > 0 {
        let n = from.read(&mut buf[..left.min(4096) as usize])?;
        if n == 0 {
            break;
        }
        to.write_all(&buf[..n])?;
        left -= n as u64;
    }
    to.flush()?;
    fcntl(
        &to,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
        ),
    )?;
    Ok(to.into())
}

/// Why the broker did not map or unmap a blob.
#[derive(Debug, thiserror::Error)]
enum MapFailed {
    #[error("the map channel failed earlier in this connection")]
    LostEarlier,
    #[error("the broker refused: {0}")]
    Refused(ipc::Refusal),
    #[error("map channel: {0}")]
    Channel(ipc::Error),
}

impl RenderDevice {
    fn map_request(&self, request: &MapRequest, fd: Option<&OwnedFd>) -> Result<(), MapFailed> {
        if self.map_lost.get() {
            return Err(MapFailed::LostEarlier);
        }
        let fds: Vec<_> = fd.map(|f| f.as_fd()).into_iter().collect();
        match self.map.send(request, &fds).and_then(|()| self.map.recv()) {
            Ok((Reply::Done, _)) => Ok(()),
            Ok((Reply::Refused(r), _)) => Err(MapFailed::Refused(r)),
            Ok((Reply::Value(nothing), _)) => match nothing {},
            Err(e) => {
                self.map_lost.set(true);
                warn!("render-worker: map channel: {e}; no more maps for this connection");
                Err(MapFailed::Channel(e))
            }
        }
    }

    pub(super) fn map_blob(&mut self, resource_id: u32, offset: u64) -> Answer {
        let Some(blob) = self.held.get(&resource_id).copied() else {
            return refused(ERR_INVALID_RESOURCE_ID, format!("no blob {resource_id}"));
        };
        if blob.flags & RUTABAGA_BLOB_FLAG_USE_MAPPABLE == 0 {
            return refused(
                ERR_INVALID_PARAMETER,
                format!("blob {resource_id} was not created mappable"),
            );
        }
        if blob.mapped.is_some() {
            return refused(
                ERR_INVALID_PARAMETER,
                format!("blob {resource_id} is already mapped"),
            );
        }
        let (map_info, writable) = match self.rutabaga.map_info(resource_id) {
            Ok(i) => (
                i & RUTABAGA_MAP_CACHE_MASK,
                i & RUTABAGA_MAP_ACCESS_MASK != RUTABAGA_MAP_ACCESS_READ,
            ),
            Err(e) => return refused(ERR_INVALID_PARAMETER, format!("blob {resource_id}: {e}")),
        };
        let (fd, handle_type) = match self.exported(resource_id) {
            Ok(exported) => exported,
            Err(refusal) => return refusal,
        };
        // A descriptor the compositor sent (a keymap) holds just its bytes,
        // and QEMU maps only whole pages of a file at least that long; it
        // may be sealed against writing, and QEMU 11 maps every SHMEM_MAP
        // writable whatever its flags say. Such a one reaches the guest as
        // a private copy padded to the blob's size, which the compositor
        // can then neither change nor truncate under the VM.
        // (Its size by lseek, which the policy allows for rutabaga.)
        let fd_len = fd
            .try_clone()
            .and_then(|f| std::io::Seek::seek(&mut File::from(f), std::io::SeekFrom::End(0)))
            .unwrap_or(0);
        // The broker maps only memory sealed against shrinking (it would
        // fault the VM's access). rutabaga's own memfds are made sealable
        // and never resized once made: sealed here. One that refuses (a
        // compositor's memfd sealed with F_SEAL_SEAL, unless sealed against
        // resizing already, and writable) goes through a copy.
        let sealed = sealed(&fd);
        // What is mapped: the descriptor, from where its memory starts, and
        // whether the guest may write it.
        let (fd, fd_offset, writable) = if handle_type == RUTABAGA_HANDLE_TYPE_MEM_OPAQUE_FD {
            // venus's memory on lavapipe (no dma-buf without /dev/udmabuf):
            // shared with the renderer, so never a copy.
            match opaque_memory_offset(&fd, fd_len, blob.size) {
                Ok(o) if sealed && writable => (fd, o, true),
                Ok(_) => {
                    return refused(
                        ERR_INVALID_PARAMETER,
                        format!("blob {resource_id}: its memory is not sealed, or not writable"),
                    )
                }
                Err(why) => {
                    return refused(ERR_INVALID_PARAMETER, format!("blob {resource_id}: {why}"))
                }
            }
        } else if fd_len < blob.size || !writable || !sealed {
            let name = descriptor_name(&fd);
            info!(
                "render-worker: blob {resource_id} ({name}, {fd_len} of {} bytes{}{}) is mapped \
                 as a private copy",
                blob.size,
                if writable { "" } else { ", read-only" },
                if sealed { "" } else { ", not sealable" },
            );
            match padded_copy(&fd, fd_len, blob.size) {
                Ok(copy) => (copy, 0, false),
                Err(e) => {
                    return refused(
                        ERR_OUT_OF_MEMORY,
                        format!("blob {resource_id}: a copy of its {fd_len} bytes: {e}"),
                    )
                }
            }
        } else {
            (fd, 0, writable)
        };
        let request = MapRequest::Map {
            resource_id,
            shm_offset: offset,
            size: blob.size,
            writable,
            fd_offset,
        };
        if let Err(why) = self.map_request(&request, Some(&fd)) {
            return refused(ERR_INVALID_PARAMETER, format!("blob {resource_id}: {why}"));
        }
        if let Some(b) = self.held.get_mut(&resource_id) {
            b.mapped = Some(offset);
        }
        Reply::Value(RenderValue::Mapped { map_info })
    }

    /// A duplicate of blob `resource_id`'s descriptor and its handle type,
    /// exported at its first map and kept for the blob's life: virglrenderer
    /// hands over a venus blob's descriptor at its first export (and
    /// rutabaga a blob's that is not shareable), so a map after an unmap
    /// would find none (seen: the 3D benchmark's second round of maps).
    fn exported(&mut self, resource_id: u32) -> Result<(OwnedFd, u32), Answer> {
        let dup = |fd: BorrowedFd<'_>| {
            fd.try_clone_to_owned()
                .map_err(|e| refused(ERR_OUT_OF_MEMORY, format!("blob {resource_id}: {e}")))
        };
        if let Some((fd, handle_type)) = self.exported.get(&resource_id) {
            return Ok((dup(fd.as_fd())?, *handle_type));
        }
        let (fd, handle_type) = match self.rutabaga.export_blob(resource_id) {
            Ok(RutabagaHandle::MagmaGpuHandle(h)) => (dup(h.os_handle.as_fd())?, h.handle_type),
            Ok(_) => {
                return Err(refused(
                    ERR_INVALID_PARAMETER,
                    format!("blob {resource_id} has no single descriptor to map"),
                ))
            }
            Err(e) => {
                return Err(refused(
                    ERR_INVALID_PARAMETER,
                    format!(
                        "blob {resource_id} cannot be exported: {e} (virglrenderer on a host \
                         without a GPU gives its memory no descriptor: run with --shm-size 0, \
                         and the guest copies through transfers)"
                    ),
                ))
            }
        };
        let kept = dup(fd.as_fd())?;
        self.exported.insert(resource_id, (kept, handle_type));
        Ok((fd, handle_type))
    }

    pub(super) fn unmap_blob(&mut self, resource_id: u32) -> Answer {
        let Some(blob) = self.held.get(&resource_id).copied() else {
            return refused(ERR_INVALID_RESOURCE_ID, format!("no blob {resource_id}"));
        };
        if blob.mapped.is_none() {
            return refused(
                ERR_INVALID_PARAMETER,
                format!("blob {resource_id} is not mapped"),
            );
        }
        if let Err(why) = self.map_request(&MapRequest::Unmap { resource_id }, None) {
            return refused(ERR_UNSPEC, format!("blob {resource_id}: {why}"));
        }
        if let Some(b) = self.held.get_mut(&resource_id) {
            b.mapped = None;
        }
        Reply::Done
    }
}
