//! The 2D commands' handlers beside the display: what a 2D resource,
//! a scanout or the cursor changes is told to the broker's display thread
//! (`DisplayLink`), after `Resources` has checked and applied it.

use ipc::{DisplayRequest, PixelRect};
use vm_memory::GuestMemoryMmap;
use wire::{Refusal, ResourceFlush, SetScanout, UpdateCursor};

use super::GpuDevice;

impl GpuDevice {
    pub(super) fn unref(&self, id: u32) -> Result<(), Refusal> {
        let was_shared = self.resources().unref(id)?;
        if was_shared {
            self.display
                .command(&DisplayRequest::ReleaseSurface { resource_id: id }, &[]);
        }
        Ok(())
    }

    pub(super) fn set_scanout(&self, s: &SetScanout) -> Result<(), Refusal> {
        let mut resources = self.resources();
        resources.set_scanout(s)?;
        let (scanout, id) = (s.scanout_id.to_native(), s.resource_id.to_native());
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
            x: s.r.x.to_native(),
            y: s.r.y.to_native(),
            width: s.r.width.to_native(),
            height: s.r.height.to_native(),
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
        if self.blobs.contains(id) {
            // A blob shown with SET_SCANOUT_BLOB: refresh the host copy
            // from guest memory first. One never shown has nothing to flush.
            let mut resources = self.resources();
            if !resources.exists(id) {
                return Ok(());
            }
            resources.refresh_blob_shadow(mem, id, &f.r)?;
        }
        let parts = self.resources().flush(f)?;
        for (scanout, rect) in parts {
            self.display
                .command(&DisplayRequest::Flush { scanout, rect }, &[]);
        }
        Ok(())
    }

    pub(super) fn cursor(&self, c: &UpdateCursor, move_only: bool) -> Result<(), Refusal> {
        let mut resources = self.resources();
        resources.update_cursor(c, move_only)?;
        let (scanout, x, y) = (c.scanout_id.to_native(), c.x.to_native(), c.y.to_native());
        let id = c.resource_id.to_native();
        // As QEMU's own back-end does: a move naming no resource hides the
        // cursor (Linux sends that when the cursor plane is off).
        let msg = if id == 0 {
            DisplayRequest::CursorHide { scanout }
        } else if move_only {
            DisplayRequest::CursorMove { scanout, x, y }
        } else {
            let (format, image) = resources.cursor_image(id)?;
            DisplayRequest::CursorUpdate {
                scanout,
                x,
                y,
                hot_x: c.hot_x.to_native().min(wire::CURSOR_SIZE - 1),
                hot_y: c.hot_y.to_native().min(wire::CURSOR_SIZE - 1),
                format,
                image,
            }
        };
        drop(resources);
        self.display.command(&msg, &[]);
        Ok(())
    }
}
