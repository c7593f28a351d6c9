//! The device model with a render-worker (a thread here, answering as
//! told): context commands, fences, 3D resources, long submits.

use super::*;

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
