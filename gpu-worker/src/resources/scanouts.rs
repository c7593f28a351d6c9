//! Scanouts and the cursor: what each scanout shows, checked against the
//! resource it names, and which parts of a flushed resource reach which
//! scanout.

use ipc::PixelRect;
use wire::*;

use super::Resources;

/// What a scanout shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanoutState {
    pub resource_id: u32,
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// What every scanout shows, and the resource the cursor shows (with its
/// scanout).
#[derive(Debug)]
pub struct Scanouts {
    pub(super) shown: Vec<Option<ScanoutState>>,
    pub(super) cursor: Option<(u32, u32)>,
}

impl Scanouts {
    pub fn new(count: usize) -> Self {
        Scanouts {
            shown: vec![None; count],
            cursor: None,
        }
    }

    /// Forgets what a resource showed (it is gone).
    pub(super) fn forget(&mut self, id: u32) {
        for s in &mut self.shown {
            if s.is_some_and(|s| s.resource_id == id) {
                *s = None;
            }
        }
        if self.cursor.is_some_and(|(c, _)| c == id) {
            self.cursor = None;
        }
    }
}

impl Resources {
    /// SET_SCANOUT.
    pub fn set_scanout(&mut self, s: &SetScanout) -> Result<(), Refusal> {
        self.show(s.scanout_id.to_native(), s.resource_id.to_native(), &s.r)
    }

    /// Shows `rect` of resource `id` (a 2D resource or a shown blob's copy;
    /// 0: nothing) on scanout `scanout_id`.
    pub fn show(&mut self, scanout_id: u32, id: u32, r: &Rect) -> Result<(), Refusal> {
        let Some(slot) = usize::try_from(scanout_id)
            .ok()
            .filter(|i| *i < self.scanouts.shown.len())
        else {
            return refuse(
                RESP_ERR_INVALID_SCANOUT_ID,
                format!(
                    "scanout {scanout_id}, but the device has {}",
                    self.scanouts.shown.len()
                ),
            );
        };
        if id == 0 {
            self.scanouts.shown[slot] = None;
            return Ok(());
        }
        let res = self.surface(id)?;
        if r.width.to_native() == 0 || r.height.to_native() == 0 {
            return refuse(
                RESP_ERR_INVALID_PARAMETER,
                format!("scanout rectangle {r:?} is empty"),
            );
        }
        res.check_rect(id, r, "scanout")?;
        self.scanouts.shown[slot] = Some(ScanoutState {
            resource_id: id,
            x: r.x.to_native(),
            y: r.y.to_native(),
            width: r.width.to_native(),
            height: r.height.to_native(),
        });
        Ok(())
    }

    /// Checks a flush; returns, for each scanout that shows part of the
    /// flushed rectangle, that part in the scanout's coordinates.
    pub fn flush(&self, f: &ResourceFlush) -> Result<Vec<(u32, PixelRect)>, Refusal> {
        let id = f.resource_id.to_native();
        let res = self.surface(id)?;
        res.check_rect(id, &f.r, "flush")?;
        // Inside the resource (checked above): no sum overflows.
        let (fx, fy) = (f.r.x.to_native(), f.r.y.to_native());
        let (fr, fb) = (fx + f.r.width.to_native(), fy + f.r.height.to_native());
        let mut out = Vec::new();
        for (i, s) in self.scanouts.shown.iter().enumerate() {
            let Some(s) = s.filter(|s| s.resource_id == id) else {
                continue;
            };
            let (left, top) = (fx.max(s.x), fy.max(s.y));
            let (right, bottom) = (fr.min(s.x + s.width), fb.min(s.y + s.height));
            if left < right && top < bottom {
                out.push((
                    i as u32,
                    PixelRect {
                        x: left - s.x,
                        y: top - s.y,
                        width: right - left,
                        height: bottom - top,
                    },
                ));
            }
        }
        Ok(out)
    }

    /// The 64×64 cursor image of resource `id` (its top-left corner,
    /// transparent where the resource is smaller) and its format.
    pub fn cursor_image(&self, id: u32) -> Result<(u32, Vec<u8>), Refusal> {
        let res = self.surface(id)?;
        let mut image = vec![0u8; CURSOR_BYTES];
        let row_bytes = (res.width.min(CURSOR_SIZE) * BYTES_PER_PIXEL) as usize;
        let dst_stride = (CURSOR_SIZE * BYTES_PER_PIXEL) as usize;
        let src = res.data.as_slice();
        for row in 0..res.height.min(CURSOR_SIZE) as usize {
            let from = row * res.stride as usize;
            image[row * dst_stride..row * dst_stride + row_bytes]
                .copy_from_slice(&src[from..from + row_bytes]);
        }
        Ok((res.format, image))
    }

    pub fn update_cursor(&mut self, c: &UpdateCursor, move_only: bool) -> Result<(), Refusal> {
        let scanout_id = c.scanout_id.to_native();
        if scanout_id as usize >= self.scanouts.shown.len() {
            return refuse(
                RESP_ERR_INVALID_SCANOUT_ID,
                format!("cursor on scanout {scanout_id}"),
            );
        }
        if move_only {
            return Ok(());
        }
        let id = c.resource_id.to_native();
        if id == 0 {
            self.scanouts.cursor = None;
            return Ok(());
        }
        self.surface(id)?;
        self.scanouts.cursor = Some((id, scanout_id));
        Ok(())
    }

    pub fn scanout(&self, scanout_id: usize) -> Option<ScanoutState> {
        self.scanouts.shown.get(scanout_id).copied().flatten()
    }
}
