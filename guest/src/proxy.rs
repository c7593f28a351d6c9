//! One client's connection: its Wayland bytes relayed to the host's
//! compositor over a cross-domain channel of its own, and back, with what
//! cannot cross as it is translated:
//!
//! - `wl_shm`: a pool stays in the guest (the proxy keeps the client's
//!   descriptor); each buffer made from it is backed by a host image of
//!   its own, sent to the compositor as a one-buffer pool of that image,
//!   an object of the proxy's own. On commit, the damaged rectangles are copied from the client's
//!   pool into the image (with `pread`, so a client that shrinks its pool
//!   gets an error, not the proxy a SIGBUS).
//! - A memfd from the compositor (a keymap) becomes a sealed guest memfd
//!   with its bytes; a pipe it sends (`wl_data_source.send`) becomes a
//!   guest pipe whose bytes go back with CROSS_DOMAIN_CMD_WRITE; a pipe a
//!   client sends (`wl_data_offer.receive`) becomes a host read pipe whose
//!   bytes come back as CROSS_DOMAIN_CMD_READ.
//! - Everything else passes through as it came.
//!
//! Every message is walked by its signature (see [`crate::wire`]), so the
//! proxy knows each object's interface, each descriptor's message and each
//! new object. Client-made objects have an id in the client's space and
//! another in the host connection's: libwayland's server takes a new id
//! only if it is a free one no higher than the next, so the objects the
//! proxy makes for itself take ids in that sequence, and every id in
//! every message is translated (the server's own ids, from 0xff000000,
//! are the same on both sides). A client that breaks the protocol gets `wl_display.error`
//! and loses its connection, and only its own.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::rc::Rc;

use nix::fcntl::{fcntl, FcntlArg, OFlag, SealFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::sys::stat::{fstat, SFlag};
use wayland_backend::protocol::{ArgumentType, Interface};

use crate::channel::{Channel, HostImage};
use crate::cross_domain::{self, Identifier, RingMessage};
use crate::globals;
use crate::wire::{self, Arg, Header};

/// `wl_display.error` codes.
const INVALID_OBJECT: u32 = 0;
const INVALID_METHOD: u32 = 1;
const NO_MEMORY: u32 = 2;
const IMPLEMENTATION: u32 = 3;
/// `wl_shm.error` codes.
const SHM_INVALID_FORMAT: u32 = 0;
const SHM_INVALID_STRIDE: u32 = 1;
const SHM_INVALID_FD: u32 = 2;

/// Where the server's ids start.
const SERVER_IDS: u32 = 0xff00_0000;
/// libwayland's limit on descriptors in one message batch.
const MAX_FDS: usize = 28;
/// Descriptors a client may send ahead of the messages that carry them.
const MAX_QUEUED_FDS: usize = 2 * MAX_FDS;
/// The data of one SEND: a Wayland connection buffer's worth.
const SEND_BYTES: usize = 4096;
/// Damage rectangles kept per buffer before they become the whole buffer.
const MAX_RECTS: usize = 16;

/// Why a connection ends.
#[derive(Debug)]
pub enum End {
    /// The client hung up.
    Gone,
    /// The client broke the protocol: the error it is sent.
    Client {
        object: u32,
        code: u32,
        message: String,
    },
    /// The host side failed or closed (the compositor went away, say).
    Host(String),
}

fn client_error(object: u32, code: u32, message: impl Into<String>) -> End {
    End::Client {
        object,
        code,
        message: message.into(),
    }
}

fn host(what: impl std::fmt::Display) -> End {
    End::Host(what.to_string())
}

/// What the proxy did for a client, logged when it ends.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub commits: u64,
    pub bytes_copied: u64,
}

#[derive(Clone, Copy)]
struct Object {
    interface: &'static Interface,
    version: u32,
}

struct Pool {
    file: Rc<File>,
    size: u64,
    /// The wl_shm it came from, on which the host pools are made.
    shm: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rect {
    x: i64,
    y: i64,
    w: i64,
    h: i64,
}

/// What of a buffer's host image is behind the client's pool.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stale {
    All,
    Rects(Vec<Rect>),
}

impl Stale {
    fn add(&mut self, more: &Stale) {
        match (&mut *self, more) {
            (Stale::All, _) => {}
            (_, Stale::All) => *self = Stale::All,
            (Stale::Rects(r), Stale::Rects(m)) => {
                for rect in m {
                    if !r.contains(rect) {
                        r.push(*rect);
                    }
                }
                if r.len() > MAX_RECTS {
                    *self = Stale::All;
                }
            }
        }
    }
}

struct ShmBuffer {
    file: Rc<File>,
    offset: u64,
    width: u32,
    height: u32,
    stride: u32,
    /// Bytes per pixel, where the format is one the proxy knows; else
    /// damage copies whole rows.
    bpp: Option<u32>,
    image: HostImage,
    stale: Stale,
}

#[derive(Default)]
struct Surface {
    /// A pending attach: the buffer (None for a null one).
    attached: Option<Option<u32>>,
    current: Option<u32>,
    damage: Vec<Rect>,
    damage_buffer: Vec<Rect>,
    scale: i64,
    transform: i64,
    viewport: bool,
    /// The buffers this surface has shown, which its damage makes stale.
    shown: Vec<u32>,
}

/// Bytes per pixel of a wl_shm format (0 and 1 are ARGB8888 and XRGB8888;
/// the rest are DRM fourccs).
fn bytes_per_pixel(format: u32) -> Option<u32> {
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

pub struct Proxy {
    client: UnixStream,
    channel: Channel,
    objects: HashMap<u32, Object>,
    /// Globals as announced to the client: name -> (interface, version).
    globals: HashMap<u32, (&'static Interface, u32)>,
    shm_formats: HashSet<u32>,
    pools: HashMap<u32, Pool>,
    buffers: HashMap<u32, ShmBuffer>,
    surfaces: HashMap<u32, Surface>,
    /// Client-made objects: client id -> host id, and back.
    to_host_id: HashMap<u32, u32>,
    to_client_id: HashMap<u32, u32>,
    /// Host ids of the proxy's own objects.
    proxy_owned: HashSet<u32>,
    /// Host ids the server has freed, and the next never used.
    free_host_ids: std::collections::BTreeSet<u32>,
    next_host_id: u32,
    from_client: Vec<u8>,
    client_fds: VecDeque<OwnedFd>,
    from_host: Vec<u8>,
    host_ids: VecDeque<Identifier>,
    to_host: Vec<u8>,
    to_host_ids: Vec<Identifier>,
    to_client: Vec<u8>,
    to_client_fds: Vec<OwnedFd>,
    /// Host read pipes: identifier -> the client's write end.
    read_pipes: HashMap<u32, File>,
    /// Host write pipes: the read end the client writes into, and the
    /// identifier its bytes go to.
    write_pipes: Vec<(File, u32)>,
    pub stats: Stats,
}

impl Proxy {
    /// A new client's connection, with its channel to the compositor.
    pub fn new(client: UnixStream, node: &Path) -> io::Result<Proxy> {
        let channel = Channel::open(node)?;
        let mut objects = HashMap::new();
        objects.insert(
            1,
            Object {
                interface: globals::display(),
                version: 1,
            },
        );
        Ok(Proxy {
            client,
            channel,
            objects,
            globals: HashMap::new(),
            shm_formats: HashSet::new(),
            pools: HashMap::new(),
            buffers: HashMap::new(),
            surfaces: HashMap::new(),
            to_host_id: HashMap::from([(1, 1)]),
            to_client_id: HashMap::from([(1, 1)]),
            proxy_owned: HashSet::new(),
            free_host_ids: Default::default(),
            next_host_id: 2,
            from_client: Vec::new(),
            client_fds: VecDeque::new(),
            from_host: Vec::new(),
            host_ids: VecDeque::new(),
            to_host: Vec::new(),
            to_host_ids: Vec::new(),
            to_client: Vec::new(),
            to_client_fds: Vec::new(),
            read_pipes: HashMap::new(),
            write_pipes: Vec::new(),
            stats: Stats::default(),
        })
    }

    /// Relays until the connection ends; a client's protocol error is sent
    /// to it before it is returned.
    pub fn run(&mut self) -> End {
        let end = loop {
            if let Err(end) = self.step() {
                break end;
            }
        };
        if let End::Client {
            object,
            code,
            ref message,
        } = end
        {
            let display = globals::display();
            let error = wire::message(
                1,
                globals::opcode(display, "error", true),
                &[
                    Arg::Object(object),
                    Arg::Uint(code),
                    Arg::Str(Some(message.as_bytes().to_vec())),
                ],
            );
            self.to_client.extend_from_slice(&error);
            let _ = self.flush_client();
        }
        end
    }

    fn step(&mut self) -> Result<(), End> {
        let (client_ready, channel_ready, pipes_ready) = {
            let mut fds = vec![
                PollFd::new(self.client.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.channel.poll_fd(), PollFlags::POLLIN),
            ];
            fds.extend(
                self.write_pipes
                    .iter()
                    .map(|(f, _)| PollFd::new(f.as_fd(), PollFlags::POLLIN)),
            );
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => return Ok(()),
                Err(e) => return Err(host(format!("poll: {e}"))),
            }
            let ready = |f: &PollFd| {
                f.revents()
                    .is_some_and(|r| !(r & !PollFlags::POLLNVAL).is_empty())
            };
            let pipes: Vec<bool> = fds[2..].iter().map(ready).collect();
            (ready(&fds[0]), ready(&fds[1]), pipes)
        };
        if channel_ready {
            let messages = self.channel.take_messages().map_err(host)?;
            for m in messages {
                self.ring_message(m)?;
            }
            self.events()?;
            self.flush_client().map_err(|e| {
                log::debug!("writing to the client: {e}");
                End::Gone
            })?;
        }
        if pipes_ready.iter().any(|r| *r) {
            self.pipes(&pipes_ready)?;
        }
        if client_ready {
            self.read_client()?;
            self.requests()?;
            self.flush_host()?;
        }
        Ok(())
    }

    // ----- the client's side -----

    fn read_client(&mut self) -> Result<(), End> {
        let mut buf = [0u8; 4096];
        let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<()>(
            self.client.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => return Ok(()),
            Err(e) => {
                log::debug!("reading the client: {e}");
                return Err(End::Gone);
            }
        };
        let bytes = msg.bytes;
        for c in msg
            .cmsgs()
            .map_err(|e| host(format!("control messages: {e}")))?
        {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // SAFETY: SCM_RIGHTS gave this process the descriptor;
                    // nothing else owns it.
                    self.client_fds
                        .push_back(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) });
                }
            }
        }
        if bytes == 0 {
            return Err(End::Gone);
        }
        self.from_client.extend_from_slice(&buf[..bytes]);
        if self.client_fds.len() > MAX_QUEUED_FDS {
            return Err(client_error(
                1,
                IMPLEMENTATION,
                format!(
                    "{} descriptors sent ahead of their messages",
                    self.client_fds.len()
                ),
            ));
        }
        Ok(())
    }

    fn requests(&mut self) -> Result<(), End> {
        let mut at = 0;
        let result = loop {
            let header = match Header::peek(&self.from_client[at..]) {
                Ok(Some(h)) if self.from_client.len() - at >= h.size => h,
                Ok(_) => break Ok(()),
                Err(e) => break Err(client_error(1, INVALID_METHOD, e)),
            };
            let message = self.from_client[at..at + header.size].to_vec();
            at += header.size;
            if let Err(end) = self.request(header, &message) {
                break Err(end);
            }
        };
        self.from_client.drain(..at);
        result
    }

    fn new_object(&mut self, id: u32, object: Object, from_client: bool) -> Result<(), End> {
        let range_ok = if from_client {
            id != 0 && id < SERVER_IDS
        } else {
            id >= SERVER_IDS
        };
        if !range_ok {
            let what = format!(
                "new {} id {id:#x} outside its side's range",
                object.interface.name
            );
            return Err(if from_client {
                client_error(1, INVALID_OBJECT, what)
            } else {
                host(what)
            });
        }
        if from_client && self.objects.contains_key(&id) {
            return Err(client_error(
                1,
                INVALID_OBJECT,
                format!("new {} id {id} is in use", object.interface.name),
            ));
        }
        self.objects.insert(id, object);
        Ok(())
    }

    /// The next host id, as libwayland's client would pick it.
    fn host_id(&mut self) -> u32 {
        if let Some(id) = self.free_host_ids.pop_first() {
            return id;
        }
        self.next_host_id += 1;
        self.next_host_id - 1
    }

    /// A host id for client object `client`.
    fn map_id(&mut self, client: u32) -> u32 {
        let host = self.host_id();
        self.to_host_id.insert(client, host);
        self.to_client_id.insert(host, client);
        host
    }

    fn host_side(&self, client: u32) -> Option<u32> {
        if client >= SERVER_IDS {
            Some(client)
        } else {
            self.to_host_id.get(&client).copied()
        }
    }

    fn client_side(&self, host: u32) -> Option<u32> {
        if host >= SERVER_IDS {
            Some(host)
        } else {
            self.to_client_id.get(&host).copied()
        }
    }

    fn request(&mut self, header: Header, message: &[u8]) -> Result<(), End> {
        let id = header.object;
        let object = *self
            .objects
            .get(&id)
            .ok_or_else(|| client_error(1, INVALID_OBJECT, format!("no object {id}")))?;
        let iface = object.interface;
        let desc = iface
            .requests
            .get(usize::from(header.opcode))
            .ok_or_else(|| {
                client_error(
                    id,
                    INVALID_METHOD,
                    format!("{} has no request {}", iface.name, header.opcode),
                )
            })?;
        let name = desc.name;
        let args = wire::parse(&message[wire::HEADER..], desc.signature)
            .map_err(|e| client_error(id, INVALID_METHOD, format!("{}.{name}: {e}", iface.name)))?;
        let nfds = desc
            .signature
            .iter()
            .filter(|a| **a == ArgumentType::Fd)
            .count();
        if self.client_fds.len() < nfds {
            return Err(client_error(
                id,
                INVALID_METHOD,
                format!("{}.{name} without its descriptor", iface.name),
            ));
        }
        let mut fds: Vec<OwnedFd> = self.client_fds.drain(..nfds).collect();
        for (arg, kind) in args.iter().zip(desc.signature) {
            if let (Arg::NewId(new), ArgumentType::NewId) = (arg, kind) {
                let child = if iface.name == "wl_registry" && name == "bind" {
                    self.bind(&args)?
                } else {
                    let interface = desc.child_interface.ok_or_else(|| {
                        client_error(
                            id,
                            INVALID_METHOD,
                            format!("{}.{name}: untyped new id", iface.name),
                        )
                    })?;
                    Object {
                        interface,
                        version: object.version,
                    }
                };
                self.new_object(*new, child, true)?;
            }
        }
        match (iface.name, name) {
            ("wl_shm", "create_pool") => return self.create_pool(id, &args, fds.remove(0)),
            ("wl_shm_pool", "create_buffer") => return self.create_buffer(id, &args),
            ("wl_shm_pool", "resize") => return self.resize_pool(id, args[0].int()),
            ("wl_shm_pool", "destroy") => {
                self.pools.remove(&id);
                self.objects.remove(&id);
                // The host never saw this pool: its id is freed here.
                let display = globals::display();
                let delete = wire::message(
                    1,
                    globals::opcode(display, "delete_id", true),
                    &[Arg::Uint(id)],
                );
                self.to_client.extend_from_slice(&delete);
                return self.flush_client().map_err(|_| End::Gone);
            }
            ("wl_surface", _) => self.surface_request(id, name, &args)?,
            ("wp_viewporter", "get_viewport") => {
                self.surfaces.entry(args[1].uint()).or_default().viewport = true;
            }
            _ => {}
        }
        let mut identifiers = Vec::new();
        for fd in fds {
            if !is_write_pipe(&fd) {
                return Err(client_error(
                    id,
                    INVALID_METHOD,
                    format!(
                        "{}.{name}: a descriptor the proxy cannot carry to the host (only the write end of a pipe)",
                        iface.name
                    ),
                ));
            }
            let pipe = self.channel.next_read_pipe();
            self.read_pipes.insert(pipe, File::from(fd));
            identifiers.push(Identifier {
                id: pipe,
                kind: cross_domain::ID_TYPE_READ_PIPE,
                size: 0,
            });
        }
        let carries_pipe = !identifiers.is_empty();
        let target = self.host_side(id).ok_or_else(|| {
            client_error(
                id,
                INVALID_OBJECT,
                format!("{} {id} is not on the host", iface.name),
            )
        })?;
        let mut out = args;
        for arg in &mut out {
            match arg {
                Arg::Object(v) if *v != 0 => {
                    *v = self.host_side(*v).ok_or_else(|| {
                        client_error(
                            id,
                            INVALID_OBJECT,
                            format!(
                                "{}.{name} names object {v}, which is not on the host",
                                iface.name
                            ),
                        )
                    })?;
                }
                Arg::NewId(v) => *v = self.map_id(*v),
                _ => {}
            }
        }
        let message = wire::message(target, header.opcode, &out);
        self.forward(&message, &identifiers)?;
        if carries_pipe {
            // rutabaga takes one pipe per SEND.
            self.flush_host()?;
        }
        if iface.name == "wl_buffer" && name == "destroy" {
            self.buffers.remove(&id);
        }
        Ok(())
    }

    fn bind(&self, args: &[Arg]) -> Result<Object, End> {
        let (global, Arg::Str(Some(name)), version) = (args[0].uint(), &args[1], args[2].uint())
        else {
            return Err(client_error(
                1,
                INVALID_METHOD,
                "wl_registry.bind without an interface",
            ));
        };
        match self.globals.get(&global) {
            Some((interface, max)) if interface.name.as_bytes() == name.as_slice() && version >= 1 && version <= *max => {
                Ok(Object {
                    interface,
                    version,
                })
            }
            _ => Err(client_error(
                1,
                INVALID_OBJECT,
                format!(
                    "wl_registry.bind of global {global} as {} version {version}, which is not announced",
                    String::from_utf8_lossy(name)
                ),
            )),
        }
    }

    fn forward(&mut self, message: &[u8], identifiers: &[Identifier]) -> Result<(), End> {
        if self.to_host.len() + message.len() > SEND_BYTES
            || self.to_host_ids.len() + identifiers.len() > cross_domain::MAX_IDENTIFIERS
        {
            self.flush_host()?;
        }
        self.to_host.extend_from_slice(message);
        self.to_host_ids.extend_from_slice(identifiers);
        Ok(())
    }

    fn flush_host(&mut self) -> Result<(), End> {
        if self.to_host.is_empty() && self.to_host_ids.is_empty() {
            return Ok(());
        }
        let sent = self.channel.send(&self.to_host, &self.to_host_ids);
        self.to_host.clear();
        self.to_host_ids.clear();
        sent.map_err(host)
    }

    fn create_pool(&mut self, shm: u32, args: &[Arg], fd: OwnedFd) -> Result<(), End> {
        let (pool, size) = (args[0].uint(), args[2].int());
        let file = File::from(fd);
        let len = fstat(&file)
            .ok()
            .filter(|s| SFlag::from_bits_truncate(s.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG)
            .map(|s| s.st_size);
        if size <= 0 {
            return Err(client_error(
                shm,
                SHM_INVALID_STRIDE,
                format!("a pool of {size} bytes"),
            ));
        }
        match len {
            Some(len) if len >= i64::from(size) => {}
            _ => {
                return Err(client_error(
                    shm,
                    SHM_INVALID_FD,
                    format!("a pool of {size} bytes on a descriptor that is not a file that long"),
                ))
            }
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

    fn resize_pool(&mut self, id: u32, size: i32) -> Result<(), End> {
        let pool = self
            .pools
            .get_mut(&id)
            .ok_or_else(|| client_error(id, INVALID_OBJECT, "no such pool"))?;
        let len = fstat(&*pool.file).map(|s| s.st_size).unwrap_or(0);
        if size < 0 || (size as u64) < pool.size || len < i64::from(size) {
            return Err(client_error(
                id,
                SHM_INVALID_FD,
                format!(
                    "resizing a pool of {} bytes to {size} (its file has {len})",
                    pool.size
                ),
            ));
        }
        pool.size = size as u64;
        Ok(())
    }

    fn create_buffer(&mut self, pool_id: u32, args: &[Arg]) -> Result<(), End> {
        let pool = self
            .pools
            .get(&pool_id)
            .ok_or_else(|| client_error(pool_id, INVALID_OBJECT, "no such pool"))?;
        let (buffer, offset, width, height, stride, format) = (
            args[0].uint(),
            args[1].int(),
            args[2].int(),
            args[3].int(),
            args[4].int(),
            args[5].uint(),
        );
        // ARGB8888 and XRGB8888 every compositor takes (the protocol says
        // so), before their `format` events arrive; others only once
        // announced.
        if format > 1 && !self.shm_formats.contains(&format) {
            return Err(client_error(
                pool.shm,
                SHM_INVALID_FORMAT,
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
                SHM_INVALID_STRIDE,
                format!(
                    "a {width}x{height} buffer of stride {stride} at {offset} in a pool of {} bytes",
                    pool.size
                ),
            ));
        }
        let (width, height, stride) = (width as u32, height as u32, stride as u32);
        let row_bytes = bpp.map_or(stride, |b| width * b);
        let image = self.channel.image(row_bytes, height).map_err(|e| {
            client_error(
                pool_id,
                NO_MEMORY,
                format!("no host memory for a {width}x{height} buffer: {e}"),
            )
        })?;
        let (shm, file) = (pool.shm, pool.file.clone());
        // The pool's wl_shm may have been released, and its id even reused
        // for another object, since the pool was made.
        let shm_iface = self
            .objects
            .get(&shm)
            .map(|o| o.interface)
            .filter(|i| i.name == "wl_shm")
            .ok_or_else(|| client_error(pool_id, INVALID_OBJECT, "the pool's wl_shm is gone"))?;
        let host_shm = self
            .host_side(shm)
            .ok_or_else(|| client_error(shm, INVALID_OBJECT, "wl_shm is not on the host"))?;
        let blob = image.blob.identifier();
        let size = i32::try_from(image.blob.blob.size)
            .map_err(|_| client_error(pool_id, NO_MEMORY, "a host image past 2 GiB"))?;
        let host_pool = self.host_id();
        self.proxy_owned.insert(host_pool);
        let host_buffer = self.map_id(buffer);
        let pool_iface = globals::find(b"wl_shm")
            .and_then(|s| s.requests[0].child_interface)
            .expect("wl_shm.create_pool makes a wl_shm_pool");
        let create_pool = wire::message(
            host_shm,
            globals::opcode(shm_iface, "create_pool", false),
            &[Arg::NewId(host_pool), Arg::Fd, Arg::Int(size)],
        );
        let create_buffer = wire::message(
            host_pool,
            globals::opcode(pool_iface, "create_buffer", false),
            &[
                Arg::NewId(host_buffer),
                Arg::Int(0),
                Arg::Int(width as i32),
                Arg::Int(height as i32),
                Arg::Int(image.stride as i32),
                Arg::Uint(format),
            ],
        );
        let destroy = wire::message(
            host_pool,
            globals::opcode(pool_iface, "destroy", false),
            &[],
        );
        self.forward(&create_pool, &[blob])?;
        self.forward(&create_buffer, &[])?;
        self.forward(&destroy, &[])?;
        self.buffers.insert(
            buffer,
            ShmBuffer {
                file,
                offset: offset as u64,
                width,
                height,
                stride,
                bpp,
                image,
                stale: Stale::All,
            },
        );
        Ok(())
    }

    fn surface_request(&mut self, id: u32, name: &str, args: &[Arg]) -> Result<(), End> {
        let rect = |a: &[Arg]| Rect {
            x: i64::from(a[0].int()),
            y: i64::from(a[1].int()),
            w: i64::from(a[2].int()),
            h: i64::from(a[3].int()),
        };
        if name == "destroy" {
            self.surfaces.remove(&id);
            return Ok(());
        }
        let surface = self.surfaces.entry(id).or_insert_with(|| Surface {
            scale: 1,
            ..Surface::default()
        });
        match name {
            "attach" => surface.attached = Some(Some(args[0].uint()).filter(|b| *b != 0)),
            "damage" if surface.damage.len() < 256 => surface.damage.push(rect(args)),
            "damage_buffer" if surface.damage_buffer.len() < 256 => {
                surface.damage_buffer.push(rect(args))
            }
            "damage" | "damage_buffer" => surface.damage.push(Rect {
                x: 0,
                y: 0,
                w: i64::MAX / 4,
                h: i64::MAX / 4,
            }),
            "set_buffer_scale" => surface.scale = i64::from(args[0].int()),
            "set_buffer_transform" => surface.transform = i64::from(args[0].int()),
            "commit" => return self.commit(id),
            _ => {}
        }
        Ok(())
    }

    /// Brings the committed buffer's host image up to date with the
    /// client's pool where it is stale, before the commit goes on.
    fn commit(&mut self, id: u32) -> Result<(), End> {
        self.stats.commits += 1;
        let surface = self.surfaces.get_mut(&id).expect("made in surface_request");
        if let Some(attached) = surface.attached.take() {
            surface.current = attached;
        }
        let Some(buffer) = surface.current else {
            surface.damage.clear();
            surface.damage_buffer.clear();
            return Ok(());
        };
        // Surface damage in buffer coordinates where that is a scaling;
        // anything else (a transform, a viewport) makes it the whole buffer.
        let mut damage = Stale::Rects(std::mem::take(&mut surface.damage_buffer));
        let plain = surface.transform == 0 && !surface.viewport && surface.scale > 0;
        let scale = surface.scale;
        let surface_damage: Vec<Rect> = std::mem::take(&mut surface.damage);
        if plain {
            let scaled = surface_damage
                .iter()
                .map(|r| Rect {
                    x: r.x.saturating_mul(scale),
                    y: r.y.saturating_mul(scale),
                    w: r.w.saturating_mul(scale),
                    h: r.h.saturating_mul(scale),
                })
                .collect();
            damage.add(&Stale::Rects(scaled));
        } else if !surface_damage.is_empty() {
            damage = Stale::All;
        }
        surface.shown.retain(|b| self.buffers.contains_key(b));
        for other in &surface.shown {
            if *other != buffer {
                if let Some(b) = self.buffers.get_mut(other) {
                    b.stale.add(&damage);
                }
            }
        }
        if !surface.shown.contains(&buffer) && self.buffers.contains_key(&buffer) {
            surface.shown.push(buffer);
        }
        let Some(b) = self.buffers.get_mut(&buffer) else {
            return Ok(());
        };
        let mut todo = std::mem::replace(&mut b.stale, Stale::Rects(Vec::new()));
        todo.add(&damage);
        let copied = copy(b, &todo).map_err(|e| client_error(buffer, SHM_INVALID_FD, e))?;
        self.stats.bytes_copied += copied;
        Ok(())
    }

    // ----- the host's side -----

    fn ring_message(&mut self, message: RingMessage) -> Result<(), End> {
        match message {
            RingMessage::Receive { identifiers, data } => {
                if identifiers.is_empty() && data.is_empty() {
                    return Err(host("the compositor closed the connection"));
                }
                self.from_host.extend_from_slice(&data);
                self.host_ids.extend(identifiers);
            }
            RingMessage::Read {
                identifier,
                hang_up,
                data,
            } => {
                if let Some(pipe) = self.read_pipes.get_mut(&identifier) {
                    if let Err(e) = pipe.write_all(&data) {
                        log::debug!("the client's pipe {identifier:#x}: {e}");
                        self.read_pipes.remove(&identifier);
                    }
                }
                if hang_up {
                    self.read_pipes.remove(&identifier);
                }
            }
        }
        Ok(())
    }

    fn events(&mut self) -> Result<(), End> {
        let mut at = 0;
        let result = loop {
            let header = match Header::peek(&self.from_host[at..]) {
                Ok(Some(h)) if self.from_host.len() - at >= h.size => h,
                Ok(_) => break Ok(()),
                Err(e) => break Err(host(format!("the compositor sent {e}"))),
            };
            let message = self.from_host[at..at + header.size].to_vec();
            at += header.size;
            if let Err(end) = self.event(header, &message) {
                break Err(end);
            }
        };
        self.from_host.drain(..at);
        result
    }

    fn event(&mut self, header: Header, message: &[u8]) -> Result<(), End> {
        if self.proxy_owned.contains(&header.object) {
            // The proxy's own pools have no events.
            return Err(host(format!(
                "the compositor sent an event to the proxy's object {}",
                header.object
            )));
        }
        let id = self.client_side(header.object).ok_or_else(|| {
            host(format!(
                "the compositor sent an event to unknown object {}",
                header.object
            ))
        })?;
        let object = *self.objects.get(&id).ok_or_else(|| {
            host(format!(
                "the compositor sent an event to unknown object {id}"
            ))
        })?;
        let iface = object.interface;
        let desc = iface
            .events
            .get(usize::from(header.opcode))
            .ok_or_else(|| {
                host(format!(
                    "the compositor sent {} event {}",
                    iface.name, header.opcode
                ))
            })?;
        let name = desc.name;
        let args = wire::parse(&message[wire::HEADER..], desc.signature)
            .map_err(|e| host(format!("the compositor's {}.{name}: {e}", iface.name)))?;
        for (arg, kind) in args.iter().zip(desc.signature) {
            match (arg, kind) {
                (Arg::NewId(new), ArgumentType::NewId) => {
                    let interface = desc
                        .child_interface
                        .ok_or_else(|| host(format!("{}.{name}: an untyped new id", iface.name)))?;
                    self.new_object(
                        *new,
                        Object {
                            interface,
                            version: object.version,
                        },
                        false,
                    )?;
                }
                (_, ArgumentType::Fd) => {
                    let ident = self.host_ids.pop_front().ok_or_else(|| {
                        host(format!("{}.{name} came without its descriptor", iface.name))
                    })?;
                    let fd = self.descriptor(ident, iface.name, name)?;
                    self.to_client_fds.push(fd);
                }
                _ => {}
            }
        }
        let mut args = args;
        match (iface.name, name) {
            ("wl_display", "delete_id") => {
                let gone = args[0].uint();
                if gone >= SERVER_IDS {
                    return Ok(());
                }
                self.free_host_ids.insert(gone);
                if self.proxy_owned.remove(&gone) {
                    return Ok(());
                }
                let Some(client) = self.to_client_id.remove(&gone) else {
                    return Ok(());
                };
                self.to_host_id.remove(&client);
                self.objects.remove(&client);
                args[0] = Arg::Uint(client);
            }
            ("wl_display", "error") => {
                log::warn!(
                    "the compositor sent a protocol error on object {}: {:?}",
                    args[0].uint(),
                    args[2]
                );
            }
            ("wl_registry", "global") => {
                let (global, Arg::Str(Some(interface)), version) =
                    (args[0].uint(), &args[1], args[2].uint())
                else {
                    return Err(host("wl_registry.global without an interface"));
                };
                let Some(ours) = globals::find(interface) else {
                    log::debug!("not announcing {}", String::from_utf8_lossy(interface));
                    return Ok(());
                };
                let version = version.min(ours.version);
                self.globals.insert(global, (ours, version));
                let announce = wire::message(
                    id,
                    header.opcode,
                    &[Arg::Uint(global), args[1].clone(), Arg::Uint(version)],
                );
                self.to_client.extend_from_slice(&announce);
                return Ok(());
            }
            ("wl_shm", "format") => {
                self.shm_formats.insert(args[0].uint());
            }
            _ => {}
        }
        let error = iface.name == "wl_display" && name == "error";
        for arg in &mut args {
            if let Arg::Object(v) = arg {
                if *v != 0 {
                    *v = match self.client_side(*v) {
                        Some(c) => c,
                        // An error on the proxy's own object is the client's
                        // connection's.
                        None if error => 1,
                        None => {
                            return Err(host(format!(
                                "{}.{name} names unknown object {v}",
                                iface.name
                            )))
                        }
                    };
                }
            }
        }
        let message = wire::message(id, header.opcode, &args);
        self.to_client.extend_from_slice(&message);
        Ok(())
    }

    /// A descriptor the compositor sent, made one the client can use.
    fn descriptor(&mut self, ident: Identifier, iface: &str, event: &str) -> Result<OwnedFd, End> {
        match ident.kind {
            cross_domain::ID_TYPE_VIRTGPU_BLOB => {
                let bytes = self
                    .channel
                    .import(ident.id, ident.size)
                    .map_err(|e| host(format!("{iface}.{event}: the compositor's memory: {e}")))?;
                sealed_memfd(&bytes).map_err(|e| host(format!("{iface}.{event}: a memfd: {e}")))
            }
            cross_domain::ID_TYPE_WRITE_PIPE => {
                let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
                    .map_err(|e| host(format!("{iface}.{event}: pipe: {e}")))?;
                self.write_pipes.push((File::from(read), ident.id));
                Ok(write)
            }
            kind => Err(host(format!(
                "{iface}.{event}: the compositor sent a descriptor of cross-domain kind {kind}, which the proxy does not carry"
            ))),
        }
    }

    fn pipes(&mut self, ready: &[bool]) -> Result<(), End> {
        let mut keep = Vec::with_capacity(self.write_pipes.len());
        let pipes = std::mem::take(&mut self.write_pipes);
        let mut result = Ok(());
        for (i, (pipe, id)) in pipes.into_iter().enumerate() {
            if !ready.get(i).copied().unwrap_or(false) {
                keep.push((pipe, id));
                continue;
            }
            let mut buf = vec![0u8; SEND_BYTES];
            match (&pipe).read(&mut buf) {
                Ok(0) | Err(_) => {
                    if let Err(e) = self.channel.write_pipe(id, &[], true) {
                        result = Err(host(e));
                    }
                }
                Ok(n) => {
                    if let Err(e) = self.channel.write_pipe(id, &buf[..n], false) {
                        result = Err(host(e));
                    }
                    keep.push((pipe, id));
                }
            }
        }
        self.write_pipes = keep;
        result
    }

    fn flush_client(&mut self) -> io::Result<()> {
        let mut fds: Vec<OwnedFd> = std::mem::take(&mut self.to_client_fds);
        let mut bytes = std::mem::take(&mut self.to_client);
        let mut at = 0;
        while at < bytes.len() || !fds.is_empty() {
            let batch: Vec<OwnedFd> = fds.drain(..fds.len().min(MAX_FDS)).collect();
            let raw: Vec<RawFd> = batch.iter().map(|f| f.as_raw_fd()).collect();
            let cmsg = [ControlMessage::ScmRights(&raw)];
            let end = if fds.is_empty() {
                bytes.len()
            } else {
                (at + 1).min(bytes.len())
            };
            let iov = [IoSlice::new(&bytes[at..end])];
            let sent = sendmsg::<()>(
                self.client.as_raw_fd(),
                &iov,
                if raw.is_empty() { &[] } else { &cmsg },
                MsgFlags::MSG_NOSIGNAL,
                None,
            )?;
            at += sent;
            if sent == 0 && raw.is_empty() {
                break;
            }
        }
        bytes.clear();
        self.to_client = bytes;
        Ok(())
    }
}

fn is_write_pipe(fd: &OwnedFd) -> bool {
    let fifo = fstat(fd)
        .is_ok_and(|s| SFlag::from_bits_truncate(s.st_mode) & SFlag::S_IFMT == SFlag::S_IFIFO);
    let write_only = fcntl(fd, FcntlArg::F_GETFL)
        .is_ok_and(|f| OFlag::from_bits_truncate(f) & OFlag::O_ACCMODE == OFlag::O_WRONLY);
    fifo && write_only
}

/// A memfd holding `bytes`, sealed against every change.
fn sealed_memfd(bytes: &[u8]) -> io::Result<OwnedFd> {
    let fd = memfd_create(
        c"airlock-compositor",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )?;
    let mut file = File::from(fd);
    file.write_all(bytes)?;
    fcntl(
        &file,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_WRITE
                | SealFlag::F_SEAL_SEAL,
        ),
    )?;
    Ok(file.into())
}

/// Copies `what` of `buffer` from the client's pool into its host image;
/// the bytes copied.
fn copy(buffer: &mut ShmBuffer, what: &Stale) -> Result<u64, String> {
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
    let host_stride = buffer.image.stride as usize;
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
        let image = buffer.image.blob.bytes_mut();
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
