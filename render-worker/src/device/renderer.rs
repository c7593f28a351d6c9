//! The process's one rutabaga: what it is built with (the context types
//! offered, the compositor), built once and handed from one connection's
//! [`RenderDevice`](super::RenderDevice) to the next.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ipc::LockExt;
use rutabaga_gfx::{
    Rutabaga, RutabagaBuilder, RutabagaComponentType, RutabagaError, RutabagaFenceHandler,
    RutabagaPath, RUTABAGA_FLAG_INFO_RING_IDX,
};
use wire::cross_domain;
use wire::{ContextType, ContextTypes};

use super::fences::{timeline, Fences};

/// The context types this build can serve: cross-domain always (it needs
/// only a compositor to reach); virgl, virgl2 and venus with the `virgl`
/// cargo feature (virglrenderer 1.3 or later).
pub fn built_context_types() -> ContextTypes {
    #[allow(unused_mut)]
    let mut types = vec![ContextType::CrossDomain];
    #[cfg(feature = "virgl")]
    types.extend([ContextType::Virgl, ContextType::Virgl2, ContextType::Venus]);
    ContextTypes::of(&types)
}

/// What rutabaga is built with, for the first time and after each reset.
#[derive(Debug, Clone, Default)]
pub struct RendererConfig {
    /// The compositor cross-domain contexts reach, as render-worker sees
    /// it (inside its jail).
    pub wayland: Option<PathBuf>,
    /// The context types offered (`--context-types`): exactly their
    /// capsets.
    pub types: ContextTypes,
}

/// rutabaga could not be built.
#[derive(Debug, thiserror::Error)]
#[error("rutabaga: {0}")]
pub struct RutabagaFailed(RutabagaError);

/// Builds rutabaga with `config`'s context types; the fences it signals go
/// through `fences`.
fn build_rutabaga(
    fences: Arc<Mutex<Fences>>,
    config: &RendererConfig,
    server: Option<OwnedFd>,
) -> Result<Rutabaga, RutabagaFailed> {
    let handler = RutabagaFenceHandler::new(move |fence| {
        let ring = (fence.flags & RUTABAGA_FLAG_INFO_RING_IDX != 0).then_some(fence.ring_idx);
        fences
            .lock_or_recover()
            .signal(timeline(fence.ctx_id, ring), fence.fence_id);
    });
    let paths = config
        .wayland
        .clone()
        .filter(|_| config.types.contains(ContextType::CrossDomain))
        .map(|path| {
            vec![RutabagaPath {
                path,
                path_type: cross_domain::CHANNEL_TYPE_WAYLAND,
            }]
        });
    let mut builder = RutabagaBuilder::new(config.types.capset_mask(), handler);
    if config.types.is_empty() {
        // With no capset asked for, rutabaga would offer every one it
        // knows: ask for its 2D component alone.
        builder = builder.set_default_component(RutabagaComponentType::Rutabaga2D);
    }
    if config.types.iter().any(ContextType::is_3d) {
        // virglrenderer on EGL, surfaceless: no display, and no render node
        // (llvmpipe where the host has no GPU). Without EGL it takes GBM
        // on a render node, and with none it crashed (a call through a null
        // pointer) rather than fail.
        builder = builder.set_use_egl(true).set_use_surfaceless(true);
    }
    if let Some(server) = server {
        // venus's contexts go to the render server render-worker started
        // (virglrenderer takes the descriptor); without one it would fork
        // and exec its own.
        builder = builder
            .set_use_render_server(true)
            .set_server_descriptor(Some(server.into()));
    }
    builder
        .set_rutabaga_paths(paths)
        .build()
        .map_err(RutabagaFailed)
}

/// The one rutabaga of the process, with the fence state its handler
/// feeds: built once, on the thread that serves every connection
/// (virglrenderer initialises once per process, and its GL contexts
/// belong to the thread that made them), and handed from one connection's
/// [`RenderDevice`] to the next, cleaned.
pub struct Renderer {
    pub(super) rutabaga: Rutabaga,
    pub(super) fences: Arc<Mutex<Fences>>,
    pub(super) config: RendererConfig,
}

impl Renderer {
    /// Builds the process's rutabaga; `server` is venus's render server's
    /// socket (`render_server::start`) when venus is offered.
    pub fn build(
        config: RendererConfig,
        server: Option<OwnedFd>,
    ) -> Result<Renderer, RutabagaFailed> {
        let fences = Arc::new(Mutex::new(Fences::default()));
        let rutabaga = build_rutabaga(fences.clone(), &config, server)?;
        // rutabaga falls back to its 2D component when virglrenderer does
        // not start (a missing library, a jail that hides one): a device
        // that offers capsets it cannot serve is worse than none.
        let offered = rutabaga.get_num_capsets();
        for index in 0..offered {
            rutabaga.get_capset_info(index).map_err(RutabagaFailed)?;
        }
        Ok(Renderer {
            rutabaga,
            fences,
            config,
        })
    }

    /// `virtio_gpu_config.num_capsets`.
    pub fn num_capsets(&self) -> u32 {
        self.rutabaga.get_num_capsets()
    }
}
