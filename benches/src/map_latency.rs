//! How long a guest waits for RESOURCE_MAP_BLOB: gpu-worker decodes it,
//! render-worker exports the blob, the broker checks the offset and sends
//! VHOST_USER_BACKEND_SHMEM_MAP, the front-end (the harness, which really
//! mmaps the descriptor) acks, and the answer walks back. Three processes
//! and a front-end, so the figures are printed beside the two floors of
//! that path, measured in the same run in interleaved rounds: an eventfd
//! ping-pong between two processes, and one ipc message round trip.
//!
//! Also RESOURCE_UNMAP_BLOB (the same path with SHMEM_UNMAP).
//!
//! Usage: cargo build --release --workspace && target/release/map-latency [MAPS]  (default 2000)

use gpu_airlock_benches::{
    ipc_round_trips, print_against_floors, start_ipc_peer, summarize, timed, EventfdPeer,
};
use harness::blob_wire::*;
use harness::*;
use nix::sys::wait::waitpid;

/// Blobs mapped side by side in one round.
const BLOBS: u32 = 32;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("MAPS is a number"))
        .unwrap_or(2000)
        .max(BLOBS as usize * 2);
    // The floors' peers are forked before any thread exists.
    let peer = EventfdPeer::start();
    let (ch, ipc_child) = start_ipc_peer();

    let socket = UnservedSocket::new();
    let backend = Backend::start(&["--wayland-socket", &socket.arg()]);
    let mut dev = Device::connect(&backend.socket);
    let (blob_id, size, _) = image_requirements(&mut dev, 256, 256);
    for i in 0..BLOBS {
        let request = host_blob(100 + i, blob_id, size);
        assert_eq!(dev.answer(&request), RESP_OK_NODATA);
    }
    let unmap = |id: u32| words(hdr(CMD_RESOURCE_UNMAP_BLOB, 0, None), &[id, 0]);

    let rounds = n / BLOBS as usize;
    let (mut floor, mut ipc, mut maps, mut unmaps) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..=rounds {
        // Round 0 warms every path up and is not counted.
        let (mut m, mut u) = (Vec::new(), Vec::new());
        for i in 0..BLOBS {
            let request = map_blob(100 + i, u64::from(i) * size);
            timed(&mut dev, &request, RESP_OK_MAP_INFO, &mut m);
        }
        for i in 0..BLOBS {
            timed(&mut dev, &unmap(100 + i), RESP_OK_NODATA, &mut u);
        }
        let (mut f, mut c) = (Vec::new(), Vec::new());
        peer.round_trips(BLOBS as usize, &mut f);
        ipc_round_trips(&ch, None, BLOBS as usize, &mut c);
        if round > 0 {
            maps.extend(m);
            unmaps.extend(u);
            floor.extend(f);
            ipc.extend(c);
        }
    }
    drop(ch);
    waitpid(ipc_child, None).unwrap();
    let region = dev.shmem.as_ref().unwrap();
    assert_eq!(
        region.events().len(),
        2 * BLOBS as usize * (rounds + 1),
        "every map and unmap reached the front-end"
    );

    let (floor, ipc, maps, unmaps) = (
        summarize(floor),
        summarize(ipc),
        summarize(maps),
        summarize(unmaps),
    );
    println!(
        "blob map latency, {} maps and unmaps of {size}-byte blobs ({rounds} rounds of {BLOBS}, interleaved with the floors)",
        rounds * BLOBS as usize
    );
    print_against_floors(
        &floor,
        &ipc,
        &[
            ("RESOURCE_MAP_BLOB -> SHMEM_MAP -> response", &maps),
            ("RESOURCE_UNMAP_BLOB -> SHMEM_UNMAP -> response", &unmaps),
        ],
    );
}
