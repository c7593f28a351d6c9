//! The fuzz targets' bodies: each takes arbitrary bytes, runs the code
//! that reads what a guest or a hostile worker wrote, and panics only
//! where an invariant breaks (a panic is what AFL++ counts as a crash).
//! `src/bin/` wraps each in `afl::fuzz!`; `tests/corpus.rs` replays the
//! seed corpus (`corpus/<target>/`) through them under plain `cargo test`.
//!
//! - [`chain`]: one descriptor chain of any shape, over guest memory the
//!   input fills, through gpu-worker's validation and decoding.
//! - [`ipc_frame`]: one frame of any bytes decoded as each message a
//!   process receives from a peer it does not trust.
//! - [`cross_domain`]: render-worker's cross-domain framing check.
//! - [`device`]: a sequence of virtio-gpu commands against one device
//!   model: every command answered with a known response, the memory
//!   accounting never above its cap, resource ids as the answers said.

use gpu_worker::device::GpuDevice;
use gpu_worker::display::DisplayLink;
use gpu_worker::link::Link;
use ipc::ScanoutSize;
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::QueueOwnedT;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use wire::Queue;
use wire::*;

const MEM_SIZE: usize = 0x40_000;
const QUEUE_SIZE: u16 = 16;
/// Where the queue's own rings live (MockSplitQueue puts them at 0).
const DATA: u64 = 0x10_000;
const RESP: u64 = 0x30_000;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;
/// The device model's memory cap: small, so inputs reach it.
const MAX_BYTES: u64 = 1 << 20;

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("guest memory")
}

fn new_device() -> GpuDevice {
    let device = GpuDevice::new(
        vec![
            ScanoutSize {
                width: 64,
                height: 32,
            },
            ScanoutSize {
                width: 32,
                height: 16,
            },
        ],
        MAX_BYTES,
        DisplayLink::none(),
        Link::none("render-worker"),
    );
    device.set_acked_features(u64::MAX);
    device
}

/// Puts `descs` in a queue's table, makes descriptor 0 the one available
/// head, and runs that chain through `device`.
fn run(device: &GpuDevice, mem: &GuestMemoryMmap, descs: &[RawDescriptor], queue: Queue) -> u32 {
    let vq = MockSplitQueue::new(mem, QUEUE_SIZE);
    for (i, d) in descs.iter().enumerate() {
        vq.desc_table().store(i as u16, *d).expect("descriptor");
    }
    vq.avail().ring().ref_at(0).expect("ring").store(0u16);
    vq.avail().idx().store(1u16);
    let mut q: virtio_queue::Queue = vq.create_queue().expect("queue");
    let Some(chain) = q.iter(mem).expect("iter").next() else {
        return 0;
    };
    device.process_chain(mem, chain, queue)
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
    fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | u16::from(self.u8()) << 8
    }
    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | u32::from(self.u16()) << 16
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One chain: up to 8 descriptors of any address (inside or outside
/// memory), length, flags and next index; the rest of the input is the
/// guest memory they point at. The answer never claims more bytes than
/// the chain's writable descriptors hold.
pub fn chain(data: &[u8]) {
    let mut input = Input(data);
    let count = usize::from(input.u8() % 8) + 1;
    let queue = if input.u8() & 1 == 0 {
        Queue::Control
    } else {
        Queue::Cursor
    };
    let mut descs = Vec::with_capacity(count);
    let mut writable: u64 = 0;
    for _ in 0..count {
        // Mostly inside the data area, sometimes anywhere.
        let raw = input.u32();
        let addr = if raw & 0x8000_0000 != 0 {
            u64::from(raw) << 4
        } else {
            DATA + u64::from(raw % 0x2_0000)
        };
        let len = u32::from(input.u16());
        let flags = u16::from(input.u8()) & (F_NEXT | F_WRITE | F_INDIRECT);
        let next = u16::from(input.u8() % (QUEUE_SIZE as u8 + 2));
        if flags & F_WRITE != 0 {
            writable += u64::from(len);
        }
        descs.push(RawDescriptor::from(SplitDescriptor::new(
            addr, len, flags, next,
        )));
    }
    let mem = memory();
    let fill = input.bytes(0x2_0000);
    mem.write_slice(fill, GuestAddress(DATA)).expect("fill");
    let used = run(&new_device(), &mem, &descs, queue);
    // Indirect tables may hold more writable space than the top level.
    let indirect = descs.iter().any(|d| {
        let d: SplitDescriptor = (*d).into();
        d.flags() & F_INDIRECT != 0
    });
    assert!(
        indirect || u64::from(used) <= writable,
        "answered {used} bytes into {writable} writable"
    );
}

/// Each message a process takes from a peer that may be hostile, decoded
/// from the same bytes: the broker's from both workers (and the display
/// and map channels), gpu-worker's from the broker, the display and
/// render-worker, render-worker's from gpu-worker and the broker.
pub fn ipc_frame(data: &[u8]) {
    let Some((&which, frame)) = data.split_first() else {
        return;
    };
    match which % 9 {
        0 => drop(ipc::decode_frame::<ipc::WorkerReport>(frame)),
        1 => drop(ipc::decode_frame::<ipc::RenderEvent>(frame)),
        2 => drop(ipc::decode_frame::<ipc::MapRequest>(frame)),
        3 => drop(ipc::decode_frame::<ipc::DisplayRequest>(frame)),
        4 => drop(ipc::decode_frame::<ipc::Reply<ipc::DisplayValue>>(frame)),
        5 => drop(ipc::decode_frame::<ipc::RenderReply>(frame)),
        6 => drop(ipc::decode_frame::<ipc::RenderCall>(frame)),
        7 => drop(ipc::decode_frame::<ipc::Reply<ipc::Nothing>>(frame)),
        _ => {
            if let Ok(ipc::GpuWorkerRequest::Configure(config)) =
                ipc::decode_frame::<ipc::GpuWorkerRequest>(frame)
            {
                let _ = config.validate();
            }
        }
    }
}

/// render-worker's cross-domain framing check: whatever it accepts, a
/// walk by each header's size ends exactly at the end of the stream,
/// advancing at least a header each time (so rutabaga's walk ends too).
pub fn cross_domain(data: &[u8]) {
    use gpu_airlock_render_worker::framing::check_cross_domain_framing;
    use wire::cross_domain::HEADER_SIZE as CROSS_DOMAIN_HEADER;
    let Ok(walk) = check_cross_domain_framing(data) else {
        return;
    };
    let mut at = 0;
    let mut commands = 0;
    while at < data.len() {
        let size = usize::from(u16::from_le_bytes([data[at + 2], data[at + 3]]));
        assert!(
            size >= CROSS_DOMAIN_HEADER,
            "accepted a {size}-byte command"
        );
        at += size;
        commands += 1;
    }
    assert_eq!(at, data.len(), "accepted a stream that overruns");
    assert!(walk.requirements <= commands);
}

/// The commands the device model is driven with (2D, cursor, context and
/// blob commands; the last answer an error with no render-worker).
const COMMANDS: [u32; 25] = [
    CMD_GET_DISPLAY_INFO,
    CMD_GET_EDID,
    CMD_RESOURCE_CREATE_2D,
    CMD_RESOURCE_UNREF,
    CMD_SET_SCANOUT,
    CMD_RESOURCE_FLUSH,
    CMD_TRANSFER_TO_HOST_2D,
    CMD_RESOURCE_ATTACH_BACKING,
    CMD_RESOURCE_DETACH_BACKING,
    CMD_RESOURCE_ASSIGN_UUID,
    CMD_SET_SCANOUT_BLOB,
    CMD_CTX_CREATE,
    CMD_RESOURCE_UNMAP_BLOB,
    CMD_GET_CAPSET_INFO,
    CMD_GET_CAPSET,
    CMD_RESOURCE_CREATE_BLOB,
    CMD_CTX_DESTROY,
    CMD_CTX_ATTACH_RESOURCE,
    CMD_CTX_DETACH_RESOURCE,
    CMD_SUBMIT_3D,
    CMD_RESOURCE_CREATE_3D,
    CMD_TRANSFER_FROM_HOST_3D,
    CMD_RESOURCE_MAP_BLOB,
    CMD_UPDATE_CURSOR,
    CMD_MOVE_CURSOR,
];

const KNOWN_RESPONSES: [u32; 13] = [
    RESP_OK_NODATA,
    RESP_OK_DISPLAY_INFO,
    RESP_OK_EDID,
    RESP_OK_CAPSET_INFO,
    RESP_OK_CAPSET,
    RESP_OK_RESOURCE_UUID,
    RESP_OK_MAP_INFO,
    RESP_ERR_UNSPEC,
    RESP_ERR_OUT_OF_MEMORY,
    RESP_ERR_INVALID_SCANOUT_ID,
    RESP_ERR_INVALID_RESOURCE_ID,
    RESP_ERR_INVALID_CONTEXT_ID,
    RESP_ERR_INVALID_PARAMETER,
];

/// A sequence of commands on one device: each a command type (from
/// [`COMMANDS`]), header flags, up to 16 body words (small values, so ids
/// and sizes meet), and backing entries that point into guest memory.
pub fn device(data: &[u8]) {
    let mut input = Input(data);
    let device = new_device();
    let mem = memory();
    let mut commands = 0;
    while !input.is_empty() && commands < 64 {
        commands += 1;
        let type_ = COMMANDS[usize::from(input.u8()) % COMMANDS.len()];
        let flags = u32::from(input.u8() & 0x3);
        let words = usize::from(input.u8() % 17);
        let mut request = Vec::with_capacity(24 + words * 4);
        request.extend_from_slice(&type_.to_le_bytes());
        request.extend_from_slice(&flags.to_le_bytes());
        request.extend_from_slice(&u64::from(input.u8()).to_le_bytes()); // fence
        request.extend_from_slice(&u32::from(input.u8() % 4).to_le_bytes()); // ctx
        request.extend_from_slice(&[input.u8() % 4, 0, 0, 0]); // ring_idx
        for _ in 0..words {
            // Mostly small: ids 0..8, sizes and offsets that fit.
            let w = match input.u8() {
                b @ 0..=199 => u32::from(b % 70),
                200..=239 => u32::from(input.u16()),
                _ => input.u32(),
            };
            request.extend_from_slice(&w.to_le_bytes());
        }
        mem.write_slice(&request, GuestAddress(DATA))
            .expect("request");
        mem.write_slice(&[0u8; 64], GuestAddress(RESP))
            .expect("clear");
        let created = (type_ == CMD_RESOURCE_CREATE_2D && words >= 1)
            .then(|| u32::from_le_bytes(request[24..28].try_into().unwrap()));
        let unref = (type_ == CMD_RESOURCE_UNREF && words >= 1)
            .then(|| u32::from_le_bytes(request[24..28].try_into().unwrap()));
        let queue = if matches!(type_, CMD_UPDATE_CURSOR | CMD_MOVE_CURSOR) {
            Queue::Cursor
        } else {
            Queue::Control
        };
        let descs = [
            RawDescriptor::from(SplitDescriptor::new(DATA, request.len() as u32, F_NEXT, 1)),
            RawDescriptor::from(SplitDescriptor::new(RESP, 1024, F_WRITE, 0)),
        ];
        let used = run(&device, &mem, &descs, queue);
        if queue == Queue::Cursor {
            // The cursor queue answers with a bare header.
            assert!(used == 0 || used >= 24, "cursor answer of {used} bytes");
            continue;
        }
        assert!(used >= 24, "{type_:#x} unanswered ({used} bytes)");
        let mut head = [0u8; 4];
        mem.read_slice(&mut head, GuestAddress(RESP))
            .expect("answer");
        let answer = u32::from_le_bytes(head);
        assert!(
            KNOWN_RESPONSES.contains(&answer),
            "{type_:#x} answered {answer:#x}"
        );
        let resources = device.resources();
        assert!(
            resources.used_bytes() <= MAX_BYTES,
            "{} bytes accounted, cap {MAX_BYTES}",
            resources.used_bytes()
        );
        if let (Some(id), RESP_OK_NODATA) = (created, answer) {
            assert!(resources.exists(id), "resource {id} created but unknown");
        }
        if let (Some(id), RESP_OK_NODATA) = (unref, answer) {
            assert!(
                !resources.exists(id),
                "resource {id} unref'd but still there"
            );
        }
    }
}
