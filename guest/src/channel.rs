//! One cross-domain Wayland channel, as the guest proxy drives it: a
//! virtgpu context of its own (rutabaga's cross-domain context keeps one
//! compositor connection, and a render node file has one context, so each
//! channel opens the node anew), its query ring for image requirements,
//! and its channel ring, which the host fills with what the compositor
//! sent each time a fenced POLL on it signals.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::rc::Rc;

use crate::cross_domain::{self, Identifier, ImageRequirements, RingMessage};
use crate::virtgpu::{
    Blob, Gpu, Mapping, BLOB_FLAG_USE_MAPPABLE, BLOB_FLAG_USE_SHAREABLE, BLOB_MEM_GUEST,
    BLOB_MEM_HOST3D,
};

/// A ring's size: one page, so that its guest memory is one contiguous
/// range (the host writes to the first range of a ring's backing only).
const RING_SIZE: u64 = 4096;

/// The first identifier rutabaga gives a read pipe on a context; each
/// further one is the next number (the guest names it before the host
/// makes it, as sommelier does).
const FIRST_READ_PIPE: u32 = 0x8000_0001;

fn io_error(what: String) -> io::Error {
    io::Error::other(what)
}

/// A host blob mapped into the guest, given back when dropped.
pub struct HostBlob {
    gpu: Rc<Gpu>,
    pub blob: Blob,
    map: Option<Mapping>,
}

impl HostBlob {
    pub fn bytes(&self) -> &[u8] {
        self.map.as_ref().map_or(&[], |m| m.as_slice())
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        self.map.as_mut().map_or(&mut [], |m| m.as_mut_slice())
    }

    /// What names it to the host in a SEND.
    pub fn identifier(&self) -> Identifier {
        Identifier {
            id: self.blob.res,
            kind: cross_domain::ID_TYPE_VIRTGPU_BLOB,
            size: self.blob.size as u32,
        }
    }
}

impl Drop for HostBlob {
    fn drop(&mut self) {
        self.map.take();
        if let Err(e) = self.gpu.close(self.blob.bo) {
            log::warn!("GEM_CLOSE of blob {}: {e}", self.blob.res);
        }
    }
}

/// An image as the host allocated it for the proxy: the blob, mapped, and
/// its row pitch.
pub struct HostImage {
    pub blob: HostBlob,
    pub stride: u32,
}

pub struct Channel {
    gpu: Rc<Gpu>,
    query: Blob,
    query_map: Mapping,
    ring: Blob,
    ring_map: Mapping,
    next_read_pipe: u32,
    /// Image requirements by (width, height): rutabaga keeps each answer
    /// for the context's life and lets it back any number of blobs, so one
    /// is asked per size, not per buffer.
    requirements: std::collections::HashMap<(u32, u32), ImageRequirements>,
}

impl Channel {
    /// Opens `node`, makes a cross-domain context with both rings, and
    /// connects it to the host's compositor (INIT, Wayland channel type),
    /// with the first POLL in flight.
    pub fn open(node: &Path) -> io::Result<Channel> {
        let gpu = Rc::new(Gpu::open(node)?);
        gpu.context_init(
            cross_domain::CAPSET_CROSS_DOMAIN,
            2,
            1 << cross_domain::CHANNEL_RING,
        )
        .map_err(|e| {
            io_error(format!(
                "CONTEXT_INIT (cross-domain, 2 rings) on {}: {e}",
                node.display()
            ))
        })?;
        let ring = |what: &str| -> io::Result<(Blob, Mapping)> {
            let blob = gpu
                .create_blob(BLOB_MEM_GUEST, BLOB_FLAG_USE_MAPPABLE, RING_SIZE, 0)
                .map_err(|e| io_error(format!("the {what} ring's blob: {e}")))?;
            let map = gpu
                .map(&blob)
                .map_err(|e| io_error(format!("mapping the {what} ring: {e}")))?;
            Ok((blob, map))
        };
        let (query, mut query_map) = ring("query")?;
        let (channel_ring, ring_map) = ring("channel")?;
        let init = cross_domain::init(
            query.res,
            channel_ring.res,
            cross_domain::CHANNEL_TYPE_WAYLAND,
        );
        gpu.execbuffer(&init, &[query.bo], Some(cross_domain::QUERY_RING))
            .map_err(|e| io_error(format!("cross-domain INIT: {e}")))?;
        gpu.wait(query.bo)
            .map_err(|e| io_error(format!("waiting for cross-domain INIT: {e}")))?;
        // EXECBUFFER is asynchronous: a refused INIT (no compositor to
        // connect to) signals its fence all the same. Image requirements
        // are answered only on a context that INIT set up.
        query_map.as_mut_slice().fill(0);
        let cmd = cross_domain::get_image_requirements(1, 1, cross_domain::DRM_FORMAT_XRGB8888, 0);
        gpu.execbuffer(&cmd, &[query.bo], Some(cross_domain::QUERY_RING))
            .and_then(|()| gpu.wait(query.bo))
            .map_err(|e| io_error(format!("GET_IMAGE_REQUIREMENTS: {e}")))?;
        if ImageRequirements::parse(query_map.as_slice()).is_none_or(|r| r.size == 0) {
            return Err(io_error(
                "the host's cross-domain INIT opened no channel (is its compositor running?)"
                    .into(),
            ));
        }
        let channel = Channel {
            gpu,
            query,
            query_map,
            ring: channel_ring,
            ring_map,
            next_read_pipe: FIRST_READ_PIPE,
            requirements: std::collections::HashMap::new(),
        };
        channel.poll()?;
        Ok(channel)
    }

    fn poll(&self) -> io::Result<()> {
        self.gpu
            .execbuffer(
                &cross_domain::poll(),
                &[self.ring.bo],
                Some(cross_domain::CHANNEL_RING),
            )
            .map_err(|e| io_error(format!("cross-domain POLL: {e}")))
    }

    /// What polls readable when the host has answered a POLL.
    pub fn poll_fd(&self) -> BorrowedFd<'_> {
        self.gpu.as_fd()
    }

    /// After [`Channel::poll_fd`] polled readable: the messages the host
    /// wrote, one per signalled POLL, each followed by the next POLL.
    pub fn take_messages(&mut self) -> io::Result<Vec<RingMessage>> {
        let fences = self.gpu.fence_events()?;
        let mut messages = Vec::with_capacity(fences);
        for _ in 0..fences {
            let message = RingMessage::parse(self.ring_map.as_slice())
                .map_err(|e| io_error(format!("the host's channel ring: {e}")))?;
            messages.push(message);
            self.poll()?;
        }
        Ok(messages)
    }

    /// SEND: Wayland bytes and the descriptors they carry, to the
    /// compositor.
    pub fn send(&self, data: &[u8], identifiers: &[Identifier]) -> io::Result<()> {
        let cmd = cross_domain::send(data, identifiers).ok_or_else(|| {
            io_error(format!(
                "a SEND of {} bytes and {} descriptors",
                data.len(),
                identifiers.len()
            ))
        })?;
        self.gpu
            .execbuffer(&cmd, &[], Some(cross_domain::QUERY_RING))
            .map_err(|e| io_error(format!("cross-domain SEND: {e}")))
    }

    /// WRITE: bytes for the compositor's end of write pipe `identifier`.
    pub fn write_pipe(&self, identifier: u32, data: &[u8], hang_up: bool) -> io::Result<()> {
        let cmd = cross_domain::write(identifier, data, hang_up)
            .ok_or_else(|| io_error(format!("a WRITE of {} bytes", data.len())))?;
        self.gpu
            .execbuffer(&cmd, &[], Some(cross_domain::QUERY_RING))
            .map_err(|e| io_error(format!("cross-domain WRITE: {e}")))
    }

    /// The identifier the host will give the next read pipe of a SEND.
    pub fn next_read_pipe(&mut self) -> u32 {
        let id = self.next_read_pipe;
        self.next_read_pipe = self.next_read_pipe.wrapping_add(1);
        id
    }

    fn requirements(
        &self,
        width: u32,
        height: u32,
        drm_format: u32,
    ) -> io::Result<ImageRequirements> {
        let cmd = cross_domain::get_image_requirements(width, height, drm_format, 0);
        self.gpu
            .execbuffer(&cmd, &[self.query.bo], Some(cross_domain::QUERY_RING))
            .map_err(|e| io_error(format!("GET_IMAGE_REQUIREMENTS: {e}")))?;
        self.gpu
            .wait(self.query.bo)
            .map_err(|e| io_error(format!("waiting for image requirements: {e}")))?;
        ImageRequirements::parse(self.query_map.as_slice())
            .ok_or_else(|| io_error("a short query ring".into()))
    }

    fn host_blob(&self, blob_id: u32, size: u64, flags: u32) -> io::Result<HostBlob> {
        let blob = self
            .gpu
            .create_blob(BLOB_MEM_HOST3D, flags, size, u64::from(blob_id))?;
        let mut held = HostBlob {
            gpu: self.gpu.clone(),
            blob,
            map: None,
        };
        // Dropping `held` on a failed map gives the blob back.
        held.map = Some(self.gpu.map(&blob)?);
        Ok(held)
    }

    /// A host image of `rows` rows of at least `row_bytes` bytes, mapped,
    /// to back a shared-memory buffer: asked of the host as a 32-bit image
    /// of that width, so any format of that row size fits.
    pub fn image(&mut self, row_bytes: u32, rows: u32) -> io::Result<HostImage> {
        let width = row_bytes.div_ceil(4);
        let reqs = match self.requirements.get(&(width, rows)) {
            Some(r) => *r,
            None => {
                let r = self.requirements(width, rows, cross_domain::DRM_FORMAT_XRGB8888)?;
                // Bounded: a client cycling through sizes costs one entry each.
                if self.requirements.len() >= 64 {
                    self.requirements.clear();
                }
                self.requirements.insert((width, rows), r);
                r
            }
        };
        if u64::from(reqs.strides[0]) < u64::from(row_bytes)
            || reqs.size < u64::from(reqs.strides[0]) * u64::from(rows)
        {
            return Err(io_error(format!(
                "the host's image of {width}x{rows} has stride {} and size {}",
                reqs.strides[0], reqs.size
            )));
        }
        let blob = self.host_blob(
            reqs.blob_id,
            reqs.size,
            BLOB_FLAG_USE_MAPPABLE | BLOB_FLAG_USE_SHAREABLE,
        )?;
        Ok(HostImage {
            blob,
            stride: reqs.strides[0],
        })
    }

    /// The bytes of a descriptor the compositor sent (a blob identifier of
    /// `size` bytes), mapped through a host blob and copied out.
    pub fn import(&self, identifier: u32, size: u32) -> io::Result<Vec<u8>> {
        let page = 4096u64;
        let mapped = u64::from(size).div_ceil(page).max(1) * page;
        let blob = self.host_blob(identifier, mapped, BLOB_FLAG_USE_MAPPABLE)?;
        Ok(blob.bytes()[..size as usize].to_vec())
    }
}
