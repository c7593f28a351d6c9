//! A render-worker an attacker controls, for `tests/tests/hostile.rs`: it
//! speaks the ipc protocol correctly (same build) and then sends the broker
//! forged map requests, reporting each answer on stderr as
//! `HOSTILE: <request> -> <answer>`. Never installed; only the test starts
//! it, through `gpu-airlock --worker-dir`.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use ipc::{
    BrokerToRender, Channel, GpuToRender, MapAnswer, MapRequest, RenderAnswer, RenderCommand,
    RenderToBroker, RenderToGpu, Role,
};
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
    let (broker_fd, peer_fd) = ipc::worker_fds::take().unwrap();
    let broker: Channel<RenderToBroker, BrokerToRender> = Channel::new(broker_fd);
    let gpu: Channel<RenderToGpu, GpuToRender> = Channel::new(peer_fd);
    broker.handshake(Role::RenderWorker, Role::Broker).unwrap();
    gpu.handshake(Role::RenderWorker, Role::GpuWorker).unwrap();
    if let Ok((GpuToRender::Ping { nonce }, _)) = gpu.recv() {
        gpu.send(&RenderToGpu::Pong { nonce }, &[]).unwrap();
    }
    loop {
        match broker.recv() {
            Ok((BrokerToRender::Configure(_), _)) => broker
                .send(&RenderToBroker::Ready { num_capsets: 1 }, &[])
                .unwrap(),
            Ok((BrokerToRender::Ping { nonce }, _)) => {
                broker.send(&RenderToBroker::Pong { nonce }, &[]).unwrap()
            }
            Ok((BrokerToRender::Connection, mut fds)) => {
                // map, link, events (kept open, never used).
                let events = fds.pop().unwrap();
                let (link, map) = (fds.pop().unwrap(), fds.pop().unwrap());
                std::thread::spawn(move || {
                    let _events = events;
                    attack(Channel::new(map), Channel::new(link))
                });
            }
            Err(_) => return,
        }
    }
}

fn attack(map: Channel<MapRequest, MapAnswer>, link: Channel<RenderAnswer, RenderCommand>) {
    // Wait until the front-end has set the device up (gpu-worker shares
    // guest memory after SET_MEM_TABLE, which follows the back-end request
    // channel), then answer every command with a refusal.
    let _ = link.recv();
    let _ = link.send(
        &RenderAnswer::Refused {
            code: 0,
            why: "hostile".into(),
        },
        &[],
    );
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
            Ok((MapAnswer::Done, _)) => accepted += 1,
            Ok((MapAnswer::Refused(why), _)) => {
                refusal = why;
                break;
            }
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
        let _ = link.send(
            &RenderAnswer::Refused {
                code: 0,
                why: "hostile".into(),
            },
            &[],
        );
    }
}

fn map_req(resource_id: u32, shm_offset: u64, size: u64) -> MapRequest {
    MapRequest::Map {
        resource_id,
        shm_offset,
        size,
        writable: true,
    }
}
