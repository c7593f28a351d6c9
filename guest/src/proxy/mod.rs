//! One client's connection: its Wayland bytes relayed to the host's
//! compositor over a cross-domain channel of its own, and back, with what
//! cannot cross as it is translated. The rooms, as wayland-backend and
//! sommelier divide the same work:
//!
//! - [`socket`]: the client's socket, its descriptor queue, and the framing
//!   both directions share;
//! - [`ids`]: the objects and their ids on both sides;
//! - [`shm`]: pools stay in the guest, each buffer gets a host image of its
//!   own, damage is copied on commit;
//! - [`surfaces`]: what each commit shows and leaves stale;
//! - [`descriptors`]: memfds and pipes, both ways;
//! - [`host`]: the channel to the host, behind a trait (tests play it).
//!
//! Every message is walked by its signature (see [`crate::wire`]), from the
//! interface descriptions wayland-scanner generated from the protocol XML;
//! the messages the proxy acts on are picked out by the opcodes it
//! generated too. A client that breaks the protocol gets `wl_display.error`
//! (with the generated error code) and loses its connection, and only its
//! own.

mod descriptors;
mod end;
mod host;
mod ids;
mod shm;
mod socket;
mod surfaces;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use wayland_backend::protocol::{ArgumentType, Interface};
use wayland_client::protocol::{wl_buffer, wl_display, wl_registry, wl_shm, wl_shm_pool};
use wayland_protocols::wp::viewporter::client::wp_viewporter;

use crate::channel::Channel;
use crate::cross_domain::{self, Identifier, RingMessage};
use crate::globals;
use crate::wire::{self, Arg, Header};
use descriptors::Pipes;
pub use end::End;
use end::{client_error, host};
pub use host::{Host, HostImage};
use ids::{Ids, Object};
use shm::Shm;
use socket::{each_message, ClientSocket};
use surfaces::{Commit, Stale, Surfaces};

/// The data of one SEND: a Wayland connection buffer's worth.
const SEND_BYTES: usize = 4096;

/// What the proxy did for a client, logged when it ends.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub commits: u64,
    pub bytes_copied: u64,
}

/// The interfaces whose messages the proxy acts on, beside relaying them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Display,
    Registry,
    Shm,
    ShmPool,
    Surface,
    Buffer,
    Viewporter,
    Other,
}

fn kind(interface: &Interface) -> Kind {
    match interface.name {
        "wl_display" => Kind::Display,
        "wl_registry" => Kind::Registry,
        "wl_shm" => Kind::Shm,
        "wl_shm_pool" => Kind::ShmPool,
        "wl_surface" => Kind::Surface,
        "wl_buffer" => Kind::Buffer,
        "wp_viewporter" => Kind::Viewporter,
        _ => Kind::Other,
    }
}

/// Argument `i` of a parsed message (the signature fixed how many there
/// are; an absent one reads as 0).
fn uint(args: &[Arg], i: usize) -> u32 {
    args.get(i).map_or(0, Arg::uint)
}

fn int(args: &[Arg], i: usize) -> i32 {
    args.get(i).map_or(0, Arg::int)
}

pub struct Proxy {
    client: ClientSocket,
    host: Box<dyn Host>,
    ids: Ids,
    /// Globals as announced to the client: name -> (interface, version).
    globals: HashMap<u32, (&'static Interface, u32)>,
    shm: Shm,
    surfaces: Surfaces,
    pipes: Pipes,
    from_host: Vec<u8>,
    host_ids: VecDeque<Identifier>,
    to_host: Vec<u8>,
    to_host_ids: Vec<Identifier>,
    pub stats: Stats,
}

impl Proxy {
    /// A new client's connection, with its channel to the compositor.
    pub fn new(client: UnixStream, node: &Path) -> io::Result<Proxy> {
        Ok(Proxy::with_host(client, Box::new(Channel::open(node)?)))
    }

    /// A client's connection to `host`.
    pub fn with_host(client: UnixStream, host: Box<dyn Host>) -> Proxy {
        Proxy {
            client: ClientSocket::new(client),
            host,
            ids: Ids::new(),
            globals: HashMap::new(),
            shm: Shm::default(),
            surfaces: Surfaces::default(),
            pipes: Pipes::default(),
            from_host: Vec::new(),
            host_ids: VecDeque::new(),
            to_host: Vec::new(),
            to_host_ids: Vec::new(),
            stats: Stats::default(),
        }
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
            let error = wire::message(
                1,
                wl_display::EVT_ERROR_OPCODE,
                &[
                    Arg::Object(object),
                    Arg::Uint(code),
                    Arg::Str(Some(message.as_bytes().to_vec())),
                ],
            );
            // A client that stopped reading may not take even this.
            let _ = self.client.queue(&error, Vec::new());
            let _ = self.client.flush();
        }
        end
    }

    /// Waits for the client, the channel or a pipe, and relays what came.
    fn step(&mut self) -> Result<(), End> {
        let client_events = match self.client.has_pending() {
            true => PollFlags::POLLIN | PollFlags::POLLOUT,
            false => PollFlags::POLLIN,
        };
        let (client_ready, channel_ready, pipes_ready) = {
            let mut fds = vec![
                PollFd::new(self.client.as_fd(), client_events),
                PollFd::new(self.host.poll_fd(), PollFlags::POLLIN),
            ];
            fds.extend(
                self.pipes
                    .poll_fds()
                    .map(|f| PollFd::new(f, PollFlags::POLLIN)),
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
            for m in self.host.take_messages().map_err(host)? {
                self.ring_message(m)?;
            }
            self.events()?;
            self.client.flush().map_err(|e| {
                log::debug!("writing to the client: {e}");
                End::Gone
            })?;
        }
        if pipes_ready.iter().any(|r| *r) {
            self.pipes.pump(&pipes_ready, &*self.host).map_err(host)?;
        }
        if client_ready && self.client.has_pending() {
            self.client.flush().map_err(|e| {
                log::debug!("writing to the client: {e}");
                End::Gone
            })?;
        }
        if client_ready {
            self.client.read()?;
            let mut bytes = std::mem::take(&mut self.client.bytes_in);
            let done = each_message(
                &mut bytes,
                |h, m| self.request(h, m),
                |e| client_error(1, wl_display::Error::InvalidMethod, e.to_string()),
            );
            self.client.bytes_in = bytes;
            done?;
            self.flush_host()?;
        }
        Ok(())
    }

    // ----- the client's side -----

    fn request(&mut self, header: Header, message: &[u8]) -> Result<(), End> {
        let id = header.object;
        let object = self.ids.get(id).ok_or_else(|| {
            client_error(
                1,
                wl_display::Error::InvalidObject,
                format!("no object {id}"),
            )
        })?;
        let iface = object.interface;
        let desc = iface
            .requests
            .get(usize::from(header.opcode))
            .ok_or_else(|| {
                client_error(
                    id,
                    wl_display::Error::InvalidMethod,
                    format!("{} has no request {}", iface.name, header.opcode),
                )
            })?;
        let name = desc.name;
        let invalid = |why: String| client_error(id, wl_display::Error::InvalidMethod, why);
        let args = wire::parse(&message[wire::HEADER..], desc.signature)
            .map_err(|e| invalid(format!("{}.{name}: {e}", iface.name)))?;
        let nfds = desc
            .signature
            .iter()
            .filter(|a| **a == ArgumentType::Fd)
            .count();
        let mut fds = self
            .client
            .take_fds(nfds)
            .ok_or_else(|| invalid(format!("{}.{name} without its descriptor", iface.name)))?;
        let which = (kind(iface), header.opcode);
        for (arg, signature) in args.iter().zip(desc.signature) {
            if let (Arg::NewId(new), ArgumentType::NewId) = (arg, signature) {
                let child = if which == (Kind::Registry, wl_registry::REQ_BIND_OPCODE) {
                    self.bind(&args)?
                } else {
                    let interface = desc
                        .child_interface
                        .ok_or_else(|| invalid(format!("{}.{name}: untyped new id", iface.name)))?;
                    Object {
                        interface,
                        version: object.version,
                    }
                };
                self.ids.add(*new, child, true).map_err(|e| {
                    client_error(1, wl_display::Error::InvalidObject, e.to_string())
                })?;
            }
        }
        match which {
            (Kind::Shm, wl_shm::REQ_CREATE_POOL_OPCODE) => {
                let fd = fds
                    .pop()
                    .ok_or_else(|| invalid("create_pool without its fd".into()))?;
                return self.shm.create_pool(id, uint(&args, 0), fd, int(&args, 2));
            }
            (Kind::ShmPool, wl_shm_pool::REQ_CREATE_BUFFER_OPCODE) => {
                return self.create_buffer(id, &args)
            }
            (Kind::ShmPool, wl_shm_pool::REQ_RESIZE_OPCODE) => {
                return self.shm.resize_pool(id, int(&args, 0))
            }
            (Kind::ShmPool, wl_shm_pool::REQ_DESTROY_OPCODE) => return self.destroy_pool(id),
            (Kind::Surface, opcode) => {
                if opcode == wayland_client::protocol::wl_surface::REQ_COMMIT_OPCODE {
                    self.stats.commits += 1;
                }
                let shm = &self.shm;
                if let Some(commit) = self
                    .surfaces
                    .request(id, opcode, &args, |b| shm.is_buffer(b))
                {
                    self.commit(commit)?;
                }
            }
            (Kind::Viewporter, wp_viewporter::REQ_GET_VIEWPORT_OPCODE) => {
                self.surfaces.viewport(uint(&args, 1));
            }
            _ => {}
        }
        let identifiers = self.client_descriptors(id, iface, name, fds)?;
        let target = self.ids.host_side(id).ok_or_else(|| {
            client_error(
                id,
                wl_display::Error::InvalidObject,
                format!("{} {id} is not on the host", iface.name),
            )
        })?;
        let mut out = args;
        for arg in &mut out {
            match arg {
                Arg::Object(v) if *v != 0 => {
                    *v = self.ids.host_side(*v).ok_or_else(|| {
                        client_error(
                            id,
                            wl_display::Error::InvalidObject,
                            format!(
                                "{}.{name} names object {v}, which is not on the host",
                                iface.name
                            ),
                        )
                    })?;
                }
                Arg::NewId(v) => *v = self.ids.map(*v),
                _ => {}
            }
        }
        let message = wire::message(target, header.opcode, &out);
        self.forward(&message, &identifiers)?;
        if !identifiers.is_empty() {
            // rutabaga takes one pipe per SEND.
            self.flush_host()?;
        }
        if which == (Kind::Buffer, wl_buffer::REQ_DESTROY_OPCODE) {
            self.shm.destroy_buffer(id);
        }
        Ok(())
    }

    /// The client's descriptors of a request, as the host will know them.
    fn client_descriptors(
        &mut self,
        id: u32,
        iface: &Interface,
        name: &str,
        fds: Vec<OwnedFd>,
    ) -> Result<Vec<Identifier>, End> {
        fds.into_iter()
            .map(|fd| {
                self.pipes.carry_to_host(fd, &mut *self.host).map_err(|e| {
                    client_error(
                        id,
                        wl_display::Error::InvalidMethod,
                        format!("{}.{name}: {e}", iface.name),
                    )
                })
            })
            .collect()
    }

    fn bind(&self, args: &[Arg]) -> Result<Object, End> {
        let (global, version) = (uint(args, 0), uint(args, 2));
        let Some(Arg::Str(Some(name))) = args.get(1) else {
            return Err(client_error(
                1,
                wl_display::Error::InvalidMethod,
                "wl_registry.bind without an interface",
            ));
        };
        match self.globals.get(&global) {
            Some((interface, max))
                if interface.name.as_bytes() == name.as_slice()
                    && (1..=*max).contains(&version) =>
            {
                Ok(Object { interface, version })
            }
            _ => Err(client_error(
                1,
                wl_display::Error::InvalidObject,
                format!(
                    "wl_registry.bind of global {global} as {} version {version}, which is not \
                     announced",
                    String::from_utf8_lossy(name)
                ),
            )),
        }
    }

    /// `wl_shm_pool.destroy`: the host never saw the pool, so its id is
    /// freed here.
    fn destroy_pool(&mut self, id: u32) -> Result<(), End> {
        self.shm.destroy_pool(id);
        self.ids.forget(id);
        let delete = wire::message(1, wl_display::EVT_DELETE_ID_OPCODE, &[Arg::Uint(id)]);
        self.client.queue(&delete, Vec::new())?;
        self.client.flush().map_err(|_| End::Gone)
    }

    /// `wl_shm_pool.create_buffer`: a host image of the buffer's size, sent
    /// to the compositor as a one-buffer pool of the proxy's own.
    fn create_buffer(&mut self, pool_id: u32, args: &[Arg]) -> Result<(), End> {
        let buffer = uint(args, 0);
        let new = self.shm.check_buffer(
            pool_id,
            (int(args, 1), int(args, 2), int(args, 3), int(args, 4)),
            uint(args, 5),
        )?;
        let (width, height) = (new.width, new.height);
        // The pool's wl_shm may have been released, and its id even reused
        // for another object, since the pool was made.
        let shm_is_live = self
            .ids
            .get(new.shm)
            .is_some_and(|o| kind(o.interface) == Kind::Shm);
        let host_shm = self
            .ids
            .host_side(new.shm)
            .filter(|_| shm_is_live)
            .ok_or_else(|| {
                client_error(
                    pool_id,
                    wl_display::Error::InvalidObject,
                    "the pool's wl_shm is gone",
                )
            })?;
        let image = self.host.image(new.row_bytes(), height).map_err(|e| {
            client_error(
                pool_id,
                wl_display::Error::NoMemory,
                format!("no host memory for a {width}x{height} buffer: {e}"),
            )
        })?;
        let size = i32::try_from(image.size()).map_err(|_| {
            client_error(
                pool_id,
                wl_display::Error::NoMemory,
                "a host image past 2 GiB",
            )
        })?;
        let stride = i32::try_from(image.stride()).map_err(|_| {
            client_error(
                pool_id,
                wl_display::Error::NoMemory,
                "a host image's stride past 2 GiB",
            )
        })?;
        let host_pool = self.ids.proxy_owned();
        let host_buffer = self.ids.map(buffer);
        let create_pool = wire::message(
            host_shm,
            wl_shm::REQ_CREATE_POOL_OPCODE,
            &[Arg::NewId(host_pool), Arg::Fd, Arg::Int(size)],
        );
        let create_buffer = wire::message(
            host_pool,
            wl_shm_pool::REQ_CREATE_BUFFER_OPCODE,
            &[
                Arg::NewId(host_buffer),
                Arg::Int(0),
                Arg::Int(width as i32),
                Arg::Int(height as i32),
                Arg::Int(stride),
                Arg::Uint(new.format),
            ],
        );
        let destroy = wire::message(host_pool, wl_shm_pool::REQ_DESTROY_OPCODE, &[]);
        self.forward(&create_pool, &[image.identifier()])?;
        self.forward(&create_buffer, &[])?;
        self.forward(&destroy, &[])?;
        self.shm.add_buffer(buffer, new, image);
        Ok(())
    }

    /// Brings the committed buffer's host image up to date with the
    /// client's pool where it is stale, before the commit goes on, and
    /// marks the surface's other buffers stale where it changed.
    fn commit(&mut self, commit: Commit) -> Result<(), End> {
        for other in &commit.others {
            if let Some(b) = self.shm.buffer_mut(*other) {
                b.stale.add(&commit.damage);
            }
        }
        let Some(b) = self.shm.buffer_mut(commit.buffer) else {
            return Ok(());
        };
        let mut todo = std::mem::replace(&mut b.stale, Stale::Rects(Vec::new()));
        todo.add(&commit.damage);
        let copied = shm::copy(b, &todo)
            .map_err(|e| client_error(commit.buffer, wl_shm::Error::InvalidFd, e))?;
        self.stats.bytes_copied += copied;
        Ok(())
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
        let sent = self.host.send(&self.to_host, &self.to_host_ids);
        self.to_host.clear();
        self.to_host_ids.clear();
        sent.map_err(host)
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
            } => self.pipes.deliver(identifier, &data, hang_up),
        }
        Ok(())
    }

    fn events(&mut self) -> Result<(), End> {
        let mut bytes = std::mem::take(&mut self.from_host);
        let done = each_message(
            &mut bytes,
            |h, m| self.event(h, m),
            |e| host(format!("the compositor sent {e}")),
        );
        self.from_host = bytes;
        done
    }

    fn event(&mut self, header: Header, message: &[u8]) -> Result<(), End> {
        if self.ids.is_proxy_owned(header.object) {
            // The proxy's own pools have no events.
            return Err(host(format!(
                "the compositor sent an event to the proxy's object {}",
                header.object
            )));
        }
        let unknown = |o: u32| {
            host(format!(
                "the compositor sent an event to unknown object {o}"
            ))
        };
        let id = self
            .ids
            .client_side(header.object)
            .ok_or_else(|| unknown(header.object))?;
        let object = self.ids.get(id).ok_or_else(|| unknown(id))?;
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
        let mut args = wire::parse(&message[wire::HEADER..], desc.signature)
            .map_err(|e| host(format!("the compositor's {}.{name}: {e}", iface.name)))?;
        let mut fds = Vec::new();
        for (arg, signature) in args.iter().zip(desc.signature) {
            match (arg, signature) {
                (Arg::NewId(new), ArgumentType::NewId) => {
                    let interface = desc
                        .child_interface
                        .ok_or_else(|| host(format!("{}.{name}: an untyped new id", iface.name)))?;
                    let child = Object {
                        interface,
                        version: object.version,
                    };
                    self.ids.add(*new, child, false).map_err(host)?;
                }
                (_, ArgumentType::Fd) => {
                    let ident = self.host_ids.pop_front().ok_or_else(|| {
                        host(format!("{}.{name} came without its descriptor", iface.name))
                    })?;
                    let fd = self
                        .pipes
                        .carry_from_host(ident, &*self.host)
                        .map_err(|e| host(format!("{}.{name}: {e}", iface.name)))?;
                    fds.push(fd);
                }
                _ => {}
            }
        }
        match (kind(iface), header.opcode) {
            (Kind::Display, wl_display::EVT_DELETE_ID_OPCODE) => {
                let Some(client) = self.ids.deleted(uint(&args, 0)) else {
                    return Ok(());
                };
                args[0] = Arg::Uint(client);
            }
            (Kind::Display, wl_display::EVT_ERROR_OPCODE) => {
                log::warn!(
                    "the compositor sent a protocol error on object {}: {:?}",
                    uint(&args, 0),
                    args.get(2)
                );
            }
            (Kind::Registry, wl_registry::EVT_GLOBAL_OPCODE) => {
                let (global, version) = (uint(&args, 0), uint(&args, 2));
                let Some(Arg::Str(Some(interface))) = args.get(1) else {
                    return Err(host("wl_registry.global without an interface"));
                };
                let Some(ours) = globals::find(interface) else {
                    // What real applications would have had: the list of
                    // protocols worth carrying next.
                    log::info!(
                        "not announced to the client: {} version {version} (not carried)",
                        String::from_utf8_lossy(interface)
                    );
                    return Ok(());
                };
                let version = version.min(ours.version);
                self.globals.insert(global, (ours, version));
                let announce = wire::message(
                    id,
                    header.opcode,
                    &[Arg::Uint(global), args[1].clone(), Arg::Uint(version)],
                );
                return self.client.queue(&announce, fds);
            }
            (Kind::Shm, wl_shm::EVT_FORMAT_OPCODE) => {
                self.shm.formats.insert(uint(&args, 0));
            }
            _ => {}
        }
        let error = (kind(iface), header.opcode) == (Kind::Display, wl_display::EVT_ERROR_OPCODE);
        for arg in &mut args {
            if let Arg::Object(v) = arg {
                if *v != 0 {
                    *v = match self.ids.client_side(*v) {
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
        self.client.queue(&message, fds)
    }
}

#[cfg(test)]
pub mod tests;
