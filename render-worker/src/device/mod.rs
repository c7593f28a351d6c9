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
    ResourceCreate3D, ResourceCreateBlob, Rutabaga, RutabagaBuilder, RutabagaComponentType,
    RutabagaError, RutabagaFence, RutabagaFenceHandler, RutabagaIovec, RutabagaPath, Transfer3D,
    RUTABAGA_CAPSET_CROSS_DOMAIN, RUTABAGA_FLAG_FENCE, RUTABAGA_FLAG_INFO_RING_IDX,
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

/// Where rutabaga's fence signals go. Fences live on timelines: a
/// context's ring (VIRTIO_GPU_FLAG_INFO_RING_IDX), or the device's one
/// global timeline for a fence without a ring, whatever context its
/// command named (as crosvm and virglrenderer count them: virglrenderer
/// reports a global fence with context 0, and only the latest it retired).
/// A signal retires every fence of its timeline up to its id. A fence
/// gpu-worker was told is pending becomes an event on the event channel;
/// one created after its timeline passed it is answered as signalled.
#[derive(Default)]
pub struct Fences {
    /// Each timeline's highest fence id signalled.
    signalled: BTreeMap<Timeline, u64>,
    /// Fences answered as pending, as gpu-worker named them.
    pending: Vec<(u32, Option<u8>, u64)>,
    events: Option<Channel<RenderEvent, Nothing>>,
}

/// A context's ring, or (context 0, no ring) the global timeline.
type Timeline = (u32, Option<u8>);

fn timeline(ctx_id: u32, ring: Option<u8>) -> Timeline {
    match ring {
        Some(_) => (ctx_id, ring),
        None => (0, None),
    }
}

impl Fences {
    /// Retires `fence_id` and every earlier fence of `on`.
    fn signal(&mut self, on: Timeline, fence_id: u64) {
        let upto = self.signalled.entry(on).or_insert(0);
        *upto = (*upto).max(fence_id);
        let mut retired = Vec::new();
        self.pending.retain(|&(ctx_id, ring, id)| {
            let done = timeline(ctx_id, ring) == on && id <= fence_id;
            if done {
                retired.push(RenderEvent::FenceSignalled {
                    ctx_id,
                    ring,
                    fence_id: id,
                });
            }
            !done
        });
        for event in retired {
            if let Some(events) = &self.events {
                if let Err(e) = events.send(&event, &[]) {
                    warn!("render-worker: event channel: {e}");
                }
            }
        }
    }

    /// Whether fence `fence_id` of `on` has been signalled already.
    fn passed(&self, on: Timeline, fence_id: u64) -> bool {
        self.signalled
            .get(&on)
            .is_some_and(|&upto| upto >= fence_id)
    }

    /// Forgets every fence (a new connection, a reset).
    fn clear(&mut self) {
        self.signalled.clear();
        self.pending.clear();
    }
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
    rutabaga: Rutabaga,
    fences: Arc<Mutex<Fences>>,
    config: RendererConfig,
}

impl Renderer {
    pub fn build(config: RendererConfig) -> Result<Renderer, RutabagaFailed> {
        let fences = Arc::new(Mutex::new(Fences::default()));
        let rutabaga = build_rutabaga(fences.clone(), &config)?;
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
}

impl Context {
    fn is_cross_domain(&self) -> bool {
        self.capset == RUTABAGA_CAPSET_CROSS_DOMAIN
    }
}

/// The host copy that shows a 3D resource, mapped read-write here: the
/// resource is read back into it at each flush.
struct Shadow {
    map: vm_memory::mmap::MmapRegion<()>,
    width: u32,
    height: u32,
    stride: u32,
}

/// A memfd from gpu-worker, mapped: only sealed against shrinking and at
/// least `len` bytes long, so no access to the mapping can fault (lseek,
/// not fstat: render-worker's policy has no C-library fstat).
fn map_sealed(
    fd: OwnedFd,
    len: usize,
    prot: i32,
) -> Result<vm_memory::mmap::MmapRegion<()>, String> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    let sealed = fcntl(&fd, FcntlArg::F_GET_SEALS)
        .map(SealFlag::from_bits_truncate)
        .is_ok_and(|s| s.contains(SealFlag::F_SEAL_SHRINK));
    let size = nix::unistd::lseek(&fd, 0, nix::unistd::Whence::SeekEnd);
    if !sealed || size.map_or(true, |l| (l as u64) < len as u64) || len == 0 {
        return Err(format!(
            "not sealed against shrinking, or shorter than {len} bytes ({size:?})"
        ));
    }
    vm_memory::mmap::MmapRegion::<()>::build(
        Some(FileOffset::new(File::from(fd), 0)),
        len,
        prot,
        nix::libc::MAP_SHARED,
    )
    .map_err(|e| format!("cannot map it: {e}"))
}

/// gpu-worker's submit buffer, mapped read-only here.
struct SubmitBuffer(vm_memory::mmap::MmapRegion<()>);

impl SubmitBuffer {
    /// The first `len` bytes, if the buffer holds that many.
    fn get(&self, range: std::ops::RangeTo<usize>) -> Option<&[u8]> {
        if range.end > self.0.size() {
            return None;
        }
        // SAFETY: the region maps `size()` bytes of a memfd sealed against
        // shrinking for as long as `self.0` lives (the borrow of self);
        // gpu-worker may write it meanwhile, which changes only bytes
        // (copied out before use), never the mapping.
        Some(unsafe { std::slice::from_raw_parts(self.0.as_ptr(), range.end) })
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
    /// Blobs and 3D resources, by resource id.
    held: BTreeMap<u32, Held>,
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
                // Its rings' timelines go with it.
                self.fences
                    .lock_or_recover()
                    .signalled
                    .retain(|&(c, _), _| c != ctx_id);
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

    /// The connection's submit buffer, from gpu-worker (less trusted than
    /// this process with the GPU: it parses guest bytes): taken once, only
    /// sealed against shrinking and at least `MAX_SUBMIT_BYTES` long (so
    /// no read of it can fault), and mapped read-only.
    fn take_submit_buffer(&mut self, fds: Vec<OwnedFd>) -> Answer {
        if self.submit_buffer.is_some() {
            return refused(ERR_UNSPEC, "a second submit buffer");
        }
        let Ok([fd]) = <[OwnedFd; 1]>::try_from(fds) else {
            return refused(ERR_UNSPEC, "a submit buffer without its one descriptor");
        };
        let len = wire::command::MAX_SUBMIT_BYTES;
        match map_sealed(fd, len, nix::libc::PROT_READ) {
            Ok(map) => {
                self.submit_buffer = Some(SubmitBuffer(map));
                Reply::Done
            }
            Err(why) => refused(ERR_UNSPEC, format!("the submit buffer: {why}")),
        }
    }

    /// The host copy of 3D resource `resource_id` on a scanout.
    fn take_shadow(
        &mut self,
        resource_id: u32,
        width: u32,
        height: u32,
        stride: u32,
        fds: Vec<OwnedFd>,
    ) -> Answer {
        if !self.held.contains_key(&resource_id) {
            return refused(
                ERR_INVALID_RESOURCE_ID,
                format!("no 3D resource {resource_id}"),
            );
        }
        let Ok([fd]) = <[OwnedFd; 1]>::try_from(fds) else {
            return refused(ERR_UNSPEC, "a scanout copy without its one descriptor");
        };
        let len = u64::from(stride) * u64::from(height);
        if u64::from(width) * 4 > u64::from(stride) || len > usize::MAX as u64 {
            return refused(
                ERR_UNSPEC,
                format!("a scanout copy of {width}x{height}, stride {stride}"),
            );
        }
        match map_sealed(
            fd,
            len as usize,
            nix::libc::PROT_READ | nix::libc::PROT_WRITE,
        ) {
            Ok(map) => {
                self.shadows.insert(
                    resource_id,
                    Shadow {
                        map,
                        width,
                        height,
                        stride,
                    },
                );
                Reply::Done
            }
            Err(why) => refused(
                ERR_UNSPEC,
                format!("the scanout copy of {resource_id}: {why}"),
            ),
        }
    }

    /// Reads `rect` of 3D resource `resource_id` back into its host copy.
    fn read_back(&mut self, resource_id: u32, rect: ipc::PixelRect) -> Answer {
        let Some(shadow) = self.shadows.get(&resource_id) else {
            return refused(
                ERR_INVALID_RESOURCE_ID,
                format!("3D resource {resource_id} has no scanout copy"),
            );
        };
        if !rect.fits_in(shadow.width, shadow.height) {
            return refused(
                ERR_INVALID_PARAMETER,
                format!(
                    "read back {rect:?} of a {}x{} resource",
                    shadow.width, shadow.height
                ),
            );
        }
        let transfer = Transfer3D {
            x: rect.x,
            y: rect.y,
            z: 0,
            w: rect.width,
            h: rect.height,
            d: 1,
            level: 0,
            stride: shadow.stride,
            layer_stride: 0,
            offset: u64::from(rect.y) * u64::from(shadow.stride) + u64::from(rect.x) * 4,
        };
        // SAFETY: the mapping holds `size()` bytes for as long as the
        // shadow lives (sealed against shrinking); the broker reads it
        // meanwhile, which costs it at most a torn frame.
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(shadow.map.as_ptr(), shadow.map.size()) };
        // Context 0: the resource itself, whichever context drew it.
        match self.rutabaga.transfer_read(
            0,
            resource_id,
            transfer,
            Some(std::io::IoSliceMut::new(bytes)),
        ) {
            Ok(()) => Reply::Done,
            Err(e) => refused(code_of(&e), format!("read back of {resource_id}: {e}")),
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
        let held = &self.held;
        self.memory.retain(|m| {
            m.generation == current || held.values().any(|b| b.generation == Some(m.generation))
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

    fn create_3d(&mut self, resource_id: u32, c: ipc::Create3d) -> Answer {
        let create = ResourceCreate3D {
            target: c.target,
            format: c.format,
            bind: c.bind,
            width: c.width,
            height: c.height,
            depth: c.depth,
            array_size: c.array_size,
            last_level: c.last_level,
            nr_samples: c.nr_samples,
            flags: c.flags,
        };
        if let Err(e) = self.rutabaga.resource_create_3d(resource_id, create) {
            return refused(code_of(&e), format!("3D resource {resource_id}: {e}"));
        }
        self.held.insert(
            resource_id,
            Held {
                size: 0,
                flags: 0,
                mapped: None,
                generation: None,
            },
        );
        Reply::Done
    }

    fn attach_backing(&mut self, resource_id: u32, entries: &[(u64, u32)]) -> Answer {
        if !self.held.contains_key(&resource_id) {
            return refused(
                ERR_INVALID_RESOURCE_ID,
                format!("no 3D resource {resource_id}"),
            );
        }
        let (iovecs, generation) = match self.iovecs(entries) {
            Ok(v) => v,
            Err(why) => return refused(ERR_INVALID_PARAMETER, why.to_string()),
        };
        if let Err(e) = self.rutabaga.attach_backing(resource_id, iovecs) {
            return refused(code_of(&e), format!("backing of {resource_id}: {e}"));
        }
        if let Some(h) = self.held.get_mut(&resource_id) {
            h.generation = Some(generation);
        }
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
        let contexts: Vec<u32> = self.contexts.keys().copied().collect();
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
