//! 3D round trips through the jailed device: a fenced SUBMIT_3D of a
//! one-dword virgl stream (gpu-worker decodes it, render-worker hands it
//! to virglrenderer and creates the fence, virglrenderer retires it, the
//! signal walks back as an event), and RESOURCE_MAP_BLOB / UNMAP_BLOB of
//! a venus context's shared memory (render-worker exports the memfd the
//! render server made, the broker sends SHMEM_MAP to the harness, which
//! really mmaps it). Printed beside the floors measured in the same run in
//! interleaved rounds: an eventfd ping-pong between two processes and one
//! ipc message round trip.
//!
//! Needs the 3D build (render-worker with `virgl`) and its libraries: run
//! through `tests/gpu3d/bench`, which builds both in release and runs this
//! in the gpu3d root.
//!
//! Usage: gpu3d-latency [ROUND_TRIPS]  (default 2000)

use gpu_airlock_benches::{
    ipc_round_trips, print_against_floors, start_ipc_peer, summarize, timed, EventfdPeer,
};
use harness::blob_wire::*;
use harness::*;
use nix::sys::wait::waitpid;

/// Blobs mapped side by side in one round.
const BLOBS: u32 = 16;
const CAPSET_VIRGL2: u32 = 2;
const CAPSET_VENUS: u32 = 4;
/// The venus context's shared-memory blobs (blob_id 0), each this big.
const SHM: u64 = 64 * 1024;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("ROUND_TRIPS is a number"))
        .unwrap_or(2000)
        .max(BLOBS as usize * 2);
    // The floors' peers are forked before any thread exists.
    let peer = EventfdPeer::start();
    let (ch, ipc_child) = start_ipc_peer();

    let backend = Backend::start(&["--context-types", "virgl2:venus"]);
    let mut dev = Device::connect(&backend.socket);
    assert_eq!(
        dev.answer(&ctx_create(1, CAPSET_VIRGL2, "bench-virgl")),
        RESP_OK_NODATA
    );
    assert_eq!(
        dev.answer(&ctx_create(2, CAPSET_VENUS, "bench-venus")),
        RESP_OK_NODATA
    );
    for i in 0..BLOBS {
        let request = create_blob(2, 100 + i, BLOB_MEM_HOST3D, BLOB_FLAG_MAPPABLE, 0, SHM, &[]);
        assert_eq!(dev.answer(&request), RESP_OK_NODATA);
    }
    // VIRGL_CCMD_NOP, one dword.
    let nop = 0u32.to_le_bytes();
    let unmap = |id: u32| words(hdr(CMD_RESOURCE_UNMAP_BLOB, 0, None), &[id, 0]);

    let rounds = n / BLOBS as usize;
    let (mut floor, mut ipc, mut submits, mut maps, mut unmaps) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut fence = 0u64;
    for round in 0..=rounds {
        // Round 0 warms every path up and is not counted.
        let (mut s, mut m, mut u) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..BLOBS {
            fence += 1;
            timed(
                &mut dev,
                &submit(1, &nop, Some((fence, None))),
                RESP_OK_NODATA,
                &mut s,
            );
        }
        for i in 0..BLOBS {
            let request = map_blob(100 + i, u64::from(i) * SHM);
            timed(&mut dev, &request, RESP_OK_MAP_INFO, &mut m);
        }
        for i in 0..BLOBS {
            timed(&mut dev, &unmap(100 + i), RESP_OK_NODATA, &mut u);
        }
        let (mut f, mut c) = (Vec::new(), Vec::new());
        peer.round_trips(BLOBS as usize, &mut f);
        ipc_round_trips(&ch, None, BLOBS as usize, &mut c);
        if round > 0 {
            submits.extend(s);
            maps.extend(m);
            unmaps.extend(u);
            floor.extend(f);
            ipc.extend(c);
        }
    }
    drop(ch);
    waitpid(ipc_child, None).unwrap();

    let (floor, ipc, submits, maps, unmaps) = (
        summarize(floor),
        summarize(ipc),
        summarize(submits),
        summarize(maps),
        summarize(unmaps),
    );
    println!(
        "3D latency, {} of each ({rounds} rounds of {BLOBS}, interleaved with the floors)",
        rounds * BLOBS as usize
    );
    print_against_floors(
        &floor,
        &ipc,
        &[
            ("SUBMIT_3D (virgl, one dword), fenced -> response", &submits),
            ("MAP_BLOB (venus shared memory) -> SHMEM_MAP", &maps),
            ("UNMAP_BLOB (venus shared memory) -> SHMEM_UNMAP", &unmaps),
        ],
    );
}
