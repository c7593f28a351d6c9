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

/// A device whose render-worker is a thread here, answering each call
/// with `answer` and reporting every call it got.
fn device_with_render(
    answer: impl Fn(&ipc::RenderCall) -> ipc::RenderReply + Send + 'static,
) -> (GpuDevice, std::sync::mpsc::Receiver<ipc::RenderCall>) {
    let (ours, theirs) = ipc::socketpair().unwrap();
    let peer: ipc::Channel<ipc::RenderReply, ipc::RenderCall> = ipc::Channel::new(theirs);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        while let Ok((call, _)) = peer.recv() {
            let reply = answer(&call);
            tx.send(call).unwrap();
            if peer.send(&reply, &[]).is_err() {
                return;
            }
        }
    });
    let device = GpuDevice::new(
        vec![ScanoutSize {
            width: 640,
            height: 480,
        }],
        1 << 28,
        DisplayLink::none(),
        Link::new("render-worker", ipc::Channel::new(ours)),
    );
    device.set_acked_features(u64::MAX);
    (device, rx)
}

/// Runs `descs` through `device`, returning the completion.
fn run_on(device: &GpuDevice, mem: &GuestMemoryMmap, descs: &[RawDescriptor]) -> Completion {
    let vq = MockSplitQueue::new(mem, 16);
    for (i, d) in descs.iter().enumerate() {
        vq.desc_table().store(i as u16, *d).unwrap();
    }
    vq.avail().ring().ref_at(0).unwrap().store(0u16);
    vq.avail().idx().store(1u16);
    let mut q: virtio_queue::Queue = vq.create_queue().unwrap();
    let chain = q.iter(mem).unwrap().next().unwrap();
    device.process_chain_fenced(mem, chain, Queue::Control)
}

#[test]
fn a_fenced_context_command_is_one_call_with_its_fence() {
    let m = mem();
    let (dev, calls) = device_with_render(|_| ipc::RenderReply {
        reply: ipc::Reply::Done,
        fence_signalled: Some(false),
    });
    // CTX_CREATE on context 3, fenced on ring 1 (the request helper's
    // header): one call to render-worker, carrying the fence.
    let len = request(
        &m,
        CMD_CTX_CREATE,
        FLAG_FENCE | FLAG_INFO_RING_IDX,
        &[0; 72],
    );
    let chain = [
        desc(REQ, len, VRING_DESC_F_NEXT, 1),
        desc(RESP, 64, VRING_DESC_F_WRITE, 0),
    ];
    let done = run_on(&dev, &m, &chain);
    assert_eq!(response_hdr(&m).type_.to_native(), RESP_OK_NODATA);
    assert_eq!(
        done.fence,
        Some(ContextFence {
            ctx_id: 3,
            ring: Some(1),
            fence_id: 42,
            signalled: false
        })
    );
    let call = calls.recv().unwrap();
    assert!(matches!(
        call.request,
        ipc::RenderRequest::CtxCreate { ctx_id: 3, .. }
    ));
    assert_eq!(
        call.fence,
        Some(ipc::Fence {
            ctx_id: 3,
            ring: Some(1),
            fence_id: 42
        })
    );
    assert!(calls.try_recv().is_err(), "no second round trip");

    // A ring index past 63 is refused before anything reaches rutabaga.
    let mut hdr: CtrlHdr = m.read_obj(GuestAddress(REQ)).unwrap();
    hdr.ring_idx = 64;
    m.write_obj(hdr, GuestAddress(REQ)).unwrap();
    let done = run_on(&dev, &m, &chain);
    assert_eq!(
        response_hdr(&m).type_.to_native(),
        RESP_ERR_INVALID_PARAMETER
    );
    assert_eq!(done.fence, None);
    assert!(calls.try_recv().is_err(), "the command did not run");
}

#[test]
fn a_render_worker_that_forgets_the_fence_state_is_out_of_turn() {
    let m = mem();
    // Done, but no word of the fence it was given.
    let (dev, calls) = device_with_render(|_| ipc::RenderReply {
        reply: ipc::Reply::Done,
        fence_signalled: None,
    });
    let len = request(&m, CMD_CTX_CREATE, FLAG_FENCE, &[0; 72]);
    let chain = [
        desc(REQ, len, VRING_DESC_F_NEXT, 1),
        desc(RESP, 64, VRING_DESC_F_WRITE, 0),
    ];
    let done = run_on(&dev, &m, &chain);
    assert_eq!(response_hdr(&m).type_.to_native(), RESP_ERR_UNSPEC);
    assert_eq!(done.fence, None);
    assert!(calls.recv().unwrap().fence.is_some());
    // The link is dropped: the next command finds no render-worker.
    run_on(&dev, &m, &chain);
    assert_eq!(response_hdr(&m).type_.to_native(), RESP_ERR_UNSPEC);
    assert!(calls.try_recv().is_err());
}

fn words(w: &[u32]) -> Vec<u8> {
    w.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Runs one unfenced control request (header as `request` writes it) on
/// `dev`; returns the response type.
fn answer(dev: &GpuDevice, m: &GuestMemoryMmap, cmd: u32, body: &[u8]) -> u32 {
    let len = request(m, cmd, 0, body);
    run_on(
        dev,
        m,
        &[
            desc(REQ, len, VRING_DESC_F_NEXT, 1),
            desc(RESP, 64, VRING_DESC_F_WRITE, 0),
        ],
    );
    response_hdr(m).type_.to_native()
}

#[test]
fn a_3d_resource_is_checked_here_and_served_by_render_worker() {
    let m = mem();
    // render-worker refuses resource 66's creation, does all else.
    let (dev, calls) = device_with_render(|call| ipc::RenderReply {
        reply: match &call.request {
            ipc::RenderRequest::Create3d {
                resource_id: 66, ..
            } => ipc::Reply::Refused(Refusal::new(RESP_ERR_UNSPEC, "no")),
            _ => ipc::Reply::Done,
        },
        fence_signalled: None,
    });
    // 64x32 B8G8R8X8 2D texture (target 2), one level.
    let create = |id| words(&[id, 2, 2, 2, 64, 32, 1, 1, 0, 0, 0, 0]);
    assert_eq!(
        answer(&dev, &m, CMD_RESOURCE_CREATE_3D, &create(5)),
        RESP_OK_NODATA
    );
    match calls.recv().unwrap().request {
        ipc::RenderRequest::Create3d {
            resource_id: 5,
            create,
        } => assert_eq!((create.width, create.height, create.format), (64, 32, 2)),
        other => panic!("{other:?}"),
    }
    assert_eq!(dev.resources().used_bytes(), 64 * 32 * 4);
    // The id is taken; a refused creation leaves no charge and no id.
    assert_eq!(
        answer(&dev, &m, CMD_RESOURCE_CREATE_3D, &create(5)),
        RESP_ERR_INVALID_RESOURCE_ID
    );
    assert_eq!(
        answer(&dev, &m, CMD_RESOURCE_CREATE_3D, &create(66)),
        RESP_ERR_UNSPEC
    );
    assert!(matches!(
        calls.recv().unwrap().request,
        ipc::RenderRequest::Create3d {
            resource_id: 66,
            ..
        }
    ));
    assert!(!dev.resources().exists(66));
    assert_eq!(dev.resources().used_bytes(), 64 * 32 * 4);
    // Sizes that overflow, and zero sizes, never reach render-worker.
    let huge = words(&[7, 2, 99, 2, u32::MAX, u32::MAX, u32::MAX, 1, 0, 0, 0, 0]);
    assert_eq!(
        answer(&dev, &m, CMD_RESOURCE_CREATE_3D, &huge),
        RESP_ERR_OUT_OF_MEMORY
    );
    // The deepest last level a guest can name (the fuzzer's find: the
    // refusal's own message overflowed).
    let deep = words(&[7, 2, 2, 2, 64, 64, 1, 1, u32::MAX, 0, 0, 0]);
    assert_eq!(
        answer(&dev, &m, CMD_RESOURCE_CREATE_3D, &deep),
        RESP_ERR_INVALID_PARAMETER
    );
    let empty = words(&[7, 2, 2, 2, 64, 0, 1, 1, 0, 0, 0, 0]);
    assert_eq!(
        answer(&dev, &m, CMD_RESOURCE_CREATE_3D, &empty),
        RESP_ERR_INVALID_PARAMETER
    );

    // A transfer before backing, then backing outside guest memory: refused
    // here.
    let transfer = |x, w| words(&[x, 0, 0, w, 32, 1, 0, 0, 5, 0, 256, 0]);
    assert_eq!(
        answer(&dev, &m, CMD_TRANSFER_FROM_HOST_3D, &transfer(0, 64)),
        RESP_ERR_UNSPEC
    );
    let outside = words(&[5, 1, 0x200_000, 0, 8192, 0]);
    assert_eq!(
        answer(&dev, &m, CMD_RESOURCE_ATTACH_BACKING, &outside),
        RESP_ERR_INVALID_PARAMETER
    );
    assert!(calls.try_recv().is_err());
    let backing = words(&[5, 1, 0x40_000, 0, 8192, 0]);
    assert_eq!(
        answer(&dev, &m, CMD_RESOURCE_ATTACH_BACKING, &backing),
        RESP_OK_NODATA
    );
    assert_eq!(
        calls.recv().unwrap().request,
        ipc::RenderRequest::AttachBacking {
            resource_id: 5,
            entries: vec![(0x40_000, 8192)]
        }
    );
    // A box past the resource's width, or on a level it lacks, is refused
    // here; one inside goes on with the header's context.
    assert_eq!(
        answer(&dev, &m, CMD_TRANSFER_FROM_HOST_3D, &transfer(1, 64)),
        RESP_ERR_INVALID_PARAMETER
    );
    let level_1 = words(&[0, 0, 0, 1, 1, 1, 0, 0, 5, 1, 256, 0]);
    assert_eq!(
        answer(&dev, &m, CMD_TRANSFER_TO_HOST_3D, &level_1),
        RESP_ERR_INVALID_PARAMETER
    );
    assert!(calls.try_recv().is_err());
    assert_eq!(
        answer(&dev, &m, CMD_TRANSFER_FROM_HOST_3D, &transfer(0, 64)),
        RESP_OK_NODATA
    );
    assert_eq!(
        calls.recv().unwrap().request,
        ipc::RenderRequest::Transfer3d(ipc::Transfer3d {
            ctx_id: 3,
            resource_id: 5,
            to_host: false,
            boxed: [0, 0, 0, 64, 32, 1],
            level: 0,
            stride: 256,
            layer_stride: 0,
            offset: 0,
        })
    );
    // Not a 2D resource: 2D transfers and scanouts say what it is.
    assert_eq!(
        answer(
            &dev,
            &m,
            CMD_TRANSFER_TO_HOST_2D,
            &words(&[0, 0, 8, 8, 0, 0, 5, 0])
        ),
        RESP_ERR_INVALID_RESOURCE_ID
    );
    // Unref: render-worker lets go, the charge is returned.
    assert_eq!(
        answer(&dev, &m, CMD_RESOURCE_UNREF, &words(&[5, 0])),
        RESP_OK_NODATA
    );
    assert_eq!(
        calls.recv().unwrap().request,
        ipc::RenderRequest::Unref { resource_id: 5 }
    );
    assert_eq!(dev.resources().used_bytes(), 0);
}

#[test]
fn a_submit_past_one_frame_goes_through_the_shared_buffer() {
    // A guest memory big enough for a 100 KiB stream.
    let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100_000)]).unwrap();
    let (dev, calls) = device_with_render(|_| ipc::RenderReply {
        reply: ipc::Reply::Done,
        fence_signalled: None,
    });
    // SUBMIT_3D announcing `claimed` bytes, `len` of which follow.
    let submit_claiming = |claimed: usize, len: usize| {
        let mut body = words(&[claimed as u32, 0]);
        body.extend((0..len).map(|i| i as u8));
        let n = request(&m, CMD_SUBMIT_3D, 0, &body);
        run_on(
            &dev,
            &m,
            &[
                desc(REQ, n, VRING_DESC_F_NEXT, 1),
                desc(RESP, 64, VRING_DESC_F_WRITE, 0),
            ],
        );
        response_hdr(&m).type_.to_native()
    };
    let submit = |len: usize| submit_claiming(len, len);
    // One that fits a frame goes inline.
    assert_eq!(submit(1000), RESP_OK_NODATA);
    assert!(matches!(
        calls.recv().unwrap().request,
        ipc::RenderRequest::Submit { ctx_id: 3, ref commands } if commands.len() == 1000
    ));
    // A longer one: the buffer once, then the stream's length.
    assert_eq!(submit(100 * 1024), RESP_OK_NODATA);
    assert_eq!(
        calls.recv().unwrap().request,
        ipc::RenderRequest::SubmitBuffer
    );
    assert_eq!(
        calls.recv().unwrap().request,
        ipc::RenderRequest::SubmitShared {
            ctx_id: 3,
            len: 100 * 1024
        }
    );
    assert_eq!(submit(70 * 1024), RESP_OK_NODATA);
    assert_eq!(
        calls.recv().unwrap().request,
        ipc::RenderRequest::SubmitShared {
            ctx_id: 3,
            len: 70 * 1024
        }
    );
    // One announcing 2 MiB (past the most, and past what follows): refused
    // before anything is sent.
    assert_eq!(submit_claiming(2 << 20, 64), RESP_ERR_INVALID_PARAMETER);
    assert!(calls.try_recv().is_err());
}
