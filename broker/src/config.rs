//! The device as the user configured it, and its virtio configuration space.

use ipc::{GpuConfig, JailConfig, ScanoutSize};
use vm_memory::{ByteValued, Le32};
use wire::{MAX_SCANOUTS, MAX_SCANOUT_DIMENSION};

/// `struct virtio_gpu_config` (virtio spec 5.7.4), read by the front-end
/// with GET_CONFIG. `host_page_size` is the field VIRTIO_GPU_F_HOST_PAGE_SIZE
/// adds; that feature is not offered, but QEMU 11.1's `vhost-user-gpu-pci`
/// reads all 20 bytes whatever was negotiated, and took the refusal of the
/// last four as no config at all (no scanouts: the guest's driver gave up).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VirtioGpuConfig {
    pub events_read: Le32,
    pub events_clear: Le32,
    pub num_scanouts: Le32,
    pub num_capsets: Le32,
    pub host_page_size: Le32,
}
// SAFETY: five Le32, no padding, every bit pattern valid.
unsafe impl ByteValued for VirtioGpuConfig {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    pub scanouts: Vec<ScanoutSize>,
    pub max_resource_memory: u64,
    /// `--max-contexts`.
    pub max_contexts: u32,
    /// Bytes in the host-visible region (`--shm-size`).
    pub shm_size: u64,
    /// Capsets render-worker's rutabaga offers (it says so once jailed).
    pub num_capsets: u32,
    /// `--wayland-socket`, where cross-domain is offered.
    pub wayland_socket: Option<String>,
    /// `--context-types`, or its default.
    pub context_types: wire::ContextTypes,
    pub jail: JailConfig,
}

impl DeviceConfig {
    pub fn gpu_config(&self) -> GpuConfig {
        GpuConfig {
            scanouts: self.scanouts.clone(),
            max_resource_memory: self.max_resource_memory,
            jail: self.jail,
            contexts: self.num_capsets > 0,
        }
    }

    pub fn virtio_gpu_config(&self) -> VirtioGpuConfig {
        VirtioGpuConfig {
            num_scanouts: Le32::from(self.scanouts.len() as u32),
            num_capsets: Le32::from(self.num_capsets),
            // Blobs are mapped in whole pages of this host.
            host_page_size: Le32::from(crate::mapper::PAGE as u32),
            ..VirtioGpuConfig::default()
        }
    }
}

/// A command-line value that cannot be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("'{0}' is not a size such as 8G, 512M or 1048576")]
    NotASize(String),
    #[error("'{0}': the size must be 4K to 1024G")]
    SizeOutOfRange(String),
    #[error(
        "'{0}' is not a power of two (QEMU needs whole pages, crosvm rounds up to a power of \
         two): use e.g. 4G or 8G"
    )]
    NotAPowerOfTwo(String),
    #[error("'{0}' is not WIDTHxHEIGHT, e.g. 1280x800")]
    NotASize2d(String),
    #[error("{what} '{value}' in '{given}' is not a whole number")]
    NotANumber {
        what: &'static str,
        value: String,
        given: String,
    },
    #[error("'{0}': width and height must be 1 to {MAX_SCANOUT_DIMENSION}")]
    ScanoutOutOfRange(String),
    #[error(
        "{0} --display options given; a virtio-gpu device has at most {MAX_SCANOUTS} scanouts"
    )]
    TooManyScanouts(usize),
}

/// Parses `--shm-size`: bytes with an optional K, M or G suffix (binary),
/// a power of two from 4 KiB to 1 TiB. QEMU 11.1 refuses a region that is
/// not a whole number of host pages, and crosvm rounds the size it is
/// given up to a power of two (the guest would then see a window larger
/// than the broker's region): a power of two is what both take as it is.
pub fn parse_size(s: &str) -> Result<u64, ConfigError> {
    let t = s.trim();
    // No host-visible region at all (see --shm-size).
    if t == "0" {
        return Ok(0);
    }
    let (digits, shift) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 10),
        Some((i, 'm' | 'M')) => (&t[..i], 20),
        Some((i, 'g' | 'G')) => (&t[..i], 30),
        _ => (t, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| ConfigError::NotASize(s.into()))?;
    let bytes = n
        .checked_mul(1 << shift)
        .filter(|b| (4096..=1 << 40).contains(b))
        .ok_or_else(|| ConfigError::SizeOutOfRange(s.into()))?;
    if !bytes.is_power_of_two() {
        return Err(ConfigError::NotAPowerOfTwo(s.into()));
    }
    Ok(bytes)
}

/// Parses `--display WIDTHxHEIGHT`.
pub fn parse_scanout(s: &str) -> Result<ScanoutSize, ConfigError> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| ConfigError::NotASize2d(s.into()))?;
    let parse = |v: &str, what: &'static str| {
        v.trim()
            .parse::<u32>()
            .map_err(|_| ConfigError::NotANumber {
                what,
                value: v.into(),
                given: s.into(),
            })
    };
    let size = ScanoutSize {
        width: parse(w, "width")?,
        height: parse(h, "height")?,
    };
    if !size.is_valid() {
        return Err(ConfigError::ScanoutOutOfRange(s.into()));
    }
    Ok(size)
}

/// Applies the default (one 1280x800 scanout) and the scanout limit.
pub fn scanouts_or_default(given: Vec<ScanoutSize>) -> Result<Vec<ScanoutSize>, ConfigError> {
    if given.len() > MAX_SCANOUTS {
        return Err(ConfigError::TooManyScanouts(given.len()));
    }
    if given.is_empty() {
        return Ok(vec![ScanoutSize {
            width: 1280,
            height: 800,
        }]);
    }
    Ok(given)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_shm_sizes() {
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        // No region at all.
        assert_eq!(parse_size("0"), Ok(0));
        for bad in [
            "0G",
            "",
            "G",
            "1.5G",
            "-1G",
            "4097",
            "2K",
            "12K",
            "3G",
            "2048G",
            "99999999999999999999G",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(
            parse_scanout("1920x1080"),
            Ok(ScanoutSize {
                width: 1920,
                height: 1080
            })
        );
        assert!(parse_scanout("1920").is_err());
        assert!(parse_scanout("0x10").is_err());
        assert!(parse_scanout("axb").is_err());
        assert!(parse_scanout("99999x10").is_err());
    }

    #[test]
    fn default_and_limit() {
        assert_eq!(scanouts_or_default(vec![]).unwrap().len(), 1);
        let one = parse_scanout("640x480").unwrap();
        assert!(scanouts_or_default(vec![one; 17]).is_err());
        assert_eq!(scanouts_or_default(vec![one; 16]).unwrap().len(), 16);
    }

    #[test]
    fn config_space_layout() {
        let c = DeviceConfig {
            scanouts: vec![parse_scanout("640x480").unwrap(); 3],
            max_resource_memory: 1 << 28,
            max_contexts: 64,
            shm_size: 1 << 33,
            num_capsets: 1,
            wayland_socket: None,
            context_types: wire::ContextTypes::NONE,
            jail: JailConfig {
                sandbox: ipc::SandboxMode::Namespace,
                seccomp: ipc::SeccompMode::Kill,
            },
        };
        let bytes = c.virtio_gpu_config();
        assert_eq!(bytes.as_slice().len(), 20);
        assert_eq!(&bytes.as_slice()[16..20], &4096u32.to_le_bytes());
        assert_eq!(&bytes.as_slice()[8..12], &3u32.to_le_bytes());
    }
}
