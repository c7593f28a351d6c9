//! What a program inside the guest needs to use gpu-airlock's contexts and
//! blobs: the Linux kernel's virtgpu DRM interface ([`virtgpu`]) and
//! cross-domain's command structures ([`cross_domain`]), each defined once,
//! from the layouts of their C headers, with their sizes tested.
//!
//! It runs in the VM, not on the host, and shares nothing with the host
//! processes but these wire layouts.

pub mod cross_domain;
pub mod virtgpu;
