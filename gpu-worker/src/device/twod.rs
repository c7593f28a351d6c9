//! The 2D commands' handlers beside the display: what a 2D resource,
//! a scanout or the cursor changes is told to the broker's display thread
//! (`DisplayLink`), after `Resources` has checked and applied it.

use ipc::{DisplayRequest, PixelRect};
use vm_memory::GuestMemoryMmap;
use wire::{Rect, Refusal, ResourceFlush, TransferToHost2d, UpdateCursor};

use super::GpuDevice;

impl GpuDevice {
    /// RESOURCE_UNREF of a resource of any kind: one removal from the
    /// table; then the broker lets go of its pixels if it had them, and
    /// render-worker of a blob's memory or a 3D resource.
    pub(super) fn unref(&self, id: u32) -> Result<(), Refusal> {
        let gone = self.resources().unref(id)?;
        if gone.shared {
            self.display
                .command(&DisplayRequest::ReleaseSurface { resource_id: id }, &[]);
        }
        if gone.rendered {
            self.render_done(ipc::RenderRequest::Unref { resource_id: id })?;
        }
        Ok(())
    }

    /// TRANSFER_TO_HOST_2D, to a 2D resource or a blob.
    pub(super) fn transfer_to_host_2d(
        &self,
        mem: &GuestMemoryMmap,
        t: &TransferToHost2d,
    ) -> Result<(), Refusal> {
        if self.resources().is_blob(t.resource_id.to_native()) {
            return self.transfer_to_blob(t);
        }
        self.resources().transfer_to_host_2d(mem, t)
    }

    /// Shows `r` of resource `id` (0: nothing) on `scanout`, and tells the
    /// display.
    pub(super) fn set_scanout(&self, scanout: u32, id: u32, r: &Rect) -> Result<(), Refusal> {
        let mut resources = self.resources();
        if let Some(shape) = resources.three_d(id) {
            // A 3D resource shows through a host copy that render-worker
            // reads it back into at each flush: made, and handed over, the
            // first time.
            if let Some((fd, stride)) = resources.three_d_shadow(id)? {
                self.render_done_with_fd(
                    ipc::RenderRequest::ScanoutShadow {
                        resource_id: id,
                        width: shape.width,
                        height: shape.height,
                        stride,
                    },
                    fd,
                )?;
            }
        }
        resources.show(scanout, id, r)?;
        if !self.display.is_connected() {
            return Ok(());
        }
        if id == 0 {
            self.display.command(
                &DisplayRequest::SetScanout {
                    scanout,
                    source: None,
                },
                &[],
            );
            return Ok(());
        }
        // The broker maps the resource's memory the first time it is shown.
        if let Some(surface) = resources.share(id)? {
            let fd = resources.memfd(id).into_iter().collect::<Vec<_>>();
            self.display
                .command(&DisplayRequest::ShareSurface(surface), &fd);
        }
        let rect = PixelRect {
            x: r.x.to_native(),
            y: r.y.to_native(),
            width: r.width.to_native(),
            height: r.height.to_native(),
        };
        self.display.command(
            &DisplayRequest::SetScanout {
                scanout,
                source: Some((id, rect)),
            },
            &[],
        );
        Ok(())
    }

    pub(super) fn flush(&self, mem: &GuestMemoryMmap, f: &ResourceFlush) -> Result<(), Refusal> {
        let id = f.resource_id.to_native();
        // Not `if let` on the guard: it would stay locked in the block.
        let three_d = self.resources().three_d(id);
        if let Some(shape) = three_d {
            if !self.resources().has_surface(id) {
                // Never shown: nothing to flush.
                return Ok(());
            }
            let (x, y, w, h) = (
                f.r.x.to_native(),
                f.r.y.to_native(),
                f.r.width.to_native(),
                f.r.height.to_native(),
            );
            shape.check_box(id, 0, [x, y, 0, w, h, 1])?;
            self.render_done(ipc::RenderRequest::ReadBack {
                resource_id: id,
                rect: PixelRect {
                    x,
                    y,
                    width: w,
                    height: h,
                },
            })?;
        }
        let parts = {
            let mut resources = self.resources();
            if resources.is_blob(id) {
                // A blob shown with SET_SCANOUT_BLOB: refresh the host copy
                // from guest memory first. One never shown has nothing to
                // flush.
                if resources.blob_is_shown(id) {
                    resources.refresh_blob_shadow(mem, id, &f.r)?;
                } else {
                    return Ok(());
                }
            }
            resources.flush(f)?
        };
        for (scanout, rect) in parts {
            self.display
                .command(&DisplayRequest::Flush { scanout, rect }, &[]);
        }
        Ok(())
    }

    /// UPDATE_CURSOR: the image from a 2D resource or a guest-memory blob.
    pub(super) fn update_cursor(
        &self,
        mem: &GuestMemoryMmap,
        c: &UpdateCursor,
    ) -> Result<(), Refusal> {
        let id = c.resource_id.to_native();
        let mut resources = self.resources();
        if resources.is_blob(id) {
            drop(resources);
            let image = self.blob_cursor_image(mem, c)?;
            return self.show_cursor(c, wire::FORMAT_B8G8R8A8_UNORM, image);
        }
        resources.update_cursor(c, false)?;
        if id == 0 {
            drop(resources);
            self.display.command(
                &DisplayRequest::CursorHide {
                    scanout: c.scanout_id.to_native(),
                },
                &[],
            );
            return Ok(());
        }
        let (format, image) = resources.cursor_image(id)?;
        drop(resources);
        self.show_cursor(c, format, image)
    }

    /// MOVE_CURSOR.
    pub(super) fn move_cursor(&self, c: &UpdateCursor) -> Result<(), Refusal> {
        self.resources().update_cursor(c, true)?;
        let (scanout, x, y) = (c.scanout_id.to_native(), c.x.to_native(), c.y.to_native());
        // As QEMU's own back-end does: a move naming no resource hides the
        // cursor (Linux sends that when the cursor plane is off).
        let msg = match c.resource_id.to_native() {
            0 => DisplayRequest::CursorHide { scanout },
            _ => DisplayRequest::CursorMove { scanout, x, y },
        };
        self.display.command(&msg, &[]);
        Ok(())
    }

    /// The one place a cursor image is sent to the display: its position
    /// and hot spot from `c`, the hot spot kept inside the image.
    fn show_cursor(&self, c: &UpdateCursor, format: u32, image: Vec<u8>) -> Result<(), Refusal> {
        self.display.command(
            &DisplayRequest::CursorUpdate {
                scanout: c.scanout_id.to_native(),
                x: c.x.to_native(),
                y: c.y.to_native(),
                hot_x: c.hot_x.to_native().min(wire::CURSOR_SIZE - 1),
                hot_y: c.hot_y.to_native().min(wire::CURSOR_SIZE - 1),
                format,
                image,
            },
            &[],
        );
        Ok(())
    }
}
