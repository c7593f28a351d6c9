//! Contexts and blob resources through the real three processes, with the
//! harness as a front-end that implements SHMEM_MAP/UNMAP for real: a
//! cross-domain context (no compositor: channel type 0) asks rutabaga for
//! an image's memory requirements through its query ring, a host blob is
//! created from them and mapped into the host-visible region, and the
//! bytes written on the host side are the bytes the guest reads there.

use std::fs;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use harness::blob_wire::*;
use harness::shmem::ShmemEvent;
use harness::*;
use vm_memory::{Bytes, GuestAddress};

/// The descriptor of render-worker's memfd named `name`, opened through
/// /proc (the test runs as the same user; the host side of the blob).
fn render_worker_memfd(backend: &Backend, name: &str) -> fs::File {
    let pid = backend.worker_pids().1;
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let path = entry.unwrap().path();
        let target = fs::read_link(&path).map(|t| t.display().to_string());
        if target.is_ok_and(|t| t.contains(name)) {
            return fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
        }
    }
    panic!("render-worker holds no memfd named {name}");
}

#[test]
fn a_host_blob_is_mapped_into_the_guest_region_and_out_again() {
    let socket = UnservedSocket::new();
    let backend = Backend::start(&["--wayland-socket", &socket.arg()]);
    let mut dev = Device::connect(&backend.socket);
    let region = dev.shmem.clone().expect("SHMEM negotiated");

    // The capset the device offers: cross-domain.
    let (_, resp) = dev.control(&words(hdr(CMD_GET_CAPSET_INFO, 0, None), &[0, 0]), 64);
    let word = |r: &[u8], o: usize| u32::from_le_bytes(r[o..o + 4].try_into().unwrap());
    assert_eq!(parse_hdr(&resp).0, RESP_OK_CAPSET_INFO);
    assert_eq!(word(&resp, 24), CAPSET_CROSS_DOMAIN);
    let capset_size = word(&resp, 32);
    let (len, resp) = dev.control(
        &words(hdr(CMD_GET_CAPSET, 0, None), &[CAPSET_CROSS_DOMAIN, 0]),
        1024,
    );
    assert_eq!(parse_hdr(&resp).0, RESP_OK_CAPSET);
    assert_eq!(len, 24 + capset_size, "header and the capset");
    assert_eq!(word(&resp, 24), 1, "cross-domain capabilities version 1");

    let (blob_id, size, map_info) = image_requirements(&mut dev, 64, 64);
    assert!(size >= 64 * 64 * 4 && size.is_multiple_of(4096), "{size}");
    assert_eq!(map_info & 0xf, 1, "VIRTIO_GPU_MAP_CACHE_CACHED");

    // A host blob from those requirements, mapped at 64 KiB.
    assert_eq!(
        code(&mut dev, &host_blob(11, blob_id, size)),
        RESP_OK_NODATA
    );
    let offset = 0x1_0000;
    let (len, resp) = dev.control(&map_blob(11, offset), 64);
    assert_eq!((len, parse_hdr(&resp).0), (32, RESP_OK_MAP_INFO));
    assert_eq!(word(&resp, 24), 1, "map_info: cached");
    assert_eq!(
        region.events(),
        [ShmemEvent::Map {
            offset,
            len: size,
            writable: true
        }]
    );
    assert!(region.backing_name(offset).contains("rutabaga_gralloc"));

    // Host side → guest side, and back.
    let host = render_worker_memfd(&backend, "rutabaga_gralloc");
    let pattern: Vec<u8> = (0..size).map(|i| (i * 13 % 251) as u8).collect();
    host.write_all_at(&pattern, 0).unwrap();
    assert_eq!(region.read(offset, size as usize).unwrap(), pattern);
    assert!(region.write(offset + 100, b"written by the guest"));
    let mut back = [0u8; 20];
    host.read_exact_at(&mut back, 100).unwrap();
    assert_eq!(&back, b"written by the guest");

    // UUIDs: one per resource, stable, version 4.
    let uuid = |dev: &mut Device, id: u32| {
        let (_, r) = dev.control(&words(hdr(CMD_RESOURCE_ASSIGN_UUID, 0, None), &[id, 0]), 64);
        assert_eq!(parse_hdr(&r).0, RESP_OK_RESOURCE_UUID);
        r[24..40].to_vec()
    };
    let u = uuid(&mut dev, 11);
    assert_eq!(u, uuid(&mut dev, 11));
    assert_eq!(u[6] >> 4, 4);
    assert_ne!(u, uuid(&mut dev, 10));

    // Unmap: the front-end really unmaps.
    assert_eq!(
        code(
            &mut dev,
            &words(hdr(CMD_RESOURCE_UNMAP_BLOB, 0, None), &[11, 0])
        ),
        RESP_OK_NODATA
    );
    assert_eq!(
        region.events().last(),
        Some(&ShmemEvent::Unmap { offset, len: size })
    );
    assert_eq!(region.backing_name(offset), "", "back to the reservation");
    assert!(region.read(offset, 1).is_none());

    // A mapped blob is unmapped before its unref. (Requirements stay
    // usable: a second blob from them is a second allocation.)
    assert_eq!(
        code(
            &mut dev,
            &create_blob(
                CTX,
                12,
                BLOB_MEM_HOST3D,
                BLOB_FLAG_MAPPABLE,
                u64::from(blob_id),
                size,
                &[]
            )
        ),
        RESP_OK_NODATA
    );
    assert_eq!(code(&mut dev, &map_blob(12, 0)), RESP_OK_MAP_INFO);
    assert_eq!(
        code(&mut dev, &cmd(CMD_RESOURCE_UNREF, &[12, 0])),
        RESP_OK_NODATA
    );
    assert_eq!(
        region.events()[2..],
        [
            ShmemEvent::Map {
                offset: 0,
                len: size,
                writable: true
            },
            ShmemEvent::Unmap {
                offset: 0,
                len: size
            }
        ]
    );
    assert_eq!(
        code(&mut dev, &cmd(CMD_RESOURCE_UNREF, &[11, 0])),
        RESP_OK_NODATA
    );
    assert_eq!(
        code(&mut dev, &cmd(CMD_RESOURCE_UNREF, &[10, 0])),
        RESP_OK_NODATA
    );
    assert_eq!(
        code(&mut dev, &hdr(CMD_CTX_DESTROY, CTX, None)),
        RESP_OK_NODATA
    );
    assert!(backend
        .log
        .wait_for(&["mapped resource 11"], Duration::from_secs(5))
        .is_some());
}

#[test]
fn bad_blob_and_context_requests_get_the_spec_codes() {
    let socket = UnservedSocket::new();
    let backend = Backend::start(&["--wayland-socket", &socket.arg()]);
    let mut dev = Device::connect(&backend.socket);
    let region = dev.shmem.clone().unwrap();
    // 64x64: four pages, so a map one page in overlaps.
    let (blob_id, size, _) = image_requirements(&mut dev, 64, 64);
    let host_blob = |id: u32| {
        create_blob(
            CTX,
            id,
            BLOB_MEM_HOST3D,
            BLOB_FLAG_MAPPABLE,
            u64::from(blob_id),
            size,
            &[],
        )
    };
    assert_eq!(code(&mut dev, &host_blob(20)), RESP_OK_NODATA);
    assert_eq!(code(&mut dev, &map_blob(20, 0x20_000)), RESP_OK_MAP_INFO);

    let cases: Vec<(&str, Vec<u8>, u32)> = vec![
        (
            "context id 0",
            ctx_create(0, CAPSET_CROSS_DOMAIN, ""),
            RESP_ERR_INVALID_CONTEXT_ID,
        ),
        (
            "context already exists",
            ctx_create(CTX, CAPSET_CROSS_DOMAIN, ""),
            RESP_ERR_INVALID_CONTEXT_ID,
        ),
        (
            "unknown context",
            hdr(CMD_CTX_DESTROY, 99, None),
            RESP_ERR_INVALID_CONTEXT_ID,
        ),
        (
            "submit to context 0",
            submit(0, &[0; 8], None),
            RESP_ERR_INVALID_CONTEXT_ID,
        ),
        (
            "submit to unknown context",
            submit(99, &[0; 8], None),
            RESP_ERR_INVALID_CONTEXT_ID,
        ),
        (
            "capset index past the end",
            words(hdr(CMD_GET_CAPSET_INFO, 0, None), &[1, 0]),
            RESP_ERR_INVALID_PARAMETER,
        ),
        (
            // A POLL whose header says 0 bytes: rutabaga would walk it
            // forever.
            "cross-domain command of size 0",
            submit(CTX, &[3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], None),
            RESP_ERR_INVALID_PARAMETER,
        ),
        (
            "SUBMIT_3D larger than its descriptor",
            words(hdr(CMD_SUBMIT_3D, CTX, None), &[4096, 0]),
            RESP_ERR_INVALID_PARAMETER,
        ),
        (
            "blob of 0 bytes",
            create_blob(0, 21, BLOB_MEM_GUEST, 0, 0, 0, &[(RING_AT, 4096)]),
            RESP_ERR_INVALID_PARAMETER,
        ),
        (
            "guest blob outside guest memory",
            create_blob(
                CTX,
                21,
                BLOB_MEM_GUEST,
                0,
                0,
                4096,
                &[(GUEST_MEM_SIZE as u64, 4096)],
            ),
            RESP_ERR_INVALID_PARAMETER,
        ),
        (
            "blob id in use",
            create_blob(0, 20, BLOB_MEM_GUEST, 0, 0, 4096, &[(RING_AT, 4096)]),
            RESP_ERR_INVALID_RESOURCE_ID,
        ),
        (
            "map over a mapping",
            map_blob(20, 0x20_000),
            RESP_ERR_INVALID_PARAMETER,
        ),
        (
            "map of an unknown resource",
            map_blob(77, 0x80_000),
            RESP_ERR_INVALID_RESOURCE_ID,
        ),
        (
            "map of a guest blob (not mappable)",
            map_blob(10, 0x80_000),
            RESP_ERR_INVALID_PARAMETER,
        ),
        (
            "unmap of a blob not mapped",
            words(hdr(CMD_RESOURCE_UNMAP_BLOB, 0, None), &[10, 0]),
            RESP_ERR_INVALID_PARAMETER,
        ),
        (
            "attach of an unknown resource to a context",
            words(hdr(CMD_CTX_ATTACH_RESOURCE, CTX, None), &[77, 0]),
            RESP_ERR_INVALID_RESOURCE_ID,
        ),
        (
            "2D transfer to a host blob",
            cmd(CMD_TRANSFER_TO_HOST_2D, &[0, 0, 8, 8, 0, 0, 20, 0]),
            RESP_ERR_INVALID_PARAMETER,
        ),
    ];
    for (what, request, want) in cases {
        assert_eq!(code(&mut dev, &request), want, "{what}");
    }
    // Linux attaches every buffer a client opens to its context, dumb 2D
    // buffers too (seen from a real 6.1 guest): answered OK, and detached.
    assert_eq!(
        code(&mut dev, &cmd(CMD_RESOURCE_CREATE_2D, &[22, 1, 16, 16])),
        RESP_OK_NODATA
    );
    for attach in [CMD_CTX_ATTACH_RESOURCE, CMD_CTX_DETACH_RESOURCE] {
        assert_eq!(
            code(&mut dev, &words(hdr(attach, CTX, None), &[22, 0])),
            RESP_OK_NODATA
        );
    }

    // Offsets the broker refuses before the front-end hears of them: each
    // needs a fresh blob (one mapping per blob). Overlapping, unaligned,
    // wrapping, past the region.
    for (i, offset) in [0x20_000 + 4096, 0x80_001, u64::MAX - 4095, region.size()]
        .into_iter()
        .enumerate()
    {
        // New requirements for a new blob from the same context.
        let (blob_id, size, _) = more_image_requirements(&mut dev, 64, 64);
        let id = 30 + i as u32;
        assert_eq!(
            code(
                &mut dev,
                &create_blob(
                    CTX,
                    id,
                    BLOB_MEM_HOST3D,
                    BLOB_FLAG_MAPPABLE,
                    u64::from(blob_id),
                    size,
                    &[]
                )
            ),
            RESP_OK_NODATA
        );
        assert_eq!(
            code(&mut dev, &map_blob(id, offset)),
            RESP_ERR_INVALID_PARAMETER,
            "offset {offset:#x}"
        );
    }
    // The front-end saw only the one good map.
    assert_eq!(region.events().len(), 1, "{:?}", region.events());
    for refusal in ["overlaps", "not a multiple", "wraps", "past the"] {
        assert!(
            backend
                .log
                .wait_for(&[refusal], Duration::from_secs(5))
                .is_some(),
            "the broker logged why ({refusal})"
        );
    }
    // Still serving.
    assert_eq!(
        code(
            &mut dev,
            &words(hdr(CMD_RESOURCE_UNMAP_BLOB, 0, None), &[20, 0])
        ),
        RESP_OK_NODATA
    );
}

/// QEMU 10 negotiates the back-end request channel but not SHMEM: a map
/// request gets an error response and a log line saying why, and the rest
/// of the device (contexts, blobs, 2D) works on.
#[test]
fn without_shmem_a_map_is_refused_and_nothing_else_breaks() {
    let socket = UnservedSocket::new();
    let backend = Backend::start(&["--wayland-socket", &socket.arg()]);
    let mut dev = Device::connect_without_shmem(&backend.socket);
    assert!(dev.shmem.is_none());
    let (blob_id, size, _) = image_requirements(&mut dev, 64, 64);
    assert_eq!(
        code(&mut dev, &host_blob(11, blob_id, size)),
        RESP_OK_NODATA
    );
    assert_eq!(code(&mut dev, &map_blob(11, 0)), RESP_ERR_INVALID_PARAMETER);
    assert!(backend
        .log
        .wait_for(&["did not negotiate SHMEM"], Duration::from_secs(5))
        .is_some());
    assert_eq!(
        code(&mut dev, &cmd(CMD_RESOURCE_UNREF, &[11, 0])),
        RESP_OK_NODATA
    );
    assert_eq!(
        code(&mut dev, &cmd(CMD_RESOURCE_CREATE_2D, &[12, 1, 16, 16])),
        RESP_OK_NODATA
    );
}

/// A fence on a cross-domain channel ring signals when the channel has
/// something; with no channel (type 0) it never does. Its command's used
/// entry waits for it — it is not returned early — while the device goes on
/// answering everything else.
#[test]
fn a_fence_that_has_not_signalled_holds_its_command_back_and_only_it() {
    let socket = UnservedSocket::new();
    let backend = Backend::start(&["--wayland-socket", &socket.arg()]);
    let mut dev = Device::connect(&backend.socket);
    // A Wayland channel to a compositor that never speaks: a channel-ring
    // fence signals only when it does.
    let (_channel, opened) = harness::wayland::WaylandChannel::open(&mut dev);
    assert_eq!(opened, RESP_OK_NODATA);
    // GET_IMAGE_REQUIREMENTS fenced on ring 1 (the channel ring), posted on
    // descriptors 4 and 5 so the harness's usual descriptor 0 stays free.
    let request = submit(
        CTX,
        &cross_domain(2, &[16, 16, XRGB8888, 0], &[]),
        Some((9, Some(1))),
    );
    let (req, resp) = (DATA_BASE + 0x30_000, DATA_BASE + 0x31_000);
    dev.mem.write_slice(&request, GuestAddress(req)).unwrap();
    let descs = [
        (req, request.len() as u32, VRING_DESC_F_NEXT, 5),
        (resp, 64, VRING_DESC_F_WRITE, 0),
    ];
    let mem = dev.mem.clone();
    dev.controlq.push_raw(&mem, 4, &descs, 4);
    assert_eq!(
        dev.controlq.wait_used(&mem, Duration::from_millis(500)),
        None,
        "the fenced command is held until its fence signals"
    );
    // The guest makes the held head available again: ignored (the head is
    // the device's until used), so the held list cannot grow by it.
    dev.controlq.push_raw(&mem, 4, &descs, 4);
    assert!(backend
        .log
        .wait_for(
            &["descriptor 4 is held for a fence"],
            Duration::from_secs(5)
        )
        .is_some());
    // Everything else is answered meanwhile.
    let (len, resp) = dev.control(&ctrl_hdr(CMD_GET_DISPLAY_INFO, 0, 0), 1024);
    assert_eq!((len, parse_hdr(&resp).0), (408, RESP_OK_DISPLAY_INFO));
    assert_eq!(
        code(&mut dev, &cmd(CMD_RESOURCE_CREATE_2D, &[40, 1, 8, 8])),
        RESP_OK_NODATA
    );
}

/// The cross-domain capset is offered only with a compositor socket
/// configured, and VIRGL with it (Linux sends no context command without
/// it); without one there is neither, and guest-memory blobs still work
/// (rutabaga's 2D component).
#[test]
fn the_cross_domain_capset_needs_a_compositor_socket() {
    use vhost::VhostBackend;
    let socket = UnservedSocket::new();
    let with = Backend::start(&["--wayland-socket", &socket.arg()]);
    let mut dev = Device::connect(&with.socket);
    assert_eq!(dev.num_capsets(), 1);
    let features = dev.frontend.get_features().unwrap();
    assert_eq!(features, device_features(true));
    assert_ne!(features & F_VIRGL, 0, "VIRGL offered with a context type");

    let without = Backend::start(&[]);
    let mut dev = Device::connect(&without.socket);
    assert_eq!(dev.num_capsets(), 0);
    assert_eq!(dev.frontend.get_features().unwrap() & F_VIRGL, 0);
    assert_eq!(
        code(&mut dev, &words(hdr(CMD_GET_CAPSET_INFO, 0, None), &[0, 0])),
        RESP_ERR_INVALID_PARAMETER
    );
    assert_eq!(
        code(&mut dev, &ctx_create(CTX, CAPSET_CROSS_DOMAIN, "")),
        RESP_ERR_UNSPEC,
        "no cross-domain context without a compositor"
    );
    assert_eq!(
        code(
            &mut dev,
            &create_blob(0, 10, BLOB_MEM_GUEST, 0, 0, 4096, &[(RING_AT, 4096)])
        ),
        RESP_OK_NODATA
    );
    // A socket path that is not a socket is refused at start.
    let mut bad = Backend::try_start(&["--wayland-socket", "/etc/hostname"]);
    assert!(bad
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| !s.success()));
    // The log reader may still be reading the exited broker's last line.
    assert!(bad
        .log
        .wait_for(&["not a socket"], Duration::from_secs(5))
        .is_some());
}

/// QEMU 11 sends a new memory table inside each map and unmap, the blob's
/// own memory in it (the harness does the same): once the blob is
/// unmapped and released, render-worker keeps no map of that memory (an
/// old table stays only while a guest-memory blob points into it).
#[test]
fn an_unmapped_blob_leaves_no_mapping_behind_in_render_worker() {
    let socket = UnservedSocket::new();
    let backend = Backend::start(&["--wayland-socket", &socket.arg()]);
    let mut dev = Device::connect(&backend.socket);
    let render = backend.worker_pids().1;
    let mapped = |dev: &mut Device| {
        // A request answered means every earlier notice was read.
        let _ = more_image_requirements(dev, 16, 16);
        maps_memfd(render, "rutabaga_gralloc")
    };
    let (blob_id, size, _) = image_requirements(&mut dev, 64, 64);
    assert_eq!(
        code(&mut dev, &host_blob(11, blob_id, size)),
        RESP_OK_NODATA
    );
    assert!(
        !mapped(&mut dev),
        "a blob not yet mapped is not guest memory"
    );
    assert_eq!(code(&mut dev, &map_blob(11, 0)), RESP_OK_MAP_INFO);
    assert!(
        mapped(&mut dev),
        "the memory table with the mapping reached render-worker"
    );
    let unmap = words(hdr(CMD_RESOURCE_UNMAP_BLOB, 0, None), &[11, 0]);
    assert_eq!(code(&mut dev, &unmap), RESP_OK_NODATA);
    assert_eq!(
        code(&mut dev, &cmd(CMD_RESOURCE_UNREF, &[11, 0])),
        RESP_OK_NODATA
    );
    assert!(
        !mapped(&mut dev),
        "render-worker still maps the released blob's memory"
    );
}

/// A context created with `context_init` 0 (Linux makes one for every
/// client) runs rutabaga's default component, which is cross-domain here:
/// its streams are checked like a capset-5 context's, so a `cmd_size` of 0
/// is refused rather than spinning render-worker.
#[test]
fn a_context_of_context_init_0_gets_the_cross_domain_framing_check() {
    let socket = UnservedSocket::new();
    let backend = Backend::start(&["--wayland-socket", &socket.arg()]);
    let mut dev = Device::connect(&backend.socket);
    assert_eq!(code(&mut dev, &ctx_create(7, 0, "default")), RESP_OK_NODATA);
    let poll_of_size_0 = [3u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(
        code(&mut dev, &submit(7, &poll_of_size_0, None)),
        RESP_ERR_INVALID_PARAMETER
    );
    // render-worker still answers.
    let _ = image_requirements(&mut dev, 16, 16);
}

/// A fence on the channel ring of a cross-domain context that opened no
/// channel could never signal (rutabaga keeps or drops it): the command is
/// answered with an error at once, not held for ever.
#[test]
fn a_fence_that_could_never_signal_is_refused_not_held() {
    let socket = UnservedSocket::new();
    let backend = Backend::start(&["--wayland-socket", &socket.arg()]);
    let mut dev = Device::connect(&backend.socket);
    // INIT with no channel (channel type 0).
    image_requirements(&mut dev, 16, 16);
    let fenced = submit(
        CTX,
        &cross_domain(2, &[16, 16, XRGB8888, 0], &[]),
        Some((9, Some(1))),
    );
    let (_, resp) = dev
        .control_within(&fenced, 64, Duration::from_secs(5))
        .expect("the fenced command is answered, not held");
    assert_eq!(parse_hdr(&resp).0, RESP_ERR_INVALID_PARAMETER);
    // A context that never sent INIT at all.
    assert_eq!(
        code(&mut dev, &ctx_create(2, CAPSET_CROSS_DOMAIN, "")),
        RESP_OK_NODATA
    );
    let (_, resp) = dev
        .control_within(
            &submit(2, &[], Some((10, Some(1)))),
            64,
            Duration::from_secs(5),
        )
        .expect("answered");
    assert_eq!(parse_hdr(&resp).0, RESP_ERR_INVALID_PARAMETER);
    assert!(backend
        .log
        .wait_for(&["it would never signal"], Duration::from_secs(5))
        .is_some());
}

/// `--max-contexts` caps the contexts a guest has at once (each costs
/// render-worker a rutabaga context, and a cross-domain one a thread and a
/// compositor connection): past it CTX_CREATE gets ERR_OUT_OF_MEMORY, and a
/// destroyed context makes room again.
#[test]
fn contexts_past_max_contexts_get_out_of_memory_until_one_is_destroyed() {
    let socket = UnservedSocket::new();
    let backend = Backend::start(&["--wayland-socket", &socket.arg(), "--max-contexts", "2"]);
    let mut dev = Device::connect(&backend.socket);
    assert_eq!(code(&mut dev, &ctx_create(11, 0, "a")), RESP_OK_NODATA);
    assert_eq!(code(&mut dev, &ctx_create(12, 0, "b")), RESP_OK_NODATA);
    assert_eq!(
        code(&mut dev, &ctx_create(13, 0, "c")),
        RESP_ERR_OUT_OF_MEMORY,
        "a third context past --max-contexts 2"
    );
    // The same again: a refusal takes nothing.
    assert_eq!(
        code(&mut dev, &ctx_create(13, 0, "c")),
        RESP_ERR_OUT_OF_MEMORY
    );
    assert_eq!(
        code(&mut dev, &hdr(CMD_CTX_DESTROY, 11, None)),
        RESP_OK_NODATA
    );
    assert_eq!(code(&mut dev, &ctx_create(13, 0, "c")), RESP_OK_NODATA);
    assert!(
        backend
            .log
            .wait_for(&["--max-contexts"], Duration::from_secs(5))
            .is_some(),
        "the refusal names the option"
    );
    // After a reset the guest starts with none.
    dev.reset();
    assert_eq!(code(&mut dev, &ctx_create(21, 0, "a")), RESP_OK_NODATA);
    assert_eq!(code(&mut dev, &ctx_create(22, 0, "b")), RESP_OK_NODATA);
}

/// A guest-memory blob that names image requirements on a cross-domain
/// context makes rutabaga allocate the image in host memory all the same:
/// it counts against --max-resource-memory like a host blob.
#[test]
fn a_guest_blob_naming_image_requirements_counts_against_the_memory_budget() {
    let socket = UnservedSocket::new();
    let backend = Backend::start(&[
        "--wayland-socket",
        &socket.arg(),
        "--max-resource-memory",
        "1",
    ]);
    let mut dev = Device::connect(&backend.socket);
    // 1024x1024 XRGB: 4 MiB, past the 1 MiB budget.
    let (blob_id, size, _) = image_requirements(&mut dev, 1024, 1024);
    assert!(size > 1 << 20);
    let guest_blob = create_blob(
        CTX,
        30,
        BLOB_MEM_GUEST,
        BLOB_FLAG_MAPPABLE,
        u64::from(blob_id),
        size,
        &[(RING_AT, size as u32)],
    );
    assert_eq!(code(&mut dev, &guest_blob), RESP_ERR_OUT_OF_MEMORY);
    // A small one fits, and its memory comes back with it.
    let (small_id, small, _) = more_image_requirements(&mut dev, 128, 128);
    let small_blob = |id: u32| {
        create_blob(
            CTX,
            id,
            BLOB_MEM_GUEST,
            BLOB_FLAG_MAPPABLE,
            u64::from(small_id),
            small,
            &[(RING_AT, small as u32)],
        )
    };
    let fits = ((1u64 << 20) / small) as u32;
    for i in 0..fits {
        assert_eq!(
            code(&mut dev, &small_blob(40 + i)),
            RESP_OK_NODATA,
            "small blob {i}"
        );
    }
    assert_eq!(
        code(&mut dev, &small_blob(40 + fits)),
        RESP_ERR_OUT_OF_MEMORY
    );
    assert_eq!(
        code(&mut dev, &cmd(CMD_RESOURCE_UNREF, &[40, 0])),
        RESP_OK_NODATA
    );
    assert_eq!(code(&mut dev, &small_blob(40 + fits)), RESP_OK_NODATA);
}

/// rutabaga keeps every image-requirements answer for its context's life:
/// a context may ask 4096 times, and the next is ERR_OUT_OF_MEMORY, so a
/// guest cannot grow render-worker's memory without bound; a new context
/// starts afresh.
#[test]
fn image_requirements_past_the_per_context_cap_are_refused() {
    let socket = UnservedSocket::new();
    let backend = Backend::start(&["--wayland-socket", &socket.arg()]);
    let mut dev = Device::connect(&backend.socket);
    // One asked here.
    image_requirements(&mut dev, 16, 16);
    let many = |n: usize| -> Vec<u8> {
        let one = cross_domain(2, &[16, 16, XRGB8888, 0], &[]);
        one.repeat(n)
    };
    assert_eq!(
        code(&mut dev, &submit(CTX, &many(2048), None)),
        RESP_OK_NODATA
    );
    assert_eq!(
        code(&mut dev, &submit(CTX, &many(2047), None)),
        RESP_OK_NODATA
    );
    assert_eq!(
        code(&mut dev, &submit(CTX, &many(1), None)),
        RESP_ERR_OUT_OF_MEMORY,
        "the 4097th"
    );
    assert!(
        backend
            .log
            .wait_for(&["image requirements"], Duration::from_secs(5))
            .is_some(),
        "the refusal says why"
    );
    // A destroyed context takes its count with it (and render-worker,
    // freeing thousands of answers on its connection thread, lives on).
    assert_eq!(
        code(&mut dev, &hdr(CMD_CTX_DESTROY, CTX, None)),
        RESP_OK_NODATA
    );
    assert_eq!(
        code(&mut dev, &ctx_create(CTX, CAPSET_CROSS_DOMAIN, "again")),
        RESP_OK_NODATA
    );
    // A new query ring: rutabaga hands a guest blob's pages to the first
    // context it is attached to.
    assert_eq!(
        code(
            &mut dev,
            &create_blob(0, 11, BLOB_MEM_GUEST, 0, 0, 4096, &[(RING_AT, 4096)])
        ),
        RESP_OK_NODATA
    );
    assert_eq!(
        code(
            &mut dev,
            &words(hdr(CMD_CTX_ATTACH_RESOURCE, CTX, None), &[11, 0])
        ),
        RESP_OK_NODATA
    );
    let init = cross_domain(1, &[11, 0, 0], &[0; 16]);
    assert_eq!(code(&mut dev, &submit(CTX, &init, None)), RESP_OK_NODATA);
    more_image_requirements(&mut dev, 16, 16);
    assert_eq!(
        code(&mut dev, &submit(CTX, &many(2048), None)),
        RESP_OK_NODATA
    );
    let (r, _) = backend.worker_pids();
    assert!(process_alive(r), "render-worker is alive");
}

/// gpu-worker's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in status")
}

/// A resource's UUID goes with it: a resource re-created with a freed id
/// gets a new UUID, and a guest cycling RESOURCE_CREATE_2D,
/// RESOURCE_ASSIGN_UUID and RESOURCE_UNREF leaves gpu-worker's memory
/// where it was (before the resource table, each cycle left its UUID
/// behind: 8.8 MB after 20,000).
#[test]
fn a_recreated_resource_gets_a_fresh_uuid_and_the_cycle_leaves_nothing() {
    let backend = Backend::start(&[]);
    let mut dev = Device::connect(&backend.socket);
    let cycle = |dev: &mut Device| {
        assert_eq!(
            code(dev, &cmd(CMD_RESOURCE_CREATE_2D, &[5, 1, 4, 4])),
            RESP_OK_NODATA
        );
        let (_, r) = dev.control(&words(hdr(CMD_RESOURCE_ASSIGN_UUID, 0, None), &[5, 0]), 64);
        assert_eq!(parse_hdr(&r).0, RESP_OK_RESOURCE_UUID);
        assert_eq!(code(dev, &cmd(CMD_RESOURCE_UNREF, &[5, 0])), RESP_OK_NODATA);
        r[24..40].to_vec()
    };
    let first = cycle(&mut dev);
    let second = cycle(&mut dev);
    assert_ne!(
        first, second,
        "resource 5 re-created gets a UUID of its own"
    );
    let gpu = backend.worker_pids().0;
    // Let the allocator reach its working set first.
    for _ in 0..2_000 {
        cycle(&mut dev);
    }
    let before = rss_kib(gpu);
    for _ in 0..20_000 {
        cycle(&mut dev);
    }
    let after = rss_kib(gpu);
    assert!(
        after <= before + 1024,
        "20,000 cycles grew gpu-worker from {before} KiB to {after} KiB"
    );
    eprintln!("gpu-worker: {before} KiB before 20,000 cycles, {after} KiB after");
}
