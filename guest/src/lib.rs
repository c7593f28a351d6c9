//! What a program inside the guest needs to use gpu-airlock's contexts and
//! blobs: the Linux kernel's virtgpu DRM interface ([`virtgpu`]) and
//! cross-domain's command structures ([`cross_domain`]), each defined once,
//! from the layouts of their C headers, with their sizes tested; and the
//! Wayland proxy `gpu-airlock-guest` is made of: a cross-domain channel
//! ([`channel`]), the Wayland wire format ([`wire`]), the globals it relays
//! ([`globals`]) and one client's relay ([`proxy`]).
//!
//! It runs in the VM, not on the host, and shares nothing with the host
//! processes but these wire layouts.

pub mod channel;
pub mod cross_domain;
pub mod globals;
pub mod proxy;
pub mod virtgpu;
pub mod wire;
