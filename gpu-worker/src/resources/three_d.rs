//! What gpu-worker keeps of a 3D resource (RESOURCE_CREATE_3D) that
//! render-worker's rutabaga holds: its shape, checked at creation and
//! against every transfer box.

use vm_memory::Le32;
use wire::*;

/// What gpu-worker keeps of a 3D resource render-worker holds: its shape,
/// to check transfers against, and whether it has backing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreeD {
    pub target: u32,
    /// A `VIRGL_FORMAT_*`; the 2D ones are the spec's 2D formats.
    pub format: u32,
    pub width: u32,
    pub height: u32,
    pub depth: u32,
    pub array_size: u32,
    pub last_level: u32,
    pub backed: bool,
}

/// `PIPE_BUFFER`: a 3D resource that is bytes (`width` of them), not
/// texels.
pub(super) const PIPE_BUFFER: u32 = 0;
/// gallium's deepest mip chain: 2^15 texels wide.
const MAX_LEVELS: u32 = 15;

impl ThreeD {
    /// The shape RESOURCE_CREATE_3D asks for, and the host memory it may
    /// take (an upper bound: the format's size is not known here beyond
    /// the 2D formats, so 16 bytes a texel, the widest, for the others;
    /// a mip chain at most doubles it), or why it cannot be made.
    pub fn new(c: &ResourceCreate3d) -> Result<(ThreeD, u64), Refusal> {
        let n = |v: Le32| v.to_native();
        let shape = ThreeD {
            target: n(c.target),
            format: n(c.format),
            width: n(c.width),
            height: n(c.height),
            depth: n(c.depth),
            array_size: n(c.array_size),
            last_level: n(c.last_level),
            backed: false,
        };
        let id = n(c.resource_id);
        if shape.width == 0 || shape.height == 0 || shape.depth == 0 || shape.array_size == 0 {
            return refuse(
                RESP_ERR_INVALID_PARAMETER,
                format!("3D resource {id} of {shape:?}"),
            );
        }
        if shape.last_level > MAX_LEVELS {
            return refuse(
                RESP_ERR_INVALID_PARAMETER,
                // In u64: a last level of u32::MAX overflowed here (the
                // fuzzer found it).
                format!(
                    "3D resource {id} with {} levels",
                    u64::from(shape.last_level) + 1
                ),
            );
        }
        let texel = if shape.target == PIPE_BUFFER {
            1
        } else if FORMATS_2D.contains(&n(c.format)) {
            u64::from(BYTES_PER_PIXEL)
        } else {
            16
        };
        let levels = if shape.last_level > 0 { 2 } else { 1 };
        let bytes = [
            u64::from(shape.width),
            u64::from(shape.height),
            u64::from(shape.depth),
            u64::from(shape.array_size),
            u64::from(n(c.nr_samples).max(1)),
            texel,
            levels,
        ]
        .into_iter()
        .try_fold(1u64, u64::checked_mul);
        match bytes {
            Some(b) => Ok((shape, b)),
            None => refuse(
                RESP_ERR_OUT_OF_MEMORY,
                format!("3D resource {id} of {shape:?} overflows"),
            ),
        }
    }

    /// Refuses a transfer box that is not inside `level` of the resource.
    pub fn check_box(&self, id: u32, level: u32, b: [u32; 6]) -> Result<(), Refusal> {
        let [x, y, z, w, h, d] = b;
        let at = |size: u32| (size >> level.min(31)).max(1);
        // Layers of an array are its z; a 3D texture's depth shrinks with
        // its levels.
        let layers = at(self.depth).max(self.array_size);
        let fits = |o: u32, len: u32, size: u32| o.checked_add(len).is_some_and(|e| e <= size);
        if level <= self.last_level
            && fits(x, w, at(self.width))
            && fits(y, h, at(self.height))
            && fits(z, d, layers)
        {
            return Ok(());
        }
        refuse(
            RESP_ERR_INVALID_PARAMETER,
            format!("transfer box {b:?} of level {level} is outside 3D resource {id} ({self:?})"),
        )
    }
}
