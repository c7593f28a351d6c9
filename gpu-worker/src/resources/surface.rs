//! Pixels the device holds and can show (a 2D resource, or a blob's or 3D
//! resource's host copy), made within the memory budget, and the
//! rectangle checks on them.

use wire::*;

use super::budget::MemoryBudget;
use super::pixels::{Backing, Pixels};

/// Pixels the device holds and can show: a 2D resource, or a blob's shadow.
#[derive(Debug)]
pub(super) struct Surface {
    pub(super) width: u32,
    pub(super) height: u32,
    /// Bytes per row of `data`.
    pub(super) stride: u32,
    pub(super) format: u32,
    pub(super) data: Pixels,
    /// Whether the broker has been given `data`'s memfd.
    pub(super) shared: bool,
    /// For the shadow of a guest-memory blob shown with SET_SCANOUT_BLOB:
    /// the blob's layout (offset of the first pixel, row stride) that
    /// flushes copy from. A 2D resource's transfers give their own offset
    /// and use the resource's stride.
    pub(super) blob_layout: Option<(u64, u32)>,
    /// Guest memory ranges, in order, that back the resource.
    pub(super) backing: Backing,
}

impl Surface {
    /// Refuses `r` (the rectangle of a `what` on resource `id`) unless it
    /// lies inside the resource.
    pub(super) fn check_rect(&self, id: u32, r: &Rect, what: &str) -> Result<(), Refusal> {
        if rect_within(r, self.width, self.height) {
            return Ok(());
        }
        refuse(
            RESP_ERR_INVALID_PARAMETER,
            format!(
                "{what} rectangle {r:?} is outside resource {id} ({}x{})",
                self.width, self.height
            ),
        )
    }
}

impl Surface {
    /// A `width`×`height` surface in `format` for resource `id`, its
    /// pixels counted in `budget`.
    pub(super) fn new(
        budget: &mut MemoryBudget,
        id: u32,
        format: u32,
        width: u32,
        height: u32,
    ) -> Result<Surface, Refusal> {
        if !FORMATS_2D.contains(&format) {
            return refuse(
                RESP_ERR_INVALID_PARAMETER,
                format!("format {format} of resource {id} is not a 2D format"),
            );
        }
        if width == 0 || height == 0 {
            return refuse(
                RESP_ERR_INVALID_PARAMETER,
                format!("resource {id} of {width}x{height}"),
            );
        }
        let stride = width.checked_mul(BYTES_PER_PIXEL);
        let size = stride.and_then(|s| u64::from(s).checked_mul(u64::from(height)));
        let (Some(stride), Some(size)) = (stride, size) else {
            return refuse(
                RESP_ERR_OUT_OF_MEMORY,
                format!("{width}x{height} overflows"),
            );
        };
        budget.check(size)?;
        let Ok(len) = usize::try_from(size) else {
            return refuse(
                RESP_ERR_OUT_OF_MEMORY,
                "resource larger than the address space",
            );
        };
        let data = match Pixels::new(len) {
            Ok(d) => d,
            Err(e) => return refuse(RESP_ERR_OUT_OF_MEMORY, e.to_string()),
        };
        budget.reserve(size)?;
        Ok(Surface {
            width,
            height,
            stride,
            format,
            data,
            shared: false,
            blob_layout: None,
            backing: Backing::default(),
        })
    }
}

/// Whether `r` lies inside a `width`×`height` surface, without overflow.
pub(super) fn rect_within(r: &Rect, width: u32, height: u32) -> bool {
    let (x, y, w, h) = (
        r.x.to_native(),
        r.y.to_native(),
        r.width.to_native(),
        r.height.to_native(),
    );
    x.checked_add(w).is_some_and(|right| right <= width)
        && y.checked_add(h).is_some_and(|bottom| bottom <= height)
}
