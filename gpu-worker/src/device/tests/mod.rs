//! The device model driven chain by chain, through a mock split queue.

use super::*;
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::QueueOwnedT;
use vm_memory::{Bytes, GuestAddress};
use wire::*;

const VRING_DESC_F_NEXT: u16 = 1;
const VRING_DESC_F_WRITE: u16 = 2;
const REQ: u64 = 0x10_000;
const RESP: u64 = 0x20_000;

fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100_000)]).unwrap()
}

fn device() -> GpuDevice {
    let device = bare_device();
    device.set_acked_features(u64::MAX);
    device
}

fn bare_device() -> GpuDevice {
    GpuDevice::new(
        vec![
            ScanoutSize {
                width: 1280,
                height: 800,
            },
            ScanoutSize {
                width: 640,
                height: 480,
            },
        ],
        1 << 28,
        DisplayLink::none(),
        Link::none("render-worker"),
    )
}

fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
}

/// Runs `descs` (a chain starting at descriptor 0) through the device.
fn run(mem: &GuestMemoryMmap, descs: &[RawDescriptor]) -> u32 {
    let vq = MockSplitQueue::new(mem, 16);
    for (i, d) in descs.iter().enumerate() {
        vq.desc_table().store(i as u16, *d).unwrap();
    }
    vq.avail().ring().ref_at(0).unwrap().store(0u16);
    vq.avail().idx().store(1u16);
    let mut q: virtio_queue::Queue = vq.create_queue().unwrap();
    let chain = q.iter(mem).unwrap().next().unwrap();
    device().process_chain(mem, chain, Queue::Control)
}

fn request(mem: &GuestMemoryMmap, type_: u32, flags: u32, extra: &[u8]) -> u32 {
    let hdr = CtrlHdr {
        type_: Le32::from(type_),
        flags: Le32::from(flags),
        fence_id: 42u64.into(),
        ctx_id: Le32::from(3),
        ring_idx: 1,
        padding: [0; 3],
    };
    mem.write_obj(hdr, GuestAddress(REQ)).unwrap();
    mem.write_slice(extra, GuestAddress(REQ + 24)).unwrap();
    (24 + extra.len()) as u32
}

fn response_hdr(mem: &GuestMemoryMmap) -> CtrlHdr {
    mem.read_obj(GuestAddress(RESP)).unwrap()
}

#[test]
fn display_info_reports_each_scanout() {
    let m = mem();
    let len = request(&m, CMD_GET_DISPLAY_INFO, 0, &[]);
    let n = run(
        &m,
        &[
            desc(REQ, len, VRING_DESC_F_NEXT, 1),
            desc(RESP, 1024, VRING_DESC_F_WRITE, 0),
        ],
    );
    assert_eq!(n as usize, std::mem::size_of::<RespDisplayInfo>());
    let r: RespDisplayInfo = m.read_obj(GuestAddress(RESP)).unwrap();
    assert_eq!(r.hdr.type_.to_native(), RESP_OK_DISPLAY_INFO);
    assert_eq!(r.pmodes[0].r.width.to_native(), 1280);
    assert_eq!(r.pmodes[1].r.height.to_native(), 480);
    assert_eq!(r.pmodes[1].enabled.to_native(), 1);
    assert_eq!(r.pmodes[2].enabled.to_native(), 0);
}

#[test]
fn fence_is_echoed() {
    let m = mem();
    let len = request(
        &m,
        CMD_GET_DISPLAY_INFO,
        FLAG_FENCE | FLAG_INFO_RING_IDX,
        &[],
    );
    run(
        &m,
        &[
            desc(REQ, len, VRING_DESC_F_NEXT, 1),
            desc(RESP, 1024, VRING_DESC_F_WRITE, 0),
        ],
    );
    let h = response_hdr(&m);
    assert_eq!(h.flags.to_native(), FLAG_FENCE | FLAG_INFO_RING_IDX);
    assert_eq!(h.fence_id.to_native(), 42);
    assert_eq!(h.ctx_id.to_native(), 3);
    assert_eq!(h.ring_idx, 1);
}

#[test]
fn unfenced_request_gets_no_fence() {
    let m = mem();
    let len = request(&m, CMD_GET_DISPLAY_INFO, 0, &[]);
    run(
        &m,
        &[
            desc(REQ, len, VRING_DESC_F_NEXT, 1),
            desc(RESP, 1024, VRING_DESC_F_WRITE, 0),
        ],
    );
    let h = response_hdr(&m);
    assert_eq!(h.flags.to_native(), 0);
    assert_eq!(h.fence_id.to_native(), 0);
}

#[test]
fn edid_for_each_scanout_and_refused_past_them() {
    let m = mem();
    let len = request(&m, CMD_GET_EDID, 0, &[1, 0, 0, 0, 0, 0, 0, 0]);
    let chain = [
        desc(REQ, len, VRING_DESC_F_NEXT, 1),
        desc(RESP, 2048, VRING_DESC_F_WRITE, 0),
    ];
    run(&m, &chain);
    let r: RespEdid = m.read_obj(GuestAddress(RESP)).unwrap();
    assert_eq!(r.hdr.type_.to_native(), RESP_OK_EDID);
    assert_eq!(r.size.to_native(), 128);
    assert_eq!(r.edid[..128], edid::build(640, 480, 1));

    request(&m, CMD_GET_EDID, 0, &[2, 0, 0, 0, 0, 0, 0, 0]);
    run(&m, &chain);
    assert_eq!(
        response_hdr(&m).type_.to_native(),
        RESP_ERR_INVALID_PARAMETER
    );
}

#[test]
fn a_command_of_a_feature_not_acked_gets_err_unspec() {
    let m = mem();
    let chain = |len| {
        [
            desc(REQ, len, VRING_DESC_F_NEXT, 1),
            desc(RESP, 2048, VRING_DESC_F_WRITE, 0),
        ]
    };
    let run_on = |dev: &GpuDevice, descs: &[RawDescriptor]| {
        let vq = MockSplitQueue::new(&m, 16);
        for (i, d) in descs.iter().enumerate() {
            vq.desc_table().store(i as u16, *d).unwrap();
        }
        vq.avail().ring().ref_at(0).unwrap().store(0u16);
        vq.avail().idx().store(1u16);
        let mut q: virtio_queue::Queue = vq.create_queue().unwrap();
        let c = q.iter(&m).unwrap().next().unwrap();
        dev.process_chain(&m, c, Queue::Control)
    };
    let dev = bare_device();
    // EDID of scanout 0, without F_EDID acked, then with it.
    let len = request(&m, CMD_GET_EDID, 0, &[0; 8]);
    run_on(&dev, &chain(len));
    assert_eq!(response_hdr(&m).type_.to_native(), RESP_ERR_UNSPEC);
    dev.set_acked_features(1 << F_EDID);
    run_on(&dev, &chain(len));
    assert_eq!(response_hdr(&m).type_.to_native(), RESP_OK_EDID);
    // A blob without RESOURCE_BLOB, a context or a 3D resource without
    // VIRGL.
    for cmd in [
        CMD_RESOURCE_CREATE_BLOB,
        CMD_CTX_CREATE,
        CMD_SUBMIT_3D,
        CMD_RESOURCE_CREATE_3D,
        CMD_TRANSFER_TO_HOST_3D,
        CMD_TRANSFER_FROM_HOST_3D,
    ] {
        let len = request(&m, cmd, 0, &[0; 96]);
        run_on(&dev, &chain(len));
        assert_eq!(
            response_hdr(&m).type_.to_native(),
            RESP_ERR_UNSPEC,
            "{cmd:#x}"
        );
    }
}

#[test]
fn unknown_commands_get_err_unspec() {
    let m = mem();
    for cmd in [0xdead, 0x1ff, 0] {
        let len = request(&m, cmd, 0, &[]);
        let n = run(
            &m,
            &[
                desc(REQ, len, VRING_DESC_F_NEXT, 1),
                desc(RESP, 64, VRING_DESC_F_WRITE, 0),
            ],
        );
        assert_eq!(n, 24);
        assert_eq!(response_hdr(&m).type_.to_native(), RESP_ERR_UNSPEC);
    }
}

#[test]
fn response_too_large_for_buffer_degrades_to_error_header() {
    let m = mem();
    let len = request(&m, CMD_GET_DISPLAY_INFO, 0, &[]);
    let n = run(
        &m,
        &[
            desc(REQ, len, VRING_DESC_F_NEXT, 1),
            desc(RESP, 30, VRING_DESC_F_WRITE, 0),
        ],
    );
    assert_eq!(n, 24);
    assert_eq!(response_hdr(&m).type_.to_native(), RESP_ERR_UNSPEC);
    // No room even for a header: nothing written.
    let n = run(
        &m,
        &[
            desc(REQ, len, VRING_DESC_F_NEXT, 1),
            desc(RESP, 8, VRING_DESC_F_WRITE, 0),
        ],
    );
    assert_eq!(n, 0);
}

#[test]
fn short_request_gets_error() {
    let m = mem();
    let n = run(
        &m,
        &[
            desc(REQ, 8, VRING_DESC_F_NEXT, 1),
            desc(RESP, 64, VRING_DESC_F_WRITE, 0),
        ],
    );
    assert_eq!(n, 24);
    assert_eq!(response_hdr(&m).type_.to_native(), RESP_ERR_UNSPEC);
}

#[test]
fn looping_chain_is_refused() {
    let m = mem();
    let len = request(&m, CMD_GET_DISPLAY_INFO, 0, &[]);
    let n = run(&m, &[desc(REQ, len, VRING_DESC_F_NEXT, 0)]);
    assert_eq!(n, 0);
}

#[test]
fn chain_past_the_table_is_refused_with_error_response() {
    let m = mem();
    let len = request(&m, CMD_GET_DISPLAY_INFO, 0, &[]);
    // Writable descriptor first would be out of order; here the writable
    // one is sound but its NEXT points past the 16-entry table.
    let n = run(
        &m,
        &[
            desc(REQ, len, VRING_DESC_F_NEXT, 1),
            desc(RESP, 64, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 999),
        ],
    );
    assert_eq!(n, 24);
    assert_eq!(response_hdr(&m).type_.to_native(), RESP_ERR_UNSPEC);
}

#[test]
fn a_looping_chain_gets_no_answer_written_around_its_loop() {
    let m = mem();
    request(&m, CMD_GET_DISPLAY_INFO, 0, &[]);
    // One 21-byte writable descriptor that points at itself: the
    // iterator yields it until its time-to-live runs out.
    let n = run(
        &m,
        &[desc(RESP, 21, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 0)],
    );
    assert_eq!(n, 0, "no answer claimed past the 21 bytes there are");
}

#[test]
fn zero_length_and_out_of_memory_descriptors_are_refused() {
    let m = mem();
    let len = request(&m, CMD_GET_DISPLAY_INFO, 0, &[]);
    let n = run(
        &m,
        &[
            desc(REQ, 0, VRING_DESC_F_NEXT, 1),
            desc(RESP, 64, VRING_DESC_F_WRITE, 0),
        ],
    );
    assert_eq!(n, 24);
    assert_eq!(response_hdr(&m).type_.to_native(), RESP_ERR_UNSPEC);

    let n = run(
        &m,
        &[
            desc(0xffff_ffff_0000, len, VRING_DESC_F_NEXT, 1),
            desc(RESP, 64, VRING_DESC_F_WRITE, 0),
        ],
    );
    assert_eq!(n, 0);

    let n = run(
        &m,
        &[
            desc(REQ, len, VRING_DESC_F_NEXT, 1),
            desc(u64::MAX - 8, 64, VRING_DESC_F_WRITE, 0),
        ],
    );
    assert_eq!(n, 0);
}

#[test]
fn readable_after_writable_is_refused() {
    let m = mem();
    let len = request(&m, CMD_GET_DISPLAY_INFO, 0, &[]);
    let n = run(
        &m,
        &[
            desc(RESP, 64, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1),
            desc(REQ, len, 0, 0),
        ],
    );
    // The writable part is sound, so the refusal is answered there.
    assert_eq!(n, 24);
    assert_eq!(response_hdr(&m).type_.to_native(), RESP_ERR_UNSPEC);
}

#[test]
fn validate_accepts_well_formed_chain() {
    let m = mem();
    let vq = MockSplitQueue::new(&m, 16);
    vq.desc_table()
        .store(0, desc(REQ, 24, VRING_DESC_F_NEXT, 1))
        .unwrap();
    vq.desc_table()
        .store(1, desc(RESP, 24, VRING_DESC_F_WRITE, 0))
        .unwrap();
    vq.avail().ring().ref_at(0).unwrap().store(0u16);
    vq.avail().idx().store(1u16);
    let mut q: virtio_queue::Queue = vq.create_queue().unwrap();
    let chain = q.iter(&m).unwrap().next().unwrap();
    assert_eq!(crate::chain::validate(chain), Ok(()));
}

mod render;
