//! The context types a device offers the guest (`--context-types`): each
//! is a capset, named as crosvm names them, and a device offers exactly the
//! capsets of the types it is given.

use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_gpu as b;

/// A context type, by its capset id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContextType {
    /// virglrenderer's OpenGL (capset 1).
    Virgl,
    /// virglrenderer's OpenGL, second capset layout (capset 2).
    Virgl2,
    /// Vulkan through virglrenderer's render server (capset 4).
    Venus,
    /// Wayland (and other channels) to the host (capset 5).
    CrossDomain,
}

/// Every context type, in crosvm's order.
pub const CONTEXT_TYPES: [ContextType; 4] = [
    ContextType::Virgl,
    ContextType::Virgl2,
    ContextType::Venus,
    ContextType::CrossDomain,
];

impl ContextType {
    /// Its name on the command line (crosvm's).
    pub fn name(self) -> &'static str {
        match self {
            ContextType::Virgl => "virgl",
            ContextType::Virgl2 => "virgl2",
            ContextType::Venus => "venus",
            ContextType::CrossDomain => "cross-domain",
        }
    }

    /// Its capset id (virtio spec 5.7.6.7).
    pub fn capset(self) -> u32 {
        match self {
            ContextType::Virgl => b::VIRTIO_GPU_CAPSET_VIRGL,
            ContextType::Virgl2 => b::VIRTIO_GPU_CAPSET_VIRGL2,
            ContextType::Venus => b::VIRTIO_GPU_CAPSET_VENUS,
            ContextType::CrossDomain => b::VIRTIO_GPU_CAPSET_CROSS_DOMAIN,
        }
    }

    /// Whether a 3D renderer (virglrenderer) serves it.
    pub fn is_3d(self) -> bool {
        !matches!(self, ContextType::CrossDomain)
    }
}

/// A set of context types, as a mask of capset ids (bit `capset`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextTypes(u64);

/// A `--context-types` value that names no context type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not a context type; give a colon-separated list of virgl, virgl2, venus, \
     cross-domain"
)]
pub struct UnknownContextType(pub String);

impl ContextTypes {
    pub const NONE: ContextTypes = ContextTypes(0);

    pub fn of(types: &[ContextType]) -> ContextTypes {
        ContextTypes(types.iter().fold(0, |m, t| m | 1 << t.capset()))
    }

    /// `virgl:venus:cross-domain`, crosvm's syntax.
    pub fn parse(list: &str) -> Result<ContextTypes, UnknownContextType> {
        let mut mask = 0;
        for name in list.split(':') {
            let t = CONTEXT_TYPES
                .into_iter()
                .find(|t| t.name() == name)
                .ok_or_else(|| UnknownContextType(name.to_string()))?;
            mask |= 1 << t.capset();
        }
        Ok(ContextTypes(mask))
    }

    pub fn contains(self, t: ContextType) -> bool {
        self.0 & 1 << t.capset() != 0
    }

    /// The capset mask (bit `capset`), as rutabaga takes it.
    pub fn capset_mask(self) -> u64 {
        self.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every bit is a known context type's (a receiver checks).
    pub fn is_valid(self) -> bool {
        self.0 & !ContextTypes::of(&CONTEXT_TYPES).0 == 0
    }

    /// The types in it, in crosvm's order.
    pub fn iter(self) -> impl Iterator<Item = ContextType> {
        CONTEXT_TYPES.into_iter().filter(move |t| self.contains(*t))
    }

    /// The types of `self` that `other` lacks.
    pub fn without(self, other: ContextTypes) -> ContextTypes {
        ContextTypes(self.0 & !other.0)
    }
}

impl std::fmt::Display for ContextTypes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.iter().map(ContextType::name).collect();
        match names.is_empty() {
            true => f.write_str("none"),
            false => f.write_str(&names.join(":")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crosvms_names_parse_to_the_spec_capsets() {
        let all = ContextTypes::parse("virgl:virgl2:venus:cross-domain").unwrap();
        assert_eq!(all.capset_mask(), 1 << 1 | 1 << 2 | 1 << 4 | 1 << 5);
        assert_eq!(all.to_string(), "virgl:virgl2:venus:cross-domain");
        assert!(all.is_valid());
        let cd = ContextTypes::parse("cross-domain").unwrap();
        assert_eq!(cd, ContextTypes::of(&[ContextType::CrossDomain]));
        assert_eq!(all.without(cd).to_string(), "virgl:virgl2:venus");
        assert_eq!(
            ContextTypes::parse("virgl:gl"),
            Err(UnknownContextType("gl".into()))
        );
        assert!(ContextTypes::parse("").is_err());
        assert!(!ContextTypes(1 << 9).is_valid());
        assert_eq!(ContextTypes::NONE.to_string(), "none");
    }
}
