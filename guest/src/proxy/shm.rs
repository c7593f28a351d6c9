//! Shared-memory pools and buffers. A pool stays in the guest: the proxy
//! keeps the client's descriptor. Each buffer made from it is backed by a
//! host image of its own, and on commit the damaged rectangles are copied
//! from the client's pool into it with `pread` (`FileExt::read_at`), so a
//! client that shrinks its pool gets an error, not the proxy a SIGBUS.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::rc::Rc;

use nix::sys::stat::{fstat, SFlag};
use wayland_client::protocol::{wl_display, wl_shm};

use super::end::{client_error, End};
use super::host::HostImage;
use super::surfaces::{Rect, Stale};

/// A pool: the client's file and its size.
pub struct Pool {
    file: Rc<File>,
    size: u64,
    /// The wl_shm it came from, on which the host pools are made.
    pub shm: u32,
}

/// A buffer: where its pixels are in the client's pool, and the host image
/// that shows them.
pub struct ShmBuffer {
    file: Rc<File>,
    offset: u64,
    width: u32,
    height: u32,
    stride: u32,
    /// Bytes per pixel, where the format is one the proxy knows; else
    /// damage copies whole rows.
    bpp: Option<u32>,
    image: Box<dyn HostImage>,
    /// What of the host image is behind the pool.
    pub stale: Stale,
}

/// A `wl_shm_pool.create_buffer` checked against its pool: what the host
/// image must hold.
pub struct NewBuffer {
    file: Rc<File>,
    /// The pool's wl_shm.
    pub shm: u32,
    offset: u64,
    pub width: u32,
    pub height: u32,
    stride: u32,
    bpp: Option<u32>,
    pub format: u32,
}

impl NewBuffer {
    /// The bytes of a row the host image must hold.
    pub fn row_bytes(&self) -> u32 {
        self.bpp.map_or(self.stride, |b| self.width * b)
    }
}

/// Bytes per pixel of a wl_shm format (0 and 1 are ARGB8888 and XRGB8888;
/// the rest are DRM fourccs).
pub fn bytes_per_pixel(format: u32) -> Option<u32> {
    let fourcc = |s: &[u8; 4]| u32::from_le_bytes(*s);
    match format {
        0 | 1 => Some(4),
        f if [
            b"AR24", b"XR24", b"AB24", b"XB24", b"RA24", b"RX24", b"BA24", b"BX24", b"AR30",
            b"XR30", b"AB30", b"XB30",
        ]
        .iter()
        .any(|s| fourcc(s) == f) =>
        {
            Some(4)
        }
        f if [b"RG16", b"BG16", b"AR15", b"XR15", b"AR12", b"XR12"]
            .iter()
            .any(|s| fourcc(s) == f) =>
        {
            Some(2)
        }
        f if [b"RG24", b"BG24"].iter().any(|s| fourcc(s) == f) => Some(3),
        f if [b"R8  ", b"C8  "].iter().any(|s| fourcc(s) == f) => Some(1),
        _ => None,
    }
}

/// The length of a regular file, or None for anything else.
fn file_len(file: &File) -> Option<i64> {
    fstat(file)
        .ok()
        .filter(|s| SFlag::from_bits_truncate(s.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG)
        .map(|s| s.st_size)
}

/// One client's pools and buffers, and the formats the compositor takes.
#[derive(Default)]
pub struct Shm {
    /// `wl_shm.format` events the compositor sent.
    pub formats: HashSet<u32>,
    pools: HashMap<u32, Pool>,
    buffers: HashMap<u32, ShmBuffer>,
}

impl Shm {
    /// `wl_shm.create_pool` on `shm`: pool `pool` of `size` bytes of `fd`,
    /// which must be a file at least that long.
    pub fn create_pool(&mut self, shm: u32, pool: u32, fd: OwnedFd, size: i32) -> Result<(), End> {
        let file = File::from(fd);
        if size <= 0 {
            return Err(client_error(
                shm,
                wl_shm::Error::InvalidStride,
                format!("a pool of {size} bytes"),
            ));
        }
        if file_len(&file).is_none_or(|len| len < i64::from(size)) {
            return Err(client_error(
                shm,
                wl_shm::Error::InvalidFd,
                format!("a pool of {size} bytes on a descriptor that is not a file that long"),
            ));
        }
        self.pools.insert(
            pool,
            Pool {
                file: Rc::new(file),
                size: size as u64,
                shm,
            },
        );
        Ok(())
    }

    /// `wl_shm_pool.resize`: only larger, and only as far as its file.
    pub fn resize_pool(&mut self, id: u32, size: i32) -> Result<(), End> {
        let pool = self
            .pools
            .get_mut(&id)
            .ok_or_else(|| client_error(id, wl_display::Error::InvalidObject, "no such pool"))?;
        let len = file_len(&pool.file).unwrap_or(0);
        if size < 0 || (size as u64) < pool.size || len < i64::from(size) {
            return Err(client_error(
                id,
                wl_shm::Error::InvalidFd,
                format!(
                    "resizing a pool of {} bytes to {size} (its file has {len})",
                    pool.size
                ),
            ));
        }
        pool.size = size as u64;
        Ok(())
    }

    pub fn destroy_pool(&mut self, id: u32) {
        self.pools.remove(&id);
    }

    /// Checks `wl_shm_pool.create_buffer` on `pool_id`: (offset, width,
    /// height, stride) inside the pool, in a format the compositor takes
    /// (ARGB8888 and XRGB8888 every compositor takes, the protocol says so,
    /// before their `format` events arrive; others only once announced).
    pub fn check_buffer(
        &self,
        pool_id: u32,
        (offset, width, height, stride): (i32, i32, i32, i32),
        format: u32,
    ) -> Result<NewBuffer, End> {
        let pool = self.pools.get(&pool_id).ok_or_else(|| {
            client_error(pool_id, wl_display::Error::InvalidObject, "no such pool")
        })?;
        if format > 1 && !self.formats.contains(&format) {
            return Err(client_error(
                pool.shm,
                wl_shm::Error::InvalidFormat,
                format!("format {format:#x}, which the compositor did not announce"),
            ));
        }
        let bpp = bytes_per_pixel(format);
        let fits = offset >= 0
            && width > 0
            && height > 0
            && stride > 0
            && bpp.is_none_or(|b| i64::from(stride) >= i64::from(width) * i64::from(b))
            && (offset as u64) + (stride as u64) * (height as u64) <= pool.size;
        if !fits {
            return Err(client_error(
                pool_id,
                wl_shm::Error::InvalidStride,
                format!(
                    "a {width}x{height} buffer of stride {stride} at {offset} in a pool of {} bytes",
                    pool.size
                ),
            ));
        }
        Ok(NewBuffer {
            file: pool.file.clone(),
            shm: pool.shm,
            offset: offset as u64,
            width: width as u32,
            height: height as u32,
            stride: stride as u32,
            bpp,
            format,
        })
    }

    /// Buffer `id`, backed by `image`: all of it stale until its first
    /// commit copies it whole.
    pub fn add_buffer(&mut self, id: u32, new: NewBuffer, image: Box<dyn HostImage>) {
        self.buffers.insert(
            id,
            ShmBuffer {
                file: new.file,
                offset: new.offset,
                width: new.width,
                height: new.height,
                stride: new.stride,
                bpp: new.bpp,
                image,
                stale: Stale::All,
            },
        );
    }

    pub fn destroy_buffer(&mut self, id: u32) {
        self.buffers.remove(&id);
    }

    pub fn is_buffer(&self, id: u32) -> bool {
        self.buffers.contains_key(&id)
    }

    pub fn buffer_mut(&mut self, id: u32) -> Option<&mut ShmBuffer> {
        self.buffers.get_mut(&id)
    }
}

/// Copies `what` of `buffer` from the client's pool into its host image;
/// the bytes copied, or why the pool does not hold them.
pub fn copy(buffer: &mut ShmBuffer, what: &Stale) -> Result<u64, String> {
    let whole = Rect {
        x: 0,
        y: 0,
        w: i64::from(buffer.width),
        h: i64::from(buffer.height),
    };
    let rects = match what {
        Stale::All => vec![whole],
        Stale::Rects(r) => r.clone(),
    };
    let host_stride = buffer.image.stride() as usize;
    let mut copied = 0u64;
    for r in rects {
        let x0 = r.x.clamp(0, whole.w);
        let x1 = r.x.saturating_add(r.w).clamp(0, whole.w);
        let y0 = r.y.clamp(0, whole.h);
        let y1 = r.y.saturating_add(r.h).clamp(0, whole.h);
        if x0 >= x1 || y0 >= y1 {
            continue;
        }
        let (start, len) = match buffer.bpp {
            Some(b) => (x0 as usize * b as usize, (x1 - x0) as usize * b as usize),
            None => (0, buffer.stride as usize),
        };
        let image = buffer.image.bytes_mut();
        for y in y0 as usize..y1 as usize {
            let dst_at = y * host_stride + start;
            let dst = image
                .get_mut(dst_at..dst_at + len)
                .ok_or("a row past the host image")?;
            let src = buffer.offset + (y as u64) * u64::from(buffer.stride) + start as u64;
            let n = buffer
                .file
                .read_at(dst, src)
                .map_err(|e| format!("reading the pool: {e}"))?;
            if n != len {
                return Err(format!(
                    "the pool ends at byte {} inside a buffer",
                    src + n as u64
                ));
            }
            copied += len as u64;
        }
    }
    Ok(copied)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::cross_domain::{Identifier, ID_TYPE_VIRTGPU_BLOB};
    use std::io::Write;

    /// Host memory as a test plays it.
    pub struct FakeImage {
        pub stride: u32,
        pub bytes: Vec<u8>,
    }

    impl HostImage for FakeImage {
        fn stride(&self) -> u32 {
            self.stride
        }
        fn size(&self) -> u64 {
            self.bytes.len() as u64
        }
        fn bytes_mut(&mut self) -> &mut [u8] {
            &mut self.bytes
        }
        fn identifier(&self) -> Identifier {
            Identifier {
                id: 1,
                kind: ID_TYPE_VIRTGPU_BLOB,
                size: self.bytes.len() as u32,
            }
        }
    }

    /// A pool file of `len` bytes, byte i = i % 251.
    pub fn pool_file(len: usize) -> OwnedFd {
        let fd =
            nix::sys::memfd::memfd_create(c"pool", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
        let mut f = File::from(fd);
        f.write_all(&(0..len).map(|i| (i % 251) as u8).collect::<Vec<_>>())
            .unwrap();
        f.into()
    }

    #[test]
    fn pools_must_be_files_as_long_as_they_say() {
        let mut shm = Shm::default();
        let code = |e: End| match e {
            End::Client { code, .. } => code,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            code(shm.create_pool(5, 6, pool_file(100), 200).unwrap_err()),
            u32::from(wl_shm::Error::InvalidFd)
        );
        let (r, _w) = nix::unistd::pipe().unwrap();
        assert_eq!(
            code(shm.create_pool(5, 6, r, 4).unwrap_err()),
            u32::from(wl_shm::Error::InvalidFd),
            "a pipe is no pool"
        );
        assert_eq!(
            code(shm.create_pool(5, 6, pool_file(100), 0).unwrap_err()),
            u32::from(wl_shm::Error::InvalidStride)
        );
        shm.create_pool(5, 6, pool_file(4096), 1024).unwrap();
        assert!(shm.resize_pool(6, 512).is_err(), "pools only grow");
        assert!(shm.resize_pool(6, 8192).is_err(), "past its file");
        shm.resize_pool(6, 4096).unwrap();
        assert!(shm.resize_pool(7, 4096).is_err(), "no pool 7");
    }

    #[test]
    fn a_buffer_must_lie_inside_its_pool_in_an_announced_format() {
        let mut shm = Shm::default();
        shm.create_pool(5, 6, pool_file(4096), 4096).unwrap();
        let b = shm.check_buffer(6, (0, 16, 16, 64), 1).unwrap();
        assert_eq!((b.shm, b.row_bytes()), (5, 64));
        assert!(
            shm.check_buffer(6, (3096, 16, 16, 64), 1).is_err(),
            "past the end"
        );
        assert!(
            shm.check_buffer(6, (0, 16, 16, 32), 0).is_err(),
            "stride too small"
        );
        assert!(shm.check_buffer(6, (-4, 4, 4, 16), 0).is_err());
        let rg16 = u32::from_le_bytes(*b"RG16");
        assert!(
            shm.check_buffer(6, (0, 4, 4, 8), rg16).is_err(),
            "not announced"
        );
        shm.formats.insert(rg16);
        assert_eq!(
            shm.check_buffer(6, (0, 4, 4, 8), rg16).unwrap().row_bytes(),
            8
        );
        assert!(shm.check_buffer(9, (0, 4, 4, 16), 0).is_err(), "no pool 9");
    }

    #[test]
    fn damage_is_copied_row_by_row_and_a_shrunk_pool_is_an_error() {
        let mut shm = Shm::default();
        shm.create_pool(5, 6, pool_file(4096), 4096).unwrap();
        let new = shm.check_buffer(6, (128, 8, 8, 32), 1).unwrap();
        let image = FakeImage {
            stride: 64,
            bytes: vec![0; 64 * 8],
        };
        shm.add_buffer(7, new, Box::new(image));
        let b = shm.buffer_mut(7).unwrap();
        let rect = Rect {
            x: 2,
            y: 1,
            w: 3,
            h: 2,
        };
        assert_eq!(copy(b, &Stale::Rects(vec![rect])).unwrap(), 2 * 12);
        let bytes = b.image.bytes_mut().to_vec();
        for (y, x) in [(1usize, 2usize), (2, 4)] {
            let want = ((128 + y * 32 + x * 4) % 251) as u8;
            assert_eq!(bytes[y * 64 + x * 4], want);
        }
        assert_eq!(bytes[0], 0, "outside the damage: untouched");
        assert_eq!(copy(b, &Stale::All).unwrap(), 8 * 32);
        // The client shrinks its file under the pool.
        let file = b.file.try_clone().unwrap();
        file.set_len(200).unwrap();
        assert!(copy(b, &Stale::All).is_err());
    }
}
