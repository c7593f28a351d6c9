//! One front-end connection's rendering state: rutabaga (cross-domain, and
//! virgl or gfxstream where built), the guest memory that guest-memory
//! blobs live in, and the blobs themselves.
//!
//! Every command arrives decoded and checked by gpu-worker; what this file
//! checks again is what it alone can: guest ranges against its own mapping
//! of guest memory, and everything rutabaga refuses.

//! Its rooms: [`renderer`] (the process's one rutabaga and how it is
//! built), [`fences`] (timelines), [`memory`] (guest memory and gpu-worker's
//! memfds), [`three_d`] (3D resources and scanout copies), [`mapping`]
//! (blobs into the guest's host-visible region); this file holds the
//! connection's state and the one dispatch.

mod fences;
mod mapping;
mod memory;
mod renderer;
mod three_d;

pub use renderer::{built_context_types, Renderer, RendererConfig, RutabagaFailed};

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use gpu_airlock_render_worker::framing::{check_cross_domain_framing, Walk};
use ipc::{
    Channel, LockExt, MapRequest, Nothing, RenderCall, RenderEvent, RenderReply, RenderRequest,
    RenderValue, Reply,
};
use log::warn;
use rutabaga_gfx::{
    ResourceCreateBlob, Rutabaga, RutabagaError, RutabagaFence, Transfer3D,
    RUTABAGA_CAPSET_CROSS_DOMAIN, RUTABAGA_FLAG_FENCE, RUTABAGA_FLAG_INFO_RING_IDX,
};
use wire::cross_domain;
use wire::{ContextType, ContextTypes, Refusal};
use wire::{
    RESP_ERR_INVALID_CONTEXT_ID as ERR_INVALID_CONTEXT_ID,
    RESP_ERR_INVALID_PARAMETER as ERR_INVALID_PARAMETER,
    RESP_ERR_INVALID_RESOURCE_ID as ERR_INVALID_RESOURCE_ID,
    RESP_ERR_OUT_OF_MEMORY as ERR_OUT_OF_MEMORY, RESP_ERR_UNSPEC as ERR_UNSPEC,
};

use fences::{timeline, Fences};
use memory::{MemoryMap, SubmitBuffer};
use three_d::Shadow;

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

/// A resource rutabaga holds: a blob, or a 3D resource (flags 0: never
/// mappable).
#[derive(Debug, Clone, Copy)]
struct Held {
    size: u64,
    flags: u32,
    /// The offset it is mapped at in the host-visible region.
    mapped: Option<u64>,
    /// For a blob of guest memory or a 3D resource's backing: the memory
    /// map its pages were found in (rutabaga holds pointers into it).
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
    /// A `context_init` 0 context with no context type to run it (see
    /// [`serves_default`]): held here only, never in rutabaga.
    empty: bool,
}

/// Whether rutabaga can run a `context_init` 0 context with `types`
/// offered: as virgl's (its default), or as cross-domain's when that is
/// the only type. Linux makes one for any client that creates a buffer,
/// the kernel's own console at boot among them; with venus alone
/// virglrenderer refuses it (EINVAL), and the guest logged an error
/// response at every boot. Such a context is held empty instead:
/// resources attach to it, and a command stream to it is refused.
fn serves_default(types: ContextTypes) -> bool {
    types.contains(ContextType::Virgl)
        || types.contains(ContextType::Virgl2)
        || types == ContextTypes::of(&[ContextType::CrossDomain])
}

impl Context {
    fn is_cross_domain(&self) -> bool {
        self.capset == RUTABAGA_CAPSET_CROSS_DOMAIN
    }
}

impl RenderDevice {
    /// Whether `ctx_id` is an empty context ([`serves_default`]).
    fn is_empty(&self, ctx_id: u32) -> bool {
        self.contexts.get(&ctx_id).is_some_and(|c| c.empty)
    }
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
    /// Blobs and 3D resources, by resource id.
    held: BTreeMap<u32, Held>,
    /// Each blob's descriptor and its handle type, from its first export,
    /// kept for its life (see `map_blob`).
    exported: BTreeMap<u32, (OwnedFd, u32)>,
    /// Where SUBMIT_3D streams longer than one frame arrive.
    submit_buffer: Option<SubmitBuffer>,
    /// Host copies of 3D resources on scanouts, by resource id.
    shadows: BTreeMap<u32, Shadow>,
    /// Every context rutabaga holds, with what this process knows of it.
    contexts: BTreeMap<u32, Context>,
    /// What rutabaga is built with, again after a reset.
    renderer: RendererConfig,
    /// `--max-contexts`: most contexts at once.
    max_contexts: u32,
}

impl RenderDevice {
    /// One connection's device on the process's renderer, whose fence
    /// signals now go to this connection's event channel.
    pub fn new(
        map: Channel<MapRequest, Reply<Nothing>>,
        events: Channel<RenderEvent, Nothing>,
        renderer: Renderer,
        max_contexts: u32,
    ) -> Self {
        {
            let mut f = renderer.fences.lock_or_recover();
            f.clear();
            f.events = Some(events);
        }
        RenderDevice {
            rutabaga: renderer.rutabaga,
            fences: renderer.fences,
            memory: Vec::new(),
            next_generation: 0,
            map,
            map_lost: std::cell::Cell::new(false),
            held: BTreeMap::new(),
            exported: BTreeMap::new(),
            submit_buffer: None,
            shadows: BTreeMap::new(),
            contexts: BTreeMap::new(),
            renderer: renderer.config,
            max_contexts,
        }
    }

    /// The connection ended: everything it made leaves rutabaga, and the
    /// renderer goes back for the next.
    pub fn finish(mut self) -> Renderer {
        self.clean();
        self.fences.lock_or_recover().events = None;
        Renderer {
            rutabaga: self.rutabaga,
            fences: self.fences,
            config: self.renderer,
        }
    }

    /// What becomes readable when rutabaga has fences to retire
    /// (virglrenderer's fence thread): the serving loop waits on it beside
    /// gpu-worker's link and calls [`RenderDevice::retire_fences`].
    pub fn fence_descriptor(&self) -> Option<OwnedFd> {
        use rutabaga_gfx::RutabagaIntoRawDescriptor;
        use std::os::fd::FromRawFd;
        let d = self.rutabaga.poll_descriptor()?;
        // SAFETY: into_raw_descriptor hands over ownership of the open
        // descriptor, which nothing else holds.
        Some(unsafe { OwnedFd::from_raw_fd(d.into_raw_descriptor()) })
    }

    /// Retires the fences rutabaga has signalled (each becomes an event or
    /// a fence answered as signalled).
    pub fn retire_fences(&self) {
        self.rutabaga.event_poll();
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
                let empty = context_init & 0xff == 0 && !serves_default(self.renderer.types);
                let created = match empty {
                    true if self.contexts.contains_key(&ctx_id) => {
                        Err(RutabagaError::InvalidContextId)
                    }
                    true => Ok(()),
                    false => self.rutabaga.create_context(ctx_id, context_init, name),
                };
                if created.is_ok() {
                    let context = Context {
                        capset: runs_as(context_init, self.renderer.types),
                        channel: false,
                        requirements: 0,
                        empty,
                    };
                    self.contexts.insert(ctx_id, context);
                }
                created
            }
            RenderRequest::CtxDestroy { ctx_id } => {
                let removed = self.contexts.remove(&ctx_id);
                // Its rings' timelines go with it.
                self.fences.lock_or_recover().forget_context(ctx_id);
                match removed {
                    Some(c) if c.empty => Ok(()),
                    _ => self.rutabaga.destroy_context(ctx_id),
                }
            }
            // An empty context has nothing to attach to: the resource
            // stays the guest's, as it was.
            RenderRequest::CtxAttach { ctx_id, .. } | RenderRequest::CtxDetach { ctx_id, .. }
                if self.is_empty(ctx_id) =>
            {
                Ok(())
            }
            RenderRequest::CtxAttach {
                ctx_id,
                resource_id,
            } => self.rutabaga.context_attach_resource(ctx_id, resource_id),
            RenderRequest::CtxDetach {
                ctx_id,
                resource_id,
            } => self.rutabaga.context_detach_resource(ctx_id, resource_id),
            RenderRequest::Submit { ctx_id, commands } => return self.submit(ctx_id, commands),
            RenderRequest::SubmitBuffer => return self.take_submit_buffer(fds),
            RenderRequest::SubmitShared { ctx_id, len } => {
                let Some(buffer) = &self.submit_buffer else {
                    return refused(ERR_UNSPEC, "a shared SUBMIT_3D before the submit buffer");
                };
                let Some(stream) = buffer.get(..len as usize) else {
                    return refused(
                        ERR_INVALID_PARAMETER,
                        format!("a shared SUBMIT_3D of {len} bytes"),
                    );
                };
                // Copied out first: rutabaga walks a stream this process
                // alone holds.
                let commands = stream.to_vec();
                return self.submit(ctx_id, commands);
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
            RenderRequest::Create3d {
                resource_id,
                create,
            } => return self.create_3d(resource_id, create),
            RenderRequest::AttachBacking {
                resource_id,
                entries,
            } => return self.attach_backing(resource_id, &entries),
            RenderRequest::DetachBacking { resource_id } => {
                let done = self.rutabaga.detach_backing(resource_id);
                if done.is_ok() {
                    if let Some(h) = self.held.get_mut(&resource_id) {
                        h.generation = None;
                    }
                    self.prune_memory();
                }
                done
            }
            RenderRequest::Transfer3d(t) => {
                let [x, y, z, w, h, d] = t.boxed;
                let transfer = Transfer3D {
                    x,
                    y,
                    z,
                    w,
                    h,
                    d,
                    level: t.level,
                    stride: t.stride,
                    layer_stride: t.layer_stride,
                    offset: t.offset,
                };
                // Between the host resource and its backing (rutabaga
                // checks the box against the backing's length).
                match t.to_host {
                    true => self
                        .rutabaga
                        .transfer_write(t.ctx_id, t.resource_id, transfer, None),
                    false => self
                        .rutabaga
                        .transfer_read(t.ctx_id, t.resource_id, transfer, None),
                }
            }
            RenderRequest::ScanoutShadow {
                resource_id,
                width,
                height,
                stride,
            } => return self.take_shadow(resource_id, width, height, stride, fds),
            RenderRequest::ReadBack { resource_id, rect } => {
                return self.read_back(resource_id, rect)
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

    /// SUBMIT_3D of `commands` on `ctx_id`: a cross-domain stream's framing
    /// is walked first (and its image requirements counted).
    fn submit(&mut self, ctx_id: u32, mut commands: Vec<u8>) -> Answer {
        let context = self.contexts.get(&ctx_id).copied();
        if context.is_some_and(|c| c.empty) {
            return refused(
                ERR_INVALID_CONTEXT_ID,
                format!(
                    "context {ctx_id} was made with context_init 0, which no context type \
                     offered runs: it takes no command stream"
                ),
            );
        }
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
        match done {
            Ok(()) => Reply::Done,
            Err(e) => refused(code_of(&e), e.to_string()),
        }
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
        self.held.insert(
            resource_id,
            Held {
                size: blob.size,
                flags: blob.blob_flags,
                mapped: None,
                generation,
            },
        );
        Reply::Done
    }

    /// A device reset: every context and resource the guest made leaves
    /// rutabaga ([`RenderDevice::clean`]). The current guest memory map
    /// stays: the memory table does not change.
    fn reset(&mut self) -> Answer {
        self.clean();
        Reply::Done
    }

    /// Takes out of rutabaga all this connection made: contexts (and with
    /// them cross-domain's compositor connections), then resources, each
    /// mapped blob unmapped from the guest's region first. rutabaga itself
    /// stays: virglrenderer cannot start twice in one process.
    fn clean(&mut self) {
        let contexts: Vec<u32> = self
            .contexts
            .iter()
            .filter(|(_, c)| !c.empty)
            .map(|(id, _)| *id)
            .collect();
        for ctx_id in contexts {
            if let Err(e) = self.rutabaga.destroy_context(ctx_id) {
                warn!("render-worker: destroying context {ctx_id}: {e}");
            }
        }
        self.contexts.clear();
        let held: Vec<u32> = self.held.keys().copied().collect();
        for resource_id in held {
            if let Reply::Refused(Refusal { why, .. }) = self.unref(resource_id) {
                warn!("render-worker: releasing resource {resource_id}: {why}");
            }
        }
        self.fences.lock_or_recover().clear();
        self.prune_memory();
    }

    fn unref(&mut self, resource_id: u32) -> Answer {
        // A mapped blob leaves the guest's region before it goes.
        if self
            .held
            .get(&resource_id)
            .is_some_and(|b| b.mapped.is_some())
        {
            if let Reply::Refused(Refusal { why, .. }) = self.unmap_blob(resource_id) {
                warn!("render-worker: unmapping blob {resource_id} before its unref: {why}");
            }
        }
        self.held.remove(&resource_id);
        self.exported.remove(&resource_id);
        self.shadows.remove(&resource_id);
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
        let mut f = self.fences.lock_or_recover();
        if f.passed(timeline(ctx_id, ring), fence_id) {
            return Ok(true);
        }
        f.pending.push((ctx_id, ring, fence_id));
        Ok(false)
    }
}

#[cfg(test)]
mod tests;
