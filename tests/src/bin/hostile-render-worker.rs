//! A render-worker an attacker controls, for `tests/tests/hostile.rs`: it
//! speaks the ipc protocol correctly (same build) and then sends the broker
//! forged map requests, reporting each answer on stderr as
//! `HOSTILE: <request> -> <answer>`. With `HOSTILE_SILENT` set it instead
//! never greets on a connection's channels. Never installed; only the test
//! starts it, through `gpu-airlock --worker-dir`.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use ipc::{
    Channel, MapRequest, Nothing, Refusal, RenderCall, RenderConnection, RenderReply,
    RenderWorkerRequest, Reply, Role, WorkerReport,
};

type MapAnswer = Reply<Nothing>;
use nix::sys::memfd::{memfd_create, MFdFlags};

/// Memory as render-worker sends it: sealed against resizing.
fn memfd(len: i64) -> OwnedFd {
    let fd = unsealed(len);
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_ADD_SEALS(
            nix::fcntl::SealFlag::F_SEAL_SHRINK | nix::fcntl::SealFlag::F_SEAL_GROW,
        ),
    )
    .unwrap();
    fd
}

/// Memory the worker could truncate under the VM's mapping.
fn unsealed(len: i64) -> OwnedFd {
    let fd = memfd_create(
        "hostile",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .unwrap();
    nix::unistd::ftruncate(&fd, len).unwrap();
    fd
}

fn main() {
    let policies::WorkerChannels { broker, peer: _gpu } =
        policies::bootstrap::<WorkerReport, RenderWorkerRequest>(Role::RenderWorker).unwrap();
    loop {
        match broker.recv() {
            Ok((RenderWorkerRequest::Configure(_), _)) => broker
                .send(&WorkerReport::Ready { num_capsets: 1 }, &[])
                .unwrap(),
            Ok((RenderWorkerRequest::Ping { nonce }, _)) => {
                broker.send(&WorkerReport::Pong { nonce }, &[]).unwrap()
            }
            Ok((RenderWorkerRequest::Connection, fds)) => {
                let slots = RenderConnection::from_vec(fds).unwrap();
                if std::env::var_os("HOSTILE_SILENT").is_some() {
                    // Takes the connection's channels and never greets
                    // on them (nor answers anything).
                    eprintln!("HOSTILE: silent on a connection");
                    std::mem::forget(slots);
                    continue;
                }
                // Each channel greets as the protocol asks; the event
                // channel is kept open, never used.
                let events: Channel<ipc::RenderEvent, Nothing> = Channel::new(slots.events);
                let map: Channel<MapRequest, MapAnswer> = Channel::new(slots.map);
                let link: Channel<RenderReply, RenderCall> = Channel::new(slots.gpu);
                for c in [
                    events.greet(Role::RenderWorker),
                    map.greet(Role::RenderWorker),
                    link.greet(Role::RenderWorker),
                ] {
                    c.unwrap();
                }
                map.check_greeting(Role::Broker).unwrap();
                link.check_greeting(Role::GpuWorker).unwrap();
                std::thread::spawn(move || {
                    let _events = events;
                    attack(map, link)
                });
            }
            Err(_) => return,
        }
    }
}

fn attack(map: Channel<MapRequest, MapAnswer>, link: Channel<RenderReply, RenderCall>) {
    // Wait until the front-end has set the device up (gpu-worker shares
    // guest memory after SET_MEM_TABLE, which follows the back-end request
    // channel), then answer every command with a refusal.
    let _ = link.recv();
    let _ = link.send(&hostile_refusal(), &[]);
    let page = 4096u64;
    let (sock, _) = UnixStream::pair().unwrap();
    let cases: Vec<(&str, MapRequest, OwnedFd)> = vec![
        ("own memory at 0", map_req(1, 0, page), memfd(4096)),
        ("over that mapping", map_req(2, 0, 2 * page), memfd(8192)),
        (
            "wrapping",
            map_req(3, u64::MAX - page + 1, 2 * page),
            memfd(8192),
        ),
        ("past the region", map_req(4, 1 << 50, page), memfd(4096)),
        ("unaligned", map_req(5, 100, page), memfd(4096)),
        ("zero length", map_req(6, 8 * page, 0), memfd(4096)),
        (
            "longer than its memory",
            map_req(7, 8 * page, 4 * page),
            memfd(4096),
        ),
        (
            "a socket, not memory",
            map_req(8, 8 * page, page),
            sock.into(),
        ),
        (
            "the same resource twice",
            map_req(1, 16 * page, page),
            memfd(4096),
        ),
        (
            "memory that can shrink",
            map_req(10, 16 * page, page),
            unsealed(4096),
        ),
    ];
    for (what, request, fd) in cases {
        let answer = map
            .send(&request, &[fd.as_fd()])
            .and_then(|()| map.recv())
            .map(|(a, _)| a);
        eprintln!("HOSTILE: {what} -> {answer:?}");
    }
    let answer = map
        .send(&MapRequest::Unmap { resource_id: 9 }, &[])
        .and_then(|()| map.recv())
        .map(|(a, _)| a);
    eprintln!("HOSTILE: unmap of what is not mapped -> {answer:?}");
    // Mappings without end, one page each: the broker keeps a bounded
    // number (each is a memory slot of the VM).
    let mut accepted = 0;
    let mut refusal = String::new();
    for i in 0..300u64 {
        let request = map_req(100 + i as u32, (64 + i) * page, page);
        match map
            .send(&request, &[memfd(4096).as_fd()])
            .and_then(|()| map.recv())
        {
            Ok((Reply::Done, _)) => accepted += 1,
            Ok((Reply::Refused(r), _)) => {
                refusal = r.why;
                break;
            }
            Ok((Reply::Value(nothing), _)) => match nothing {},
            Err(e) => {
                refusal = e.to_string();
                break;
            }
        }
    }
    eprintln!("HOSTILE: mappings accepted {accepted}, then: {refusal}");
    // A flood of refusable requests, then one more after the broker's log
    // window has passed.
    for i in 0..200u32 {
        let _ = map
            .send(
                &MapRequest::Unmap {
                    resource_id: 1000 + i,
                },
                &[],
            )
            .and_then(|()| map.recv());
    }
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let _ = map
        .send(&MapRequest::Unmap { resource_id: 5000 }, &[])
        .and_then(|()| map.recv());
    eprintln!("HOSTILE: done");
    while let Ok((_, _)) = link.recv() {
        let _ = link.send(&hostile_refusal(), &[]);
    }
}

fn map_req(resource_id: u32, shm_offset: u64, size: u64) -> MapRequest {
    MapRequest::Map {
        resource_id,
        shm_offset,
        size,
        writable: true,
        fd_offset: 0,
    }
}

/// What the hostile worker answers every command: a refusal with a code
/// the guest must never see (gpu-worker turns it into ERR_UNSPEC).
fn hostile_refusal() -> RenderReply {
    RenderReply {
        reply: Reply::Refused(Refusal::new(0, "hostile")),
        fence_signalled: None,
    }
}
