//! The proxy end to end without a VM: a client on a socket pair, and the
//! host played by [`FakeHost`], which records what the proxy sends and
//! hands it what a compositor would.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write as _;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

use super::shm::tests::{pool_file, FakeImage};
use super::*;
use crate::wire::message;

/// What the proxy sent the host, and what the host has for it.
#[derive(Default)]
struct HostState {
    sent: Vec<(Vec<u8>, Vec<Identifier>)>,
    inbox: Vec<RingMessage>,
    images: Vec<(u32, u32)>,
}

/// A WRITE the proxy sent: (identifier, bytes, hang-up).
pub type Write = (u32, Vec<u8>, bool);

/// The host side as a test plays it: shared with the test through `Rc`s.
#[derive(Clone)]
pub struct FakeHost {
    state: Rc<RefCell<HostState>>,
    wake: Rc<EventFd>,
    next_read_pipe: u32,
    /// Blobs the compositor "sent": identifier -> bytes.
    pub blobs: HashMap<u32, Vec<u8>>,
    /// The WRITEs the proxy sent.
    pub writes: Rc<RefCell<Vec<Write>>>,
}

impl Default for FakeHost {
    fn default() -> Self {
        FakeHost {
            state: Rc::default(),
            wake: Rc::new(EventFd::from_flags(EfdFlags::EFD_NONBLOCK).unwrap()),
            next_read_pipe: 0x8000_0001,
            blobs: HashMap::new(),
            writes: Rc::default(),
        }
    }
}

impl FakeHost {
    /// The compositor sends `bytes`.
    fn receive(&self, bytes: Vec<u8>) {
        self.state.borrow_mut().inbox.push(RingMessage::Receive {
            identifiers: Vec::new(),
            data: bytes,
        });
        self.wake.write(1).unwrap();
    }

    /// The Wayland bytes the proxy has sent, taken.
    fn sent(&self) -> Vec<(Vec<u8>, Vec<Identifier>)> {
        std::mem::take(&mut self.state.borrow_mut().sent)
    }
}

impl Host for FakeHost {
    fn poll_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    fn take_messages(&mut self) -> io::Result<Vec<RingMessage>> {
        let _ = self.wake.read();
        Ok(std::mem::take(&mut self.state.borrow_mut().inbox))
    }

    fn send(&self, data: &[u8], identifiers: &[Identifier]) -> io::Result<()> {
        self.state
            .borrow_mut()
            .sent
            .push((data.to_vec(), identifiers.to_vec()));
        Ok(())
    }

    fn write_pipe(&self, identifier: u32, data: &[u8], hang_up: bool) -> io::Result<()> {
        self.writes
            .borrow_mut()
            .push((identifier, data.to_vec(), hang_up));
        Ok(())
    }

    fn next_read_pipe(&mut self) -> u32 {
        self.next_read_pipe += 1;
        self.next_read_pipe - 1
    }

    fn image(&mut self, row_bytes: u32, rows: u32) -> io::Result<Box<dyn HostImage>> {
        self.state.borrow_mut().images.push((row_bytes, rows));
        let stride = row_bytes.next_multiple_of(64);
        Ok(Box::new(FakeImage {
            stride,
            bytes: vec![0; (stride * rows) as usize],
        }))
    }

    fn import(&self, identifier: u32, size: u32) -> io::Result<Vec<u8>> {
        let bytes = self.blobs.get(&identifier).cloned().unwrap_or_default();
        Ok(bytes[..(size as usize).min(bytes.len())].to_vec())
    }
}

/// A proxy with a client socket and a fake host.
fn new_proxy() -> (Proxy, UnixStream, FakeHost) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let host = FakeHost::default();
    (Proxy::with_host(ours, Box::new(host.clone())), theirs, host)
}

fn client_sends(client: &mut UnixStream, bytes: &[u8], fds: &[RawFd]) {
    if fds.is_empty() {
        client.write_all(bytes).unwrap();
        return;
    }
    let cmsg = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(
        client.as_raw_fd(),
        &[std::io::IoSlice::new(bytes)],
        &cmsg,
        MsgFlags::empty(),
        None,
    )
    .unwrap();
}

/// What the client has been sent, as (object, opcode, bytes).
fn client_reads(client: &UnixStream) -> Vec<(u32, u16, Vec<u8>)> {
    let mut socket = ClientSocket::new(client.try_clone().unwrap());
    client.set_nonblocking(true).unwrap();
    let _ = socket.read();
    let mut out = Vec::new();
    each_message(
        &mut socket.bytes_in,
        |h, m| {
            out.push((h.object, h.opcode, m.to_vec()));
            Ok(())
        },
        host,
    )
    .unwrap();
    out
}

fn string(s: &str) -> Arg {
    Arg::Str(Some(s.as_bytes().to_vec()))
}

/// The client asks for the registry; the compositor announces wl_shm and
/// linux-dmabuf; the client hears of wl_shm alone.
fn registry_with_shm(proxy: &mut Proxy, client: &mut UnixStream, host: &FakeHost) {
    client_sends(
        client,
        &message(1, wl_display::REQ_GET_REGISTRY_OPCODE, &[Arg::NewId(2)]),
        &[],
    );
    proxy.step().unwrap();
    assert_eq!(
        host.sent(),
        [(
            message(1, wl_display::REQ_GET_REGISTRY_OPCODE, &[Arg::NewId(2)]),
            vec![]
        )],
        "translated to host id 2, as libwayland would pick it"
    );
    let globals = [
        message(
            2,
            wl_registry::EVT_GLOBAL_OPCODE,
            &[Arg::Uint(1), string("wl_shm"), Arg::Uint(1)],
        ),
        message(
            2,
            wl_registry::EVT_GLOBAL_OPCODE,
            &[Arg::Uint(2), string("zwp_linux_dmabuf_v1"), Arg::Uint(4)],
        ),
    ]
    .concat();
    host.receive(globals);
    proxy.step().unwrap();
    let got = client_reads(client);
    assert_eq!(got.len(), 1, "linux-dmabuf is not announced: {got:?}");
    assert_eq!(
        got[0].2,
        message(
            2,
            wl_registry::EVT_GLOBAL_OPCODE,
            &[Arg::Uint(1), string("wl_shm"), Arg::Uint(1)]
        )
    );
}

#[test]
fn only_globals_the_proxy_can_carry_are_announced_and_binding_another_is_an_error() {
    let (mut proxy, mut client, host) = new_proxy();
    registry_with_shm(&mut proxy, &mut client, &host);
    let bind = message(
        2,
        wl_registry::REQ_BIND_OPCODE,
        &[
            Arg::Uint(2),
            string("zwp_linux_dmabuf_v1"),
            Arg::Uint(4),
            Arg::NewId(3),
        ],
    );
    client_sends(&mut client, &bind, &[]);
    match proxy.step() {
        Err(End::Client {
            object: 1, code, ..
        }) => {
            assert_eq!(code, u32::from(wl_display::Error::InvalidObject))
        }
        other => panic!("{other:?}"),
    }
    assert!(host.sent().is_empty(), "nothing of it reached the host");
}

#[test]
fn a_buffer_becomes_a_host_image_sent_as_a_one_buffer_pool_of_the_proxys_own() {
    let (mut proxy, mut client, host) = new_proxy();
    registry_with_shm(&mut proxy, &mut client, &host);
    let bind = message(
        2,
        wl_registry::REQ_BIND_OPCODE,
        &[Arg::Uint(1), string("wl_shm"), Arg::Uint(1), Arg::NewId(3)],
    );
    let pool = pool_file(64 * 64 * 4);
    let create_pool = message(
        3,
        wl_shm::REQ_CREATE_POOL_OPCODE,
        &[Arg::NewId(4), Arg::Fd, Arg::Int(64 * 64 * 4)],
    );
    let create_buffer = message(
        4,
        wl_shm_pool::REQ_CREATE_BUFFER_OPCODE,
        &[
            Arg::NewId(5),
            Arg::Int(0),
            Arg::Int(64),
            Arg::Int(64),
            Arg::Int(256),
            Arg::Uint(1),
        ],
    );
    client_sends(
        &mut client,
        &[bind, create_pool, create_buffer].concat(),
        &[pool.as_raw_fd()],
    );
    proxy.step().unwrap();
    let sent = host.sent();
    let bytes: Vec<u8> = sent.iter().flat_map(|(b, _)| b.clone()).collect();
    let ids: Vec<Identifier> = sent.iter().flat_map(|(_, i)| i.clone()).collect();
    // bind -> host 3; the proxy's pool 4; the client's buffer 5 -> host 5.
    let want = [
        message(
            2,
            wl_registry::REQ_BIND_OPCODE,
            &[Arg::Uint(1), string("wl_shm"), Arg::Uint(1), Arg::NewId(3)],
        ),
        message(
            3,
            wl_shm::REQ_CREATE_POOL_OPCODE,
            &[Arg::NewId(4), Arg::Fd, Arg::Int(64 * 256)],
        ),
        message(
            4,
            wl_shm_pool::REQ_CREATE_BUFFER_OPCODE,
            &[
                Arg::NewId(5),
                Arg::Int(0),
                Arg::Int(64),
                Arg::Int(64),
                Arg::Int(256),
                Arg::Uint(1),
            ],
        ),
        message(4, wl_shm_pool::REQ_DESTROY_OPCODE, &[]),
    ]
    .concat();
    assert_eq!(bytes, want);
    assert_eq!(ids.len(), 1, "the image crosses with the pool");
    assert_eq!(host.state.borrow().images.as_slice(), [(256, 64)]);
    // The compositor frees the proxy's pool: the client hears nothing of it.
    host.receive(message(
        1,
        wl_display::EVT_DELETE_ID_OPCODE,
        &[Arg::Uint(4)],
    ));
    proxy.step().unwrap();
    assert!(client_reads(&client).is_empty());
}

#[test]
fn a_malformed_request_ends_that_client_with_invalid_method() {
    let (mut proxy, mut client, _host) = new_proxy();
    // wl_display.get_registry with no new id: 8 bytes, no argument.
    client_sends(
        &mut client,
        &message(1, wl_display::REQ_GET_REGISTRY_OPCODE, &[]),
        &[],
    );
    match proxy.step() {
        Err(End::Client { code, .. }) => {
            assert_eq!(code, u32::from(wl_display::Error::InvalidMethod))
        }
        other => panic!("{other:?}"),
    }
    // A message to an object that does not exist.
    let (mut other, mut other_client, _host) = new_proxy();
    client_sends(&mut other_client, &message(9, 0, &[]), &[]);
    match other.step() {
        Err(End::Client { code, .. }) => {
            assert_eq!(code, u32::from(wl_display::Error::InvalidObject))
        }
        end => panic!("{end:?}"),
    }
}
