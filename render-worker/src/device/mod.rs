//! One front-end connection's rendering state: rutabaga (cross-domain, and
//! virgl or gfxstream where built), the guest memory that guest-memory
//! blobs live in, and the blobs themselves.
//!
//! Every command arrives decoded and checked by gpu-worker; what this file
//! checks again is what it alone can: guest ranges against its own mapping
//! of guest memory, and everything rutabaga refuses.

use gpu_airlock_render_worker::framing::{check_cross_domain_framing, Walk};

mod mapping;
use ipc::LockExt;
use std::collections::BTreeMap;

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use wire::cross_domain;
use wire::{ContextType, ContextTypes};

use ipc::{
    Channel, MapRequest, MemoryRegion, Nothing, RenderCall, RenderEvent, RenderReply,
    RenderRequest, RenderValue, Reply,
};
use log::warn;
use rutabaga_gfx::{
    ResourceCreateBlob, Rutabaga, RutabagaBuilder, RutabagaComponentType, RutabagaError,
    RutabagaFence, RutabagaFenceHandler, RutabagaIovec, RutabagaPath, RUTABAGA_CAPSET_CROSS_DOMAIN,
    RUTABAGA_FLAG_FENCE, RUTABAGA_FLAG_INFO_RING_IDX,
};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use wire::Refusal;

use wire::{
    RESP_ERR_INVALID_CONTEXT_ID as ERR_INVALID_CONTEXT_ID,
    RESP_ERR_INVALID_PARAMETER as ERR_INVALID_PARAMETER,
    RESP_ERR_INVALID_RESOURCE_ID as ERR_INVALID_RESOURCE_ID,
    RESP_ERR_OUT_OF_MEMORY as ERR_OUT_OF_MEMORY, RESP_ERR_UNSPEC as ERR_UNSPEC,
};

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

/// The capset a context of `context_init` runs as: its capset id, or for 0
/// rutabaga's default component, which is cross-domain when that is the
/// only context type offered (a guest's `context_init` 0 context, which
/// Linux makes for every client, then takes cross-domain streams too).
fn runs_as(context_init: u32, types: ContextTypes) -> u32 {
    let id = context_init & 0xff;
    if id == 0 && types == ContextTypes::of(&[ContextType::CrossDomain]) {
        RUTABAGA_CAPSET_CROSS_DOMAIN
    } else {
        id
    }
}

/// The channel ring's index, as a fence names it.
const CROSS_DOMAIN_CHANNEL_RING: u8 = cross_domain::CHANNEL_RING as u8;
/// Most GET_IMAGE_REQUIREMENTS one context may send: rutabaga keeps every
/// answer in the context's table for the context's life, so without a cap
/// a guest grows render-worker's memory without bound. A guest proxy asks
/// once per buffer size.
const MAX_REQUIREMENTS_PER_CONTEXT: usize = 4096;

/// Where rutabaga's fence signals go. A fence gpu-worker was told is
/// pending becomes an event on the event channel; any other (one that
/// signals while its FENCE command is still being answered) is noted for
/// that answer.
#[derive(Default)]
pub struct Fences {
    signalled: Vec<(u32, Option<u8>, u64)>,
    pending: Vec<(u32, Option<u8>, u64)>,
    events: Option<Channel<RenderEvent, Nothing>>,
}

fn key(f: &RutabagaFence) -> (u32, Option<u8>, u64) {
    let ring = (f.flags & RUTABAGA_FLAG_INFO_RING_IDX != 0).then_some(f.ring_idx);
    (f.ctx_id, ring, f.fence_id)
}

/// rutabaga could not be built.
#[derive(Debug, thiserror::Error)]
#[error("rutabaga: {0}")]
pub struct RutabagaFailed(RutabagaError);

/// Builds rutabaga with `config`'s context types; the fences it signals go
/// through `fences`.
pub fn build_rutabaga(
    fences: Arc<Mutex<Fences>>,
    config: &RendererConfig,
) -> Result<Rutabaga, RutabagaFailed> {
    let handler = RutabagaFenceHandler::new(move |fence| {
        let k = key(&fence);
        let mut f = fences.lock_or_recover();
        if let Some(i) = f.pending.iter().position(|p| *p == k) {
            f.pending.remove(i);
            let (ctx_id, ring, fence_id) = k;
            let event = RenderEvent::FenceSignalled {
                ctx_id,
                ring,
                fence_id,
            };
            if let Some(events) = &f.events {
                if let Err(e) = events.send(&event, &[]) {
                    warn!("render-worker: event channel: {e}");
                }
            }
        } else {
            f.signalled.push(k);
        }
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
    builder
        .set_rutabaga_paths(paths)
        .build()
        .map_err(RutabagaFailed)
}

/// What render-worker answers a request.
type Answer = Reply<RenderValue>;

fn refused(code: u32, why: impl Into<String>) -> Answer {
    Reply::Refused(Refusal::new(code, why))
}

/// The guest's response code for what rutabaga refused.
fn code_of(e: &RutabagaError) -> u32 {
    match e {
        RutabagaError::InvalidContextId => ERR_INVALID_CONTEXT_ID,
        RutabagaError::InvalidResourceId => ERR_INVALID_RESOURCE_ID,
        RutabagaError::InvalidCapset
        | RutabagaError::InvalidIovec
        | RutabagaError::InvalidCommandSize(_)
        | RutabagaError::InvalidCommandBuffer => ERR_INVALID_PARAMETER,
        _ => ERR_UNSPEC,
    }
}

#[derive(Debug, Clone, Copy)]
struct Blob {
    size: u64,
    flags: u32,
    /// The offset it is mapped at in the host-visible region.
    mapped: Option<u64>,
    /// For a blob of guest memory: the memory map its pages were found in
    /// (rutabaga holds pointers into it).
    generation: Option<u64>,
}

/// What render-worker keeps of one context beside rutabaga's own state.
#[derive(Debug, Clone, Copy)]
struct Context {
    /// Its capset id as rutabaga runs it (see `runs_as`).
    capset: u32,
    /// A cross-domain context whose INIT opened a channel (and so a worker
    /// that signals channel-ring fences).
    channel: bool,
    /// GET_IMAGE_REQUIREMENTS it has sent (rutabaga keeps each answer for
    /// the context's life).
    requirements: usize,
}

impl Context {
    fn is_cross_domain(&self) -> bool {
        self.capset == RUTABAGA_CAPSET_CROSS_DOMAIN
    }
}

/// Why a guest-memory blob's ranges cannot be reached here.
#[derive(Debug, thiserror::Error)]
enum GuestRange {
    #[error("no guest memory was given for a guest-memory blob")]
    NoMemory,
    #[error("guest range {addr:#x}+{len}: {why}")]
    Outside { addr: u64, len: u32, why: String },
}

/// One guest memory map, as SET_MEM_TABLE gave it.
struct MemoryMap {
    generation: u64,
    mem: GuestMemoryMmap,
}

pub struct RenderDevice {
    rutabaga: Rutabaga,
    fences: Arc<Mutex<Fences>>,
    /// The current guest memory map, last, and every earlier one that a
    /// live guest-memory blob points into (rutabaga keeps raw pointers).
    /// Earlier maps go as soon as no blob needs them: QEMU 11 sends a new
    /// table for every blob it maps or unmaps (the table holds the
    /// host-visible mappings too), so keeping them all would keep every
    /// unmapped blob's memory mapped here for the connection's life.
    memory: Vec<MemoryMap>,
    next_generation: u64,
    map: Channel<MapRequest, Reply<Nothing>>,
    /// Set once the map channel failed (a timeout, a close, a malformed
    /// answer): an answer that came late would otherwise be read as the
    /// next request's, so the channel is not used again.
    map_lost: std::cell::Cell<bool>,
    blobs: BTreeMap<u32, Blob>,
    /// Every context rutabaga holds, with what this process knows of it.
    contexts: BTreeMap<u32, Context>,
    /// What rutabaga is built with, again after a reset.
    renderer: RendererConfig,
    /// `--max-contexts`: most contexts at once.
    max_contexts: u32,
}

impl RenderDevice {
    pub fn new(
        map: Channel<MapRequest, Reply<Nothing>>,
        events: Channel<RenderEvent, Nothing>,
        renderer: RendererConfig,
        max_contexts: u32,
    ) -> Result<Self, RutabagaFailed> {
        let fences = Arc::new(Mutex::new(Fences {
            events: Some(events),
            ..Fences::default()
        }));
        Ok(RenderDevice {
            rutabaga: build_rutabaga(fences.clone(), &renderer)?,
            fences,
            memory: Vec::new(),
            next_generation: 0,
            map,
            map_lost: std::cell::Cell::new(false),
            blobs: BTreeMap::new(),
            contexts: BTreeMap::new(),
            renderer,
            max_contexts,
        })
    }

    /// Serves one call: its request, then (if that was done) its fence.
    pub fn handle(&mut self, call: RenderCall, fds: Vec<OwnedFd>) -> RenderReply {
        let reply = self.serve(call.request, fds);
        let fence_signalled = match (&reply, call.fence) {
            (Reply::Refused(_), _) | (_, None) => None,
            (_, Some(f)) => match self.fence(f.ctx_id, f.ring, f.fence_id) {
                Ok(signalled) => Some(signalled),
                Err(refusal) => {
                    return RenderReply {
                        reply: refusal,
                        fence_signalled: None,
                    }
                }
            },
        };
        RenderReply {
            reply,
            fence_signalled,
        }
    }

    fn serve(&mut self, request: RenderRequest, fds: Vec<OwnedFd>) -> Answer {
        let result = match request {
            RenderRequest::FenceAlone => return Reply::Done,
            RenderRequest::Memory(regions) => return self.set_memory(regions, fds),
            RenderRequest::GetCapsetInfo { index } => {
                return match self.rutabaga.get_capset_info(index) {
                    Ok((id, max_version, max_size)) => Reply::Value(RenderValue::CapsetInfo {
                        id,
                        max_version,
                        max_size,
                    }),
                    Err(e) => refused(ERR_INVALID_PARAMETER, format!("capset index {index}: {e}")),
                }
            }
            RenderRequest::GetCapset { id, version } => {
                return match self.rutabaga.get_capset(id, version) {
                    Ok(bytes) => Reply::Value(RenderValue::Capset(bytes)),
                    Err(e) => refused(ERR_INVALID_PARAMETER, format!("capset {id}: {e}")),
                }
            }
            RenderRequest::CtxCreate {
                ctx_id,
                context_init,
                name,
            } => {
                let max = self.max_contexts;
                if !self.contexts.contains_key(&ctx_id) && self.contexts.len() >= max as usize {
                    return refused(
                        ERR_OUT_OF_MEMORY,
                        format!("context {ctx_id}: {max} contexts exist (--max-contexts)"),
                    );
                }
                let name = Some(&name).filter(|n| !n.is_empty()).map(String::as_str);
                let created = self.rutabaga.create_context(ctx_id, context_init, name);
                if created.is_ok() {
                    let context = Context {
                        capset: runs_as(context_init, self.renderer.types),
                        channel: false,
                        requirements: 0,
                    };
                    self.contexts.insert(ctx_id, context);
                }
                created
            }
            RenderRequest::CtxDestroy { ctx_id } => {
                self.contexts.remove(&ctx_id);
                self.rutabaga.destroy_context(ctx_id)
            }
            RenderRequest::CtxAttach {
                ctx_id,
                resource_id,
            } => self.rutabaga.context_attach_resource(ctx_id, resource_id),
            RenderRequest::CtxDetach {
                ctx_id,
                resource_id,
            } => self.rutabaga.context_detach_resource(ctx_id, resource_id),
            RenderRequest::Submit {
                ctx_id,
                mut commands,
            } => {
                let context = self.contexts.get(&ctx_id).copied();
                let mut walk = Walk::default();
                if context.is_some_and(|c| c.is_cross_domain()) {
                    match check_cross_domain_framing(&commands) {
                        Ok(w) => walk = w,
                        Err(why) => return refused(ERR_INVALID_PARAMETER, why.to_string()),
                    }
                }
                let asked = context.map_or(0, |c| c.requirements);
                if asked + walk.requirements > MAX_REQUIREMENTS_PER_CONTEXT {
                    return refused(
                        ERR_OUT_OF_MEMORY,
                        format!(
                            "context {ctx_id}: more than {MAX_REQUIREMENTS_PER_CONTEXT} image \
                             requirements (rutabaga keeps each for the context's life)"
                        ),
                    );
                }
                let done = self.rutabaga.submit_command(ctx_id, &mut commands, &[]);
                if let Some(c) = self.contexts.get_mut(&ctx_id) {
                    // Counted whether or not rutabaga answered them all.
                    c.requirements = asked + walk.requirements;
                    c.channel |= done.is_ok() && walk.opens_channel;
                }
                done
            }
            RenderRequest::CreateBlob {
                ctx_id,
                resource_id,
                blob_mem,
                blob_flags,
                blob_id,
                size,
                entries,
            } => {
                return self.create_blob(
                    ctx_id,
                    resource_id,
                    ResourceCreateBlob {
                        blob_mem,
                        blob_flags,
                        blob_id,
                        size,
                    },
                    &entries,
                )
            }
            RenderRequest::Unref { resource_id } => return self.unref(resource_id),
            RenderRequest::Reset => return self.reset(),
            RenderRequest::MapBlob {
                resource_id,
                offset,
            } => return self.map_blob(resource_id, offset),
            RenderRequest::UnmapBlob { resource_id } => return self.unmap_blob(resource_id),
        };
        match result {
            Ok(()) => Reply::Done,
            Err(e) => refused(code_of(&e), e.to_string()),
        }
    }

    fn set_memory(&mut self, regions: Vec<MemoryRegion>, fds: Vec<OwnedFd>) -> Answer {
        if regions.len() != fds.len() {
            return refused(ERR_UNSPEC, "memory regions without their descriptors");
        }
        let ranges: Vec<_> = regions
            .iter()
            .zip(fds)
            .map(|(r, fd)| {
                (
                    GuestAddress(r.guest_addr),
                    r.size as usize,
                    Some(FileOffset::new(File::from(fd), r.file_offset)),
                )
            })
            .collect();
        match GuestMemoryMmap::from_ranges_with_files(&ranges) {
            Ok(mem) => {
                self.memory.push(MemoryMap {
                    generation: self.next_generation,
                    mem,
                });
                self.next_generation += 1;
                self.prune_memory();
                Reply::Done
            }
            Err(e) => refused(ERR_UNSPEC, format!("cannot map guest memory: {e}")),
        }
    }

    /// Drops every memory map but the current one that no blob needs.
    fn prune_memory(&mut self) {
        let Some(current) = self.memory.last().map(|m| m.generation) else {
            return;
        };
        let blobs = &self.blobs;
        self.memory.retain(|m| {
            m.generation == current || blobs.values().any(|b| b.generation == Some(m.generation))
        });
    }

    /// Host addresses of guest ranges, each inside one region of the
    /// current guest memory map, and that map's generation.
    fn iovecs(&self, entries: &[(u64, u32)]) -> Result<(Vec<RutabagaIovec>, u64), GuestRange> {
        let current = self.memory.last().ok_or(GuestRange::NoMemory)?;
        let mem = &current.mem;
        entries
            .iter()
            .map(|&(addr, len)| {
                let slice = mem
                    .get_slice(GuestAddress(addr), len as usize)
                    .map_err(|e| GuestRange::Outside {
                        addr,
                        len,
                        why: e.to_string(),
                    })?;
                Ok(RutabagaIovec {
                    base: slice.ptr_guard_mut().as_ptr().cast(),
                    len: len as usize,
                })
            })
            .collect::<Result<_, GuestRange>>()
            .map(|v| (v, current.generation))
    }

    fn create_blob(
        &mut self,
        ctx_id: u32,
        resource_id: u32,
        blob: ResourceCreateBlob,
        entries: &[(u64, u32)],
    ) -> Answer {
        let (iovecs, generation) = if entries.is_empty() {
            (None, None)
        } else {
            match self.iovecs(entries) {
                Ok((v, g)) => (Some(v), Some(g)),
                Err(why) => return refused(ERR_INVALID_PARAMETER, why.to_string()),
            }
        };
        if let Err(e) = self
            .rutabaga
            .resource_create_blob(ctx_id, resource_id, blob, iovecs, None)
        {
            return refused(code_of(&e), format!("blob {resource_id}: {e}"));
        }
        self.blobs.insert(
            resource_id,
            Blob {
                size: blob.size,
                flags: blob.blob_flags,
                mapped: None,
                generation,
            },
        );
        Reply::Done
    }

    /// A device reset: mapped blobs leave the guest's region, then rutabaga
    /// (contexts, blobs, the compositor connections) is dropped and built
    /// anew. The current guest memory map stays: the memory table does not
    /// change.
    fn reset(&mut self) -> Answer {
        let mapped: Vec<u32> = self
            .blobs
            .iter()
            .filter(|(_, b)| b.mapped.is_some())
            .map(|(id, _)| *id)
            .collect();
        for resource_id in mapped {
            if let Reply::Refused(Refusal { why, .. }) = self.unmap_blob(resource_id) {
                warn!("render-worker: unmapping blob {resource_id} at reset: {why}");
            }
        }
        self.blobs.clear();
        self.contexts.clear();
        {
            let mut f = self.fences.lock_or_recover();
            f.signalled.clear();
            f.pending.clear();
        }
        match build_rutabaga(self.fences.clone(), &self.renderer) {
            Ok(r) => {
                self.rutabaga = r;
                self.prune_memory();
                Reply::Done
            }
            Err(e) => refused(ERR_UNSPEC, e.to_string()),
        }
    }

    fn unref(&mut self, resource_id: u32) -> Answer {
        // A mapped blob leaves the guest's region before it goes.
        if self
            .blobs
            .get(&resource_id)
            .is_some_and(|b| b.mapped.is_some())
        {
            if let Reply::Refused(Refusal { why, .. }) = self.unmap_blob(resource_id) {
                warn!("render-worker: unmapping blob {resource_id} before its unref: {why}");
            }
        }
        self.blobs.remove(&resource_id);
        let answer = match self.rutabaga.unref_resource(resource_id) {
            Ok(()) => Reply::Done,
            Err(e) => refused(code_of(&e), format!("unref {resource_id}: {e}")),
        };
        // rutabaga has let go of the blob's pages.
        self.prune_memory();
        answer
    }

    /// Creates a fence: signalled at once, or pending until an event says
    /// so (a cross-domain channel ring waits for the compositor).
    fn fence(&mut self, ctx_id: u32, ring: Option<u8>, fence_id: u64) -> Result<bool, Answer> {
        // rutabaga signals a cross-domain channel-ring fence only from the
        // worker a channel INIT starts; on any other context it keeps the
        // fence, or drops it, and the guest's command would wait for ever.
        if ring == Some(CROSS_DOMAIN_CHANNEL_RING)
            && self
                .contexts
                .get(&ctx_id)
                .is_some_and(|c| c.is_cross_domain() && !c.channel)
        {
            return Err(refused(
                ERR_INVALID_PARAMETER,
                format!(
                    "fence {fence_id} on the channel ring of context {ctx_id}, which opened no \
                     channel: it would never signal"
                ),
            ));
        }
        let mut flags = RUTABAGA_FLAG_FENCE;
        if ring.is_some() {
            flags |= RUTABAGA_FLAG_INFO_RING_IDX;
        }
        let fence = RutabagaFence {
            flags,
            fence_id,
            ctx_id,
            ring_idx: ring.unwrap_or(0),
        };
        // Not under the lock: rutabaga may call the handler from here.
        if let Err(e) = self.rutabaga.create_fence(fence) {
            return Err(refused(code_of(&e), format!("fence {fence_id}: {e}")));
        }
        let k = (ctx_id, ring, fence_id);
        let mut f = self.fences.lock_or_recover();
        match f.signalled.iter().position(|s| *s == k) {
            Some(i) => {
                f.signalled.remove(i);
                Ok(true)
            }
            None => {
                f.pending.push(k);
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::cross_domain::{CMD_GET_IMAGE_REQUIREMENTS, CMD_INIT};

    fn cmd(size: u16, total: usize) -> Vec<u8> {
        let mut v = vec![0u8; total];
        v[2..4].copy_from_slice(&size.to_le_bytes());
        v
    }

    #[test]
    fn cross_domain_framing_is_checked_before_rutabaga_walks_it() {
        check_cross_domain_framing(&cmd(16, 16)).unwrap();
        check_cross_domain_framing(&[]).unwrap();
        let mut two = cmd(16, 16);
        two.extend(cmd(8, 8));
        assert_eq!(check_cross_domain_framing(&two).unwrap(), Walk::default());
        // An INIT (command 1, 36 bytes) opens a channel when its channel
        // type, 16 bytes in, is not 0.
        let mut init = cmd(36, 36);
        init[0] = CMD_INIT;
        assert!(!check_cross_domain_framing(&init).unwrap().opens_channel);
        init[16] = 1;
        assert!(check_cross_domain_framing(&init).unwrap().opens_channel);
        // One cut short of its 36 bytes opens nothing (rutabaga refuses it).
        let mut short = init[..20].to_vec();
        short[2] = 20;
        assert!(!check_cross_domain_framing(&short).unwrap().opens_channel);
        // Image requirements are counted.
        let mut reqs = cmd(24, 24);
        reqs[0] = CMD_GET_IMAGE_REQUIREMENTS;
        let mut three = reqs.clone();
        three.extend(&reqs);
        three.extend(&init);
        three.extend(&reqs);
        let walk = check_cross_domain_framing(&three).unwrap();
        assert_eq!((walk.requirements, walk.opens_channel), (3, true));
        assert!(
            check_cross_domain_framing(&cmd(0, 16)).is_err(),
            "size 0 would spin"
        );
        assert!(check_cross_domain_framing(&cmd(4, 16)).is_err());
        assert!(check_cross_domain_framing(&cmd(32, 16)).is_err());
        assert!(check_cross_domain_framing(&[1, 0, 16]).is_err());
    }
}
