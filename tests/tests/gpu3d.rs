//! 3D through the real three processes, jailed: a virgl context renders
//! (virglrenderer on Mesa's llvmpipe, no GPU) and the guest reads the
//! pixels back with TRANSFER_FROM_HOST_3D; bad 3D input is refused and the
//! device goes on; venus contexts run in virglrenderer's render server
//! (jailed on its own), their memory mapped into the guest, and a real
//! guest runs Vulkan on them (lavapipe on the host).
//!
//! Built only with the tests crate's `gpu3d` feature and run by
//! `tests/gpu3d/check`, inside the gpu3d root (Debian 13 with sid's
//! virglrenderer 1.3, which the 3D build links against), with the three
//! processes from `tests/gpu3d/build`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use harness::blob_wire::*;
use harness::guest::{error_responses, qemu11, Boot, Guest, GuestImage};
use harness::shmem::ShmemEvent;
use harness::*;
use vm_memory::{Bytes, GuestAddress};

/// The VIRGL2 capset: a context of virgl's kind (context_init's capset id).
const CAPSET_VIRGL2: u32 = 2;
/// Where the render target's backing lies in guest memory.
const BACKING_AT: u64 = 0x80_0000;
const SIZE: u32 = 64;
/// `PIPE_TEXTURE_2D`, `VIRGL_FORMAT_B8G8R8A8_UNORM`, `VIRGL_BIND_RENDER_TARGET`.
const TEXTURE_2D: u32 = 2;
const B8G8R8A8: u32 = 1;
const BIND_RENDER_TARGET: u32 = 1 << 1;

/// A virgl command header: command, object type, length in dwords.
fn virgl(cmd: u32, object: u32, len: u32) -> u32 {
    cmd | (object << 8) | (len << 16)
}

/// The virgl stream that clears surface 1 of resource `res` to `rgba`.
fn clear_stream(res: u32, rgba: [f32; 4]) -> Vec<u8> {
    const CREATE_OBJECT: u32 = 1;
    const SET_FRAMEBUFFER_STATE: u32 = 5;
    const CLEAR: u32 = 7;
    const OBJECT_SURFACE: u32 = 8;
    const PIPE_CLEAR_COLOR0: u32 = 1 << 2;
    let mut w = vec![
        // Surface 1 on level 0, layer 0 of the resource.
        virgl(CREATE_OBJECT, OBJECT_SURFACE, 5),
        1,
        res,
        B8G8R8A8,
        0,
        0,
        // One colour buffer, no depth.
        virgl(SET_FRAMEBUFFER_STATE, 0, 3),
        1,
        0,
        1,
        virgl(CLEAR, 0, 8),
        PIPE_CLEAR_COLOR0,
    ];
    w.extend(rgba.map(f32::to_bits));
    w.extend([0, 0, 0]); // depth (a double), stencil
    w.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn create_3d(id: u32) -> Vec<u8> {
    cmd(
        CMD_RESOURCE_CREATE_3D,
        &[
            id,
            TEXTURE_2D,
            B8G8R8A8,
            BIND_RENDER_TARGET,
            SIZE,
            SIZE,
            1,
            1,
            0,
            0,
            0,
            0,
        ],
    )
}

/// TRANSFER_FROM_HOST_3D of the whole of `id` into its backing, fenced.
fn read_back(id: u32, fence: u64) -> Vec<u8> {
    let mut v = hdr(CMD_TRANSFER_FROM_HOST_3D, CTX, Some((fence, None)));
    for w in [0, 0, 0, SIZE, SIZE, 1] {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v.extend_from_slice(&0u64.to_le_bytes());
    for w in [id, 0, SIZE * 4, 0] {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v
}

/// The jail is whole: `--seccomp kill` unless tests/gpu3d/check was asked
/// for another mode (`log`, to find a missing rule).
fn seccomp() -> String {
    std::env::var("GPU_AIRLOCK_SECCOMP").unwrap_or_else(|_| "kill".into())
}

/// Every pixel of the `len`-byte backing is `bgra`.
fn assert_pixels(dev: &Device, len: u32, bgra: [u8; 4], what: &str) {
    let mut pixels = vec![0u8; len as usize];
    dev.mem
        .read_slice(&mut pixels, GuestAddress(BACKING_AT))
        .unwrap();
    let wrong: Vec<(usize, &[u8])> = pixels
        .chunks(4)
        .enumerate()
        .filter(|(_, p)| *p != bgra)
        .take(4)
        .collect();
    assert!(
        wrong.is_empty(),
        "every pixel is {what} {bgra:?} (B, G, R, A); first others: {wrong:?}"
    );
}

fn start() -> Backend {
    Backend::start(&["--context-types", "virgl2", "--seccomp", &seccomp()])
}

/// render-worker said it entered its jail with the GPU stack.
fn assert_3d_jail(backend: &Backend) {
    let log = backend.log.lines();
    assert!(
        log.iter()
            .any(|l| l.contains("render-worker: jailed") && l.contains("GPU stack")),
        "render-worker ran in its 3D jail: {log:#?}"
    );
}

/// tests/gpu3d/gl-check, built in the gpu3d root by tests/gpu3d/check.
fn gl_check() -> PathBuf {
    let path = PathBuf::from(
        std::env::var("GPU_AIRLOCK_GL_CHECK")
            .expect("GPU_AIRLOCK_GL_CHECK (tests/gpu3d/check sets it)"),
    );
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

/// tests/gpu3d/vk-check, built in the gpu3d root by tests/gpu3d/check.
fn vk_check() -> PathBuf {
    let path = PathBuf::from(
        std::env::var("GPU_AIRLOCK_VK_CHECK")
            .expect("GPU_AIRLOCK_VK_CHECK (tests/gpu3d/check sets it)"),
    );
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

/// The first line starting with `prefix` after console line `from`.
fn line_after<'a>(console: &'a [String], from: &str, prefix: &str) -> Option<&'a String> {
    console
        .iter()
        .skip_while(|l| !l.contains(from))
        .find(|l| l.starts_with(prefix))
}

/// The figure after `key=` in `line`.
fn figure(line: &str, key: &str) -> Option<f64> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..].split_whitespace().next()?.parse().ok()
}

/// The jailed backend offering virgl, and a guest booted against it on
/// QEMU 11.1 (its generic device, or `device`) with tests/gpu3d/init-3d
/// and `append`; this root (the gpu3d root, where the test runs) is the
/// guest's userland over 9p: Mesa's virgl driver, eglinfo, kmscube.
fn boot_virgl_guest(append: &str, device: Option<String>) -> (Backend, Guest) {
    // No host-visible region: virglrenderer on llvmpipe gives a virgl
    // blob's memory no descriptor to map, and without the region Mesa's
    // virgl driver copies through transfers (seen: with it, Mesa's
    // staging blobs failed to map and the triangle never drew).
    boot_3d_guest(
        &["--context-types", "virgl:virgl2", "--shm-size", "0"],
        append,
        device,
    )
}

/// The jailed backend with `args`, and a guest booted against it as
/// [`boot_virgl_guest`] says, with gl-check and vk-check in its initramfs.
fn boot_3d_guest(args: &[&str], append: &str, device: Option<String>) -> (Backend, Guest) {
    let image = harness::guest::needed(GuestImage::find());
    let qemu = harness::guest::needed(qemu11());
    let seccomp = seccomp();
    let mut args = args.to_vec();
    args.extend(["--seccomp", &seccomp]);
    let backend = Backend::start(&args);
    let dir = TempDir::new("gpu3d-guest");
    let init = Path::new(env!("CARGO_MANIFEST_DIR")).join("gpu3d/init-3d");
    let initrd = image.with_files(
        &dir.0,
        &[
            ("/init", &init),
            ("/bin/gl-check", &gl_check()),
            ("/bin/vk-check", &vk_check()),
        ],
    );
    let mut boot = Boot::qemu11(&image, &initrd, &backend.socket, append, 1024);
    if let Some(device) = device {
        boot.device = device;
    }
    boot.extra = [
        "-virtfs",
        "local,path=/,mount_tag=root,security_model=none,readonly=on",
    ]
    .map(Into::into)
    .to_vec();
    let guest = Guest::boot(qemu, boot, dir);
    (backend, guest)
}

#[test]
fn a_real_guest_renders_with_mesas_virgl_driver_through_qemu_11() {
    let frames = 30;
    let (backend, mut guest) = boot_virgl_guest(&format!("airlock.frames={frames}"), None);
    guest.wait_done();
    let console = guest.quit();

    let renderer: Vec<&String> = console
        .iter()
        .filter(|l| l.starts_with("EGLINFO:") && l.contains("renderer"))
        .collect();
    assert!(
        !renderer.is_empty() && renderer.iter().all(|l| l.contains("virgl")),
        "eglinfo in the guest names the virgl renderer: {console:#?}"
    );
    let first = console
        .iter()
        .find(|l| l.starts_with("GLCHECK"))
        .unwrap_or_else(|| panic!("gl-check ran: {console:#?}"));
    assert!(
        first.starts_with("GLCHECK ok renderer=virgl"),
        "the guest's frames were drawn by virgl and read back right: {first}"
    );
    assert!(console.iter().any(|l| l == "GUEST: killed mid-frame"));
    let after = line_after(&console, "GUEST: killed mid-frame", "GLCHECK")
        .unwrap_or_else(|| panic!("gl-check ran after the kill: {console:#?}"));
    assert!(
        after.starts_with("GLCHECK ok renderer=virgl"),
        "a program killed mid-frame leaves a working device: {after}"
    );
    // No error response before the kill. After it, the killed program's
    // last command stream may be refused (seen: one SUBMIT_3D, EINVAL from
    // virglrenderer, as the kernel tore its context down), and nothing
    // else.
    let killing = console
        .iter()
        .position(|l| l == "GUEST: killing mid-frame")
        .unwrap_or_else(|| panic!("the guest killed a program: {console:#?}"));
    let unexpected: Vec<&String> = console
        .iter()
        .enumerate()
        .filter(|(i, l)| {
            l.contains("*ERROR* response") && (*i < killing || !l.contains("(command 0x207)"))
        })
        .map(|(_, l)| l)
        .collect();
    assert!(
        unexpected.is_empty(),
        "the guest's driver got error responses beyond the killed program's stream: \
         {unexpected:#?} (all: {:#?})",
        error_responses(&console)
    );
    let log = backend.log.lines();
    let warned: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .filter(|l| !l.contains("command 0x207 refused"))
        .collect();
    assert!(
        warned.is_empty(),
        "gpu-airlock warned of nothing else: {log:#?}"
    );

    // The figure: the same program on this host's llvmpipe directly.
    let host = Command::new(gl_check())
        .args([frames.to_string().as_str(), "256"])
        .env("MESA_SHADER_CACHE_DISABLE", "true")
        .output()
        .expect("run gl-check on the host");
    let host = String::from_utf8_lossy(&host.stdout).into_owned();
    if let (Some(guest_fps), Some(host_fps)) = (figure(first, "fps"), figure(&host, "fps")) {
        println!(
            "BENCH gl-check 256x256: guest through gpu-airlock (TCG) {guest_fps:.1} fps, host \
             llvmpipe directly {host_fps:.1} fps, ratio {:.3}",
            guest_fps / host_fps
        );
    }
}

#[test]
fn a_virgl_context_clears_a_render_target_and_the_guest_reads_it_back() {
    let backend = start();
    let mut dev = Device::connect(&backend.socket);
    assert_eq!(dev.num_capsets(), 1, "virgl2 alone: one capset");
    let (_, info) = dev.control(&cmd(CMD_GET_CAPSET_INFO, &[0, 0]), 64);
    assert_eq!(
        u32::from_le_bytes(info[24..28].try_into().unwrap()),
        CAPSET_VIRGL2
    );

    assert_eq!(
        code(&mut dev, &ctx_create(CTX, CAPSET_VIRGL2, "gpu3d")),
        RESP_OK_NODATA,
        "log: {:#?}",
        backend.log.lines()
    );
    assert_eq!(code(&mut dev, &create_3d(1)), RESP_OK_NODATA);
    let len = SIZE * SIZE * 4;
    // The backing starts as a pattern the clear colour is not.
    dev.mem
        .write_slice(&vec![0x5a; len as usize], GuestAddress(BACKING_AT))
        .unwrap();
    assert_eq!(
        code(
            &mut dev,
            &cmd(
                CMD_RESOURCE_ATTACH_BACKING,
                &[1, 1, BACKING_AT as u32, 0, len, 0]
            )
        ),
        RESP_OK_NODATA
    );
    assert_eq!(
        code(
            &mut dev,
            &words(hdr(CMD_CTX_ATTACH_RESOURCE, CTX, None), &[1, 0])
        ),
        RESP_OK_NODATA
    );
    let stream = clear_stream(1, [1.0, 0.0, 0.0, 1.0]);
    let (_, resp) = dev.control(&submit(CTX, &stream, Some((1, None))), 64);
    assert_eq!(
        parse_hdr(&resp).0,
        RESP_OK_NODATA,
        "log: {:#?}",
        backend.log.lines()
    );
    let (_, resp) = dev.control(&read_back(1, 2), 64);
    assert_eq!(parse_hdr(&resp), (RESP_OK_NODATA, FLAG_FENCE, 2));

    assert_pixels(&dev, len, [0x00, 0x00, 0xff, 0xff], "red");

    // A stream past one ipc frame (Mesa's virgl driver flushes at 256
    // KiB): 200 KiB of NOP before a green clear crosses through the
    // connection's submit buffer.
    const NOP_DWORDS: u32 = 50_000;
    let mut long = virgl(0, 0, NOP_DWORDS).to_le_bytes().to_vec();
    long.resize(long.len() + NOP_DWORDS as usize * 4, 0);
    long.extend(clear_stream(1, [0.0, 1.0, 0.0, 1.0]));
    assert!(long.len() > 64 * 1024);
    let (_, resp) = dev.control(&submit(CTX, &long, Some((3, None))), 64);
    assert_eq!(
        parse_hdr(&resp).0,
        RESP_OK_NODATA,
        "log: {:#?}",
        backend.log.lines()
    );
    let (_, resp) = dev.control(&read_back(1, 4), 64);
    assert_eq!(parse_hdr(&resp), (RESP_OK_NODATA, FLAG_FENCE, 4));
    assert_pixels(&dev, len, [0x00, 0xff, 0x00, 0xff], "green");

    assert_3d_jail(&backend);
}

#[test]
fn bad_3d_input_is_refused_and_the_device_goes_on() {
    let backend = start();
    let mut dev = Device::connect(&backend.socket);
    assert_eq!(
        code(&mut dev, &ctx_create(CTX, CAPSET_VIRGL2, "bad")),
        RESP_OK_NODATA
    );
    // A context of a type not offered (venus, capset 4).
    assert_ne!(
        code(&mut dev, &ctx_create(2, 4, "venus")),
        RESP_OK_NODATA,
        "venus is not offered"
    );
    // A format virgl does not know; a resource id in use; a transfer
    // outside the resource; a transfer of a resource without backing.
    assert_ne!(
        code(
            &mut dev,
            &cmd(
                CMD_RESOURCE_CREATE_3D,
                &[2, TEXTURE_2D, 0xffff, 2, 16, 16, 1, 1, 0, 0, 0, 0]
            )
        ),
        RESP_OK_NODATA
    );
    assert_eq!(code(&mut dev, &create_3d(1)), RESP_OK_NODATA);
    assert_eq!(code(&mut dev, &create_3d(1)), RESP_ERR_INVALID_RESOURCE_ID);
    assert_eq!(code(&mut dev, &read_back(1, 3)), RESP_ERR_UNSPEC);
    let len = SIZE * SIZE * 4;
    // Backing shorter than the resource: rutabaga refuses the transfer
    // rather than write past it.
    assert_eq!(
        code(
            &mut dev,
            &cmd(
                CMD_RESOURCE_ATTACH_BACKING,
                &[1, 1, BACKING_AT as u32, 0, len / 2, 0]
            )
        ),
        RESP_OK_NODATA
    );
    assert_ne!(code(&mut dev, &read_back(1, 4)), RESP_OK_NODATA);
    // A stream that is not virgl's: refused, the context goes on.
    assert_eq!(
        code(
            &mut dev,
            &words(hdr(CMD_CTX_ATTACH_RESOURCE, CTX, None), &[1, 0])
        ),
        RESP_OK_NODATA
    );
    let garbage: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37)).collect();
    let _ = code(&mut dev, &submit(CTX, &garbage, None));
    // The device still serves: a 2D resource, and the 3D one unreffed.
    assert_eq!(
        code(&mut dev, &cmd(CMD_RESOURCE_CREATE_2D, &[20, 1, 16, 16])),
        RESP_OK_NODATA
    );
    assert_eq!(
        code(&mut dev, &cmd(CMD_RESOURCE_UNREF, &[1, 0])),
        RESP_OK_NODATA
    );
    drop(dev);

    // A new connection gets a working device.
    let mut dev = Device::connect(&backend.socket);
    assert_eq!(
        code(&mut dev, &ctx_create(CTX, CAPSET_VIRGL2, "again")),
        RESP_OK_NODATA
    );
    assert_eq!(code(&mut dev, &create_3d(1)), RESP_OK_NODATA);
    assert!(backend
        .log
        .wait_for(&["front-end connected"], Duration::from_secs(1))
        .is_some());
}

#[test]
fn a_3d_resource_on_a_scanout_reaches_the_display_at_each_flush() {
    use harness::display::{DisplayConfig, Event};
    let backend = start();
    let (mut dev, display) = Device::connect_with_display(
        &backend.socket,
        DisplayConfig {
            modes: vec![(SIZE, SIZE)],
            edid: false,
        },
    );
    assert_eq!(
        code(&mut dev, &ctx_create(CTX, CAPSET_VIRGL2, "scanout")),
        RESP_OK_NODATA
    );
    // A render target that is also a scanout (VIRGL_BIND_SCANOUT).
    let mut create = create_3d(1);
    create[24 + 12..24 + 16].copy_from_slice(&(BIND_RENDER_TARGET | 1 << 18).to_le_bytes());
    assert_eq!(code(&mut dev, &create), RESP_OK_NODATA);
    assert_eq!(
        code(
            &mut dev,
            &words(hdr(CMD_CTX_ATTACH_RESOURCE, CTX, None), &[1, 0])
        ),
        RESP_OK_NODATA
    );
    let flush = cmd(CMD_RESOURCE_FLUSH, &[0, 0, SIZE, SIZE, 1, 0]);
    for (n, (rgba, want)) in [
        ([0.0, 0.0, 1.0, 1.0], [0xff, 0x00, 0x00]),
        ([1.0, 1.0, 0.0, 1.0], [0x00, 0xff, 0xff]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut stream = clear_stream(1, rgba);
        // The surface object exists after the first frame.
        if n > 0 {
            stream.drain(..6 * 4);
        }
        let (_, resp) = dev.control(&submit(CTX, &stream, Some((10 + n as u64, None))), 64);
        assert_eq!(
            parse_hdr(&resp).0,
            RESP_OK_NODATA,
            "{:#?}",
            backend.log.lines()
        );
        if n == 0 {
            assert_eq!(
                code(&mut dev, &cmd(CMD_SET_SCANOUT, &[0, 0, SIZE, SIZE, 0, 1])),
                RESP_OK_NODATA,
                "{:#?}",
                backend.log.lines()
            );
        }
        assert_eq!(
            code(&mut dev, &flush),
            RESP_OK_NODATA,
            "{:#?}",
            backend.log.lines()
        );
        let events = display.wait_for(Duration::from_secs(10), |e| {
            e.iter()
                .filter(|e| matches!(e, Event::Update { .. }))
                .count()
                > n
        });
        assert!(
            events
                .iter()
                .filter(|e| matches!(e, Event::Update { .. }))
                .count()
                > n,
            "the display got an update: {events:#?}"
        );
        let shown = display.surface(0).expect("scanout 0 shows a surface");
        assert_eq!((shown.width, shown.height), (SIZE, SIZE));
        // x8r8g8b8, little-endian: B, G, R, X.
        let wrong = shown.pixels.chunks(4).filter(|p| p[..3] != want).count();
        assert_eq!(wrong, 0, "frame {n}: every pixel shows {want:?} (B, G, R)");
    }
    // Unreffed while shown: the scanout lets go, the device goes on.
    assert_eq!(
        code(&mut dev, &cmd(CMD_RESOURCE_UNREF, &[1, 0])),
        RESP_OK_NODATA
    );
    assert_eq!(
        code(&mut dev, &cmd(CMD_RESOURCE_CREATE_2D, &[2, 1, 16, 16])),
        RESP_OK_NODATA
    );
}

#[test]
fn a_real_guest_shows_a_gl_drawn_frame_on_qemus_display() {
    let (width, height) = (640, 480);
    // QEMU's vhost-user-gpu-pci, with its display (QEMU 11.1's, the same
    // front-end as QEMU 10's).
    let device = format!("vhost-user-gpu-pci,chardev=gpu,xres={width},yres={height}");
    let (_backend, mut guest) = boot_virgl_guest("airlock.mode=kms", Some(device));
    let running = guest.wait_line(Duration::from_secs(120), |l| {
        l == "GUEST: kms running" || l == "GUEST: done"
    });
    assert_eq!(
        running.as_deref(),
        Some("GUEST: kms running"),
        "kmscube ran on the guest's display: {:#?}",
        guest.lines
    );
    let (w, h, rgb) = guest.screen();
    if let Ok(dir) = std::env::var("GPU_AIRLOCK_SCREENSHOTS") {
        let file = Path::new(&dir).join("gpu3d-kmscube.ppm");
        let mut ppm = format!("P6\n{w} {h}\n255\n").into_bytes();
        ppm.extend_from_slice(&rgb);
        std::fs::write(&file, ppm).expect("write the screenshot");
    }
    guest.type_line("done");
    guest.wait_done();
    let console = guest.quit();
    assert_eq!((w, h), (width as usize, height as usize));
    // kmscube clears to grey and draws a shaded cube in the middle.
    let at = |x: usize, y: usize| &rgb[(y * w + x) * 3..(y * w + x) * 3 + 3];
    let grey = |p: &[u8]| p.iter().all(|&c| c.abs_diff(0x80) <= 2);
    for (x, y) in [(4, 4), (w - 5, 4), (4, h - 5), (w - 5, h - 5)] {
        assert!(
            grey(at(x, y)),
            "corner ({x}, {y}) is kmscube's grey: {:?}",
            at(x, y)
        );
    }
    let cube = (h / 4..3 * h / 4)
        .flat_map(|y| (w / 4..3 * w / 4).map(move |x| (x, y)))
        .filter(|&(x, y)| !grey(at(x, y)))
        .count();
    assert!(
        cube > w * h / 40,
        "the middle shows the cube: {cube} pixels are not grey"
    );
    let refused = error_responses(&console);
    assert!(refused.is_empty(), "error responses: {refused:#?}");
}

/// The VENUS capset: Vulkan commands in the venus protocol.
const CAPSET_VENUS: u32 = 4;

#[test]
fn a_venus_context_maps_its_shared_memory_into_the_guest_region() {
    let backend = Backend::start(&["--context-types", "venus", "--seccomp", &seccomp()]);
    let mut dev = Device::connect(&backend.socket);
    let region = dev.shmem.clone().expect("SHMEM negotiated");
    assert_eq!(dev.num_capsets(), 1, "venus alone: one capset");
    let (_, info) = dev.control(&cmd(CMD_GET_CAPSET_INFO, &[0, 0]), 64);
    let word = |r: &[u8], o: usize| u32::from_le_bytes(r[o..o + 4].try_into().unwrap());
    assert_eq!(word(&info, 24), CAPSET_VENUS);
    let (max_version, max_size) = (word(&info, 28), word(&info, 32));
    assert!(max_size > 0, "venus's capset has a size: {max_size}");
    // The capset itself: venus's wire format version first, non-zero.
    let (_, caps) = dev.control(
        &cmd(CMD_GET_CAPSET, &[CAPSET_VENUS, max_version]),
        24 + max_size,
    );
    assert_eq!(parse_hdr(&caps).0, RESP_OK_CAPSET);
    let fields: Vec<u32> = (0..(max_size as usize / 4).min(8))
        .map(|i| word(&caps, 24 + 4 * i))
        .collect();
    eprintln!("venus capset v{max_version}, {max_size} bytes: {fields:?}");
    assert_ne!(fields[1], 0, "venus capset: vk_xml_version, {fields:?}");

    assert_eq!(
        code(&mut dev, &ctx_create(CTX, CAPSET_VENUS, "venus")),
        RESP_OK_NODATA,
        "log: {:#?}",
        backend.log.lines()
    );
    // blob_id 0 on a venus context: the context's shared memory (what
    // Mesa's venus driver makes first, for its command ring), mappable.
    const SIZE: u64 = 64 * 1024;
    assert_eq!(
        code(
            &mut dev,
            &create_blob(CTX, 30, BLOB_MEM_HOST3D, BLOB_FLAG_MAPPABLE, 0, SIZE, &[])
        ),
        RESP_OK_NODATA,
        "log: {:#?}",
        backend.log.lines()
    );
    let offset = 0x2_0000;
    let (len, resp) = dev.control(&map_blob(30, offset), 64);
    assert_eq!(
        (len, parse_hdr(&resp).0),
        (32, RESP_OK_MAP_INFO),
        "log: {:#?}",
        backend.log.lines()
    );
    // The context's own memory, shared (not a copy: the ring is written
    // by both sides).
    assert!(
        region.backing_name(offset).contains("vkr-shmem"),
        "mapped: {}",
        region.backing_name(offset)
    );
    assert_eq!(
        region.events(),
        [ShmemEvent::Map {
            offset,
            len: SIZE,
            writable: true
        }]
    );
    // What the guest writes there, the host memory holds (read back
    // through the region's own mapping of the descriptor SHMEM_MAP sent).
    assert!(region.write(offset + 8, b"venus ring"));
    assert_eq!(region.read(offset + 8, 10).unwrap(), b"venus ring");

    // A blob_id that names no memory of the context is refused.
    assert_ne!(
        code(
            &mut dev,
            &create_blob(CTX, 31, BLOB_MEM_HOST3D, BLOB_FLAG_MAPPABLE, 77, SIZE, &[])
        ),
        RESP_OK_NODATA
    );
    assert_eq!(
        code(
            &mut dev,
            &words(hdr(CMD_RESOURCE_UNMAP_BLOB, 0, None), &[30, 0])
        ),
        RESP_OK_NODATA
    );
    assert_eq!(
        region.events().last(),
        Some(&ShmemEvent::Unmap { offset, len: SIZE })
    );
    // Mapped again, the same memory (virglrenderer hands over a venus
    // blob's descriptor at its first export: render-worker keeps it).
    let (_, resp) = dev.control(&map_blob(30, offset), 64);
    assert_eq!(
        parse_hdr(&resp).0,
        RESP_OK_MAP_INFO,
        "log: {:#?}",
        backend.log.lines()
    );
    assert_eq!(region.read(offset + 8, 10).unwrap(), b"venus ring");
    // An unref unmaps first.
    assert_eq!(
        code(&mut dev, &cmd(CMD_RESOURCE_UNREF, &[30, 0])),
        RESP_OK_NODATA
    );
    assert_eq!(
        region.events().last(),
        Some(&ShmemEvent::Unmap { offset, len: SIZE })
    );
    assert_3d_jail(&backend);
}

#[test]
fn a_real_guest_runs_vulkan_on_mesas_venus_driver_through_qemu_11() {
    let frames = 30;
    let (backend, mut guest) = boot_3d_guest(
        &["--context-types", "venus"],
        &format!("airlock.mode=venus airlock.frames={frames}"),
        None,
    );
    guest.wait_done();
    let console = guest.quit();

    assert!(
        console
            .iter()
            .any(|l| l.starts_with("VULKANINFO:") && l.contains("Virtio-GPU Venus")),
        "vulkaninfo in the guest names venus's device: {console:#?}"
    );
    let first = console
        .iter()
        .find(|l| l.starts_with("VKCHECK"))
        .unwrap_or_else(|| panic!("vk-check ran: {console:#?}"));
    assert!(
        first.starts_with("VKCHECK ok device=Virtio-GPU Venus"),
        "the guest's compute dispatches ran on venus and read back right: {first} \
         (backend: {:#?})",
        backend.log.lines()
    );
    let after = line_after(&console, "GUEST: killed mid-frame", "VKCHECK")
        .unwrap_or_else(|| panic!("vk-check ran after the kill: {console:#?}"));
    assert!(
        after.starts_with("VKCHECK ok device=Virtio-GPU Venus"),
        "a Vulkan program killed mid-frame leaves a working device: {after}"
    );
    let killing = console
        .iter()
        .position(|l| l == "GUEST: killing mid-frame")
        .unwrap_or_else(|| panic!("the guest killed a program: {console:#?}"));
    let unexpected: Vec<&String> = console[..killing]
        .iter()
        .filter(|l| l.contains("*ERROR* response"))
        .collect();
    assert!(
        unexpected.is_empty(),
        "the guest's driver got no error response: {unexpected:#?} (all: {:#?})",
        error_responses(&console)
    );

    // The figure: the same program on this host's lavapipe directly.
    let host = Command::new(vk_check())
        .args([frames.to_string().as_str(), "65536"])
        .env("VK_ICD_FILENAMES", "/usr/share/vulkan/icd.d/lvp_icd.json")
        .output()
        .expect("run vk-check on the host");
    let host = String::from_utf8_lossy(&host.stdout).into_owned();
    if let (Some(guest_fps), Some(host_fps)) = (figure(first, "fps"), figure(&host, "fps")) {
        println!(
            "BENCH vk-check 64Ki words: guest on venus through gpu-airlock (TCG) {guest_fps:.1} \
             dispatches/s, host lavapipe directly {host_fps:.1}, ratio {:.3}",
            guest_fps / host_fps
        );
    }
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
                // After the command name's closing parenthesis: state, ppid.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

#[test]
fn a_venus_context_whose_worker_crashes_takes_nothing_else_with_it() {
    let backend = Backend::start(&["--context-types", "venus", "--seccomp", &seccomp()]);
    let mut dev = Device::connect(&backend.socket);
    let render_worker = backend.worker_pids().1;
    let server = children(render_worker);
    assert_eq!(
        server.len(),
        1,
        "render-worker's one child, the render server"
    );
    let server = server[0];
    assert!(std::fs::read_link(format!("/proc/{server}/exe"))
        .unwrap()
        .ends_with("virgl_render_server"));
    assert_eq!(
        code(&mut dev, &ctx_create(1, CAPSET_VENUS, "doomed")),
        RESP_OK_NODATA
    );
    let doomed = children(server);
    assert_eq!(doomed.len(), 1, "one worker process for the one context");
    assert_eq!(
        code(&mut dev, &ctx_create(2, CAPSET_VENUS, "survivor")),
        RESP_OK_NODATA
    );
    let both = children(server);
    assert_eq!(both.len(), 2, "a worker process per context: {both:?}");

    // The first context's worker crashes (as a driver bug would end it).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(doomed[0] as i32),
        nix::sys::signal::Signal::SIGSEGV,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while process_alive(doomed[0]) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // A command on the crashed context is answered (refused or not), and
    // the other context, a new one and render-worker go on.
    let _ = code(
        &mut dev,
        &create_blob(1, 40, BLOB_MEM_HOST3D, BLOB_FLAG_MAPPABLE, 0, 65536, &[]),
    );
    assert_eq!(
        code(
            &mut dev,
            &create_blob(2, 41, BLOB_MEM_HOST3D, BLOB_FLAG_MAPPABLE, 0, 65536, &[])
        ),
        RESP_OK_NODATA,
        "log: {:#?}",
        backend.log.lines()
    );
    let (_, resp) = dev.control(&map_blob(41, 0), 64);
    assert_eq!(parse_hdr(&resp).0, RESP_OK_MAP_INFO);
    assert_eq!(
        code(&mut dev, &ctx_create(3, CAPSET_VENUS, "next")),
        RESP_OK_NODATA
    );
    assert!(process_alive(render_worker) && process_alive(server));
    drop(dev);
    // And a new connection gets a working device.
    let mut dev = Device::connect(&backend.socket);
    assert_eq!(
        code(&mut dev, &ctx_create(1, CAPSET_VENUS, "again")),
        RESP_OK_NODATA
    );
}

#[test]
fn a_default_context_with_venus_alone_is_held_empty() {
    let backend = Backend::start(&["--context-types", "venus", "--seccomp", &seccomp()]);
    let mut dev = Device::connect(&backend.socket);
    // Linux makes a context_init 0 context for any client that creates a
    // buffer (its console at boot): no context type offered runs it.
    assert_eq!(code(&mut dev, &ctx_create(5, 0, "")), RESP_OK_NODATA);
    assert_eq!(
        code(&mut dev, &cmd(CMD_RESOURCE_CREATE_2D, &[7, 1, 16, 16])),
        RESP_OK_NODATA
    );
    for attach in [CMD_CTX_ATTACH_RESOURCE, CMD_CTX_DETACH_RESOURCE] {
        assert_eq!(
            code(&mut dev, &words(hdr(attach, 5, None), &[7, 0])),
            RESP_OK_NODATA
        );
    }
    assert_eq!(
        code(&mut dev, &submit(5, &0u32.to_le_bytes(), None)),
        RESP_ERR_INVALID_CONTEXT_ID
    );
    assert_eq!(
        code(&mut dev, &ctx_create(5, 0, "")),
        RESP_ERR_INVALID_CONTEXT_ID
    );
    assert_eq!(
        code(&mut dev, &hdr(CMD_CTX_DESTROY, 5, None)),
        RESP_OK_NODATA
    );
    // Venus itself is unaffected.
    assert_eq!(
        code(&mut dev, &ctx_create(6, CAPSET_VENUS, "venus")),
        RESP_OK_NODATA
    );
}

#[test]
fn venus_without_its_render_server_refuses_to_start_in_one_line() {
    let dir = TempDir::new("no-server");
    let socket = dir.0.join("gpu.sock");
    let mut cmd = Command::new(binary("gpu-airlock"));
    cmd.arg("--socket-path")
        .arg(&socket)
        .args(["--context-types", "venus"])
        .env(
            "RENDER_SERVER_EXEC_PATH",
            "/nonexistent/virgl_render_server",
        );
    let mut backend = Backend::spawn(cmd, dir, socket);
    let status = backend
        .wait_exit(Duration::from_secs(20))
        .expect("the broker exits");
    assert!(!status.success());
    assert!(
        backend
            .log
            .lines()
            .iter()
            .any(|l| l
                .contains("venus needs virglrenderer's render server, not found at /nonexistent")),
        "{:#?}",
        backend.log.lines()
    );
}
