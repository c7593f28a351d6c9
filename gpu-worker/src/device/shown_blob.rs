//! Guest-memory blobs shown like 2D resources: SET_SCANOUT_BLOB (a host
//! copy in the blob's layout, refreshed on RESOURCE_FLUSH), TRANSFER_TO_HOST_2D
//! on a blob (nothing to copy), and a cursor image read from a blob.

use vm_memory::GuestMemoryMmap;
use wire::*;

use super::GpuDevice;
use crate::resources::{read_ranges, Blob};

impl GpuDevice {
    /// SET_SCANOUT_BLOB of a guest-memory blob: the device keeps a host
    /// copy in the blob's layout (refreshed from guest memory on each
    /// RESOURCE_FLUSH), shown like a 2D resource. Host blobs are not shown
    /// (their memory is render-worker's).
    pub(super) fn set_scanout_blob(&self, b: &SetScanoutBlob) -> Result<(), Refusal> {
        let (scanout_id, id) = (b.scanout_id.to_native(), b.resource_id.to_native());
        if id == 0 {
            return self.set_scanout(scanout_id, 0, &b.r);
        }
        if scanout_id as usize >= self.scanouts.len() {
            return refuse(
                RESP_ERR_INVALID_SCANOUT_ID,
                format!(
                    "scanout {scanout_id}, but the device has {}",
                    self.scanouts.len()
                ),
            );
        }
        let Some(blob_size) = self.guest_blob_size(id)? else {
            return refuse(
                RESP_ERR_UNSPEC,
                format!("blob {id} is a host blob: scanout of host blobs is not supported"),
            );
        };
        let (w, h, format) = (
            b.width.to_native(),
            b.height.to_native(),
            b.format.to_native(),
        );
        let (stride, offset) = (
            b.strides[0].to_native(),
            u64::from(b.offsets[0].to_native()),
        );
        if !is_2d_format(format) {
            return refuse(RESP_ERR_INVALID_PARAMETER, format!("format {format}"));
        }
        let size = ipc::ScanoutSize {
            width: w,
            height: h,
        };
        let row = u64::from(w) * u64::from(BYTES_PER_PIXEL);
        let end = u64::from(stride)
            .checked_mul(u64::from(h.saturating_sub(1)))
            .and_then(|e| e.checked_add(offset))
            .and_then(|e| e.checked_add(row));
        if !size.is_valid() || u64::from(stride) < row || end.is_none_or(|e| e > blob_size) {
            return refuse(
                RESP_ERR_INVALID_PARAMETER,
                format!(
                    "{w}x{h}, stride {stride}, offset {offset} does not fit blob {id} of \
                     {blob_size} bytes"
                ),
            );
        }
        let (was_shared, made) = self
            .resources()
            .blob_shadow(id, w, h, format, offset, stride);
        // The old copy is gone either way: the broker lets go of it.
        if was_shared {
            self.display.command(
                &ipc::DisplayRequest::ReleaseSurface { resource_id: id },
                &[],
            );
        }
        made?;
        self.set_scanout(scanout_id, id, &b.r)
    }

    /// TRANSFER_TO_HOST_2D on a blob. Linux sends it for every dumb buffer
    /// it flushes, and makes dumb buffers guest-memory blobs once
    /// RESOURCE_BLOB is offered without VIRGL. The device reads a
    /// guest-memory blob's pages where it needs them (a scanout copy is
    /// refreshed on RESOURCE_FLUSH), so there is nothing to copy; QEMU
    /// answers the same. A host blob has no guest pages to transfer from.
    pub(super) fn transfer_to_blob(&self, t: &TransferToHost2d) -> Result<(), Refusal> {
        let id = t.resource_id.to_native();
        let Some(size) = self.guest_blob_size(id)? else {
            return refuse(
                RESP_ERR_INVALID_PARAMETER,
                format!("TRANSFER_TO_HOST_2D to host blob {id}, which has no guest pages"),
            );
        };
        let offset = t.offset.to_native();
        if offset >= size {
            return refuse(
                RESP_ERR_INVALID_PARAMETER,
                format!("transfer offset {offset} past blob {id} of {size} bytes"),
            );
        }
        Ok(())
    }

    /// The cursor image of UPDATE_CURSOR naming a guest-memory blob
    /// (Linux's cursor buffers are dumb buffers, so blobs once
    /// RESOURCE_BLOB is offered): the blob's first 64×64 pixels, rows 256
    /// bytes apart, in ARGB8888 (the only cursor format Linux uses), read
    /// from guest memory now.
    pub(super) fn blob_cursor_image(
        &self,
        mem: &GuestMemoryMmap,
        c: &UpdateCursor,
    ) -> Result<Vec<u8>, Refusal> {
        let (scanout, id) = (c.scanout_id.to_native(), c.resource_id.to_native());
        if scanout as usize >= self.scanouts.len() {
            return refuse(
                RESP_ERR_INVALID_SCANOUT_ID,
                format!("cursor on scanout {scanout}"),
            );
        }
        let mut image = vec![0u8; CURSOR_BYTES];
        // Read in place, under the table's lock: a blob may have many
        // ranges, not worth a copy.
        let resources = self.resources();
        let Some(blob) = resources.blob(id) else {
            return refuse(RESP_ERR_INVALID_RESOURCE_ID, format!("no blob {id}"));
        };
        match &blob.guest {
            None => refuse(
                RESP_ERR_INVALID_PARAMETER,
                format!("cursor from host blob {id}, which has no guest pages"),
            ),
            Some(ranges)
                if blob.size < image.len() as u64 || !read_ranges(mem, ranges, 0, &mut image) =>
            {
                refuse(
                    RESP_ERR_INVALID_PARAMETER,
                    format!(
                        "blob {id} of {} bytes holds no 64x64 cursor image",
                        blob.size
                    ),
                )
            }
            Some(_) => Ok(image),
        }
    }

    /// The size of blob `id` if it has guest pages, None for a host blob;
    /// refused if `id` is no blob.
    fn guest_blob_size(&self, id: u32) -> Result<Option<u64>, Refusal> {
        match self.resources().blob(id) {
            Some(Blob { size, guest, .. }) => Ok(guest.is_some().then_some(*size)),
            None => refuse(RESP_ERR_INVALID_RESOURCE_ID, format!("no blob {id}")),
        }
    }
}
