//! Runs inside the test guest (tests/tests/guest_blob.rs puts it in the
//! initramfs with its libraries): drives the kernel's virtgpu DRM interface
//! the way sommelier and wayland-proxy-virtwl do, and prints one line per
//! check, `CHECK <name> ok <detail>` or `CHECK <name> FAIL <detail>`, for
//! the host test to assert.
//!
//! `virtgpu-check checks`: the whole path: parameters, the cross-domain
//! capset, a context with its query ring, image requirements, a host blob
//! mapped, written, unmapped, mapped again and read back, two blobs that do
//! not alias, a mapped blob released.
//! `virtgpu-check midway`: maps a blob and waits to be killed.
//! `virtgpu-check hold`: maps two blobs and waits (across a reboot test).
//! `virtgpu-check bad`: bad input a guest can send; each is refused and the
//! device goes on.
//! `virtgpu-check bench N`: map latency over N host blobs.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use airlock_guest::cross_domain::{self, ImageRequirements, CAPSET_CROSS_DOMAIN};
use airlock_guest::virtgpu::*;

type Result<T> = std::result::Result<T, String>;

/// Blobs mapped at once by the `many-mapped` check.
const MANY: usize = 24;

fn say(line: &str) {
    // One write per line, straight to the console.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn check<T>(name: &str, r: Result<T>, detail: impl Fn(&T) -> String) -> Result<T> {
    match r {
        Ok(v) => {
            say(&format!("CHECK {name} ok {}", detail(&v)));
            Ok(v)
        }
        Err(e) => {
            say(&format!("CHECK {name} FAIL {e}"));
            Err(format!("{name}: {e}"))
        }
    }
}

/// A cross-domain context with its query ring.
struct Context {
    gpu: Gpu,
    ring: Blob,
    ring_map: Mapping,
}

impl Context {
    fn open() -> Result<Context> {
        let path = Gpu::find_render_node().map_err(|e| e.to_string())?;
        let gpu = Gpu::open(&path).map_err(|e| e.to_string())?;
        gpu.context_init(CAPSET_CROSS_DOMAIN, 2, 0)
            .map_err(|e| format!("CONTEXT_INIT (capset 5, 2 rings): {e}"))?;
        // The query ring: a page of guest memory the host writes answers to.
        let ring = gpu
            .create_blob(BLOB_MEM_GUEST, BLOB_FLAG_USE_MAPPABLE, 4096, 0)
            .map_err(|e| format!("query ring blob: {e}"))?;
        let ring_map = gpu.map(&ring).map_err(|e| format!("query ring map: {e}"))?;
        let init = cross_domain::init(ring.res, 0, 0);
        gpu.execbuffer(&init, &[ring.bo], Some(cross_domain::QUERY_RING))
            .map_err(|e| format!("EXECBUFFER(INIT): {e}"))?;
        gpu.wait(ring.bo)
            .map_err(|e| format!("WAIT after INIT: {e}"))?;
        Ok(Context {
            gpu,
            ring,
            ring_map,
        })
    }

    /// GET_IMAGE_REQUIREMENTS on the query ring, waited for.
    fn requirements(&self, width: u32, height: u32) -> Result<ImageRequirements> {
        let cmd = cross_domain::get_image_requirements(
            width,
            height,
            cross_domain::DRM_FORMAT_XRGB8888,
            0,
        );
        self.gpu
            .execbuffer(&cmd, &[self.ring.bo], Some(cross_domain::QUERY_RING))
            .map_err(|e| format!("EXECBUFFER(GET_IMAGE_REQUIREMENTS): {e}"))?;
        self.gpu
            .wait(self.ring.bo)
            .map_err(|e| format!("WAIT on the query ring: {e}"))?;
        ImageRequirements::parse(self.ring_map.as_slice()).ok_or("query ring too short".into())
    }

    /// A mappable host blob for a `width`×`height` image.
    fn host_blob(&self, width: u32, height: u32) -> Result<Blob> {
        let r = self.requirements(width, height)?;
        self.blob_for(&r)
    }

    /// A mappable, shareable host blob from image requirements.
    fn blob_for(&self, r: &ImageRequirements) -> Result<Blob> {
        self.gpu
            .create_blob(
                BLOB_MEM_HOST3D,
                BLOB_FLAG_USE_MAPPABLE | BLOB_FLAG_USE_SHAREABLE,
                r.size,
                u64::from(r.blob_id),
            )
            .map_err(|e| format!("RESOURCE_CREATE_BLOB (host, {} bytes): {e}", r.size))
    }

    fn map(&self, blob: &Blob) -> Result<Mapping> {
        self.gpu
            .map(blob)
            .map_err(|e| format!("map of resource {}: {e}", blob.res))
    }
}

/// Bytes no two calls with different seeds share.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| {
            (i.wrapping_mul(0x9e37_79b1) ^ seed.wrapping_mul(0x85eb_ca77)) as u8 ^ (i >> 12) as u8
        })
        .collect()
}

fn checks() -> Result<()> {
    let path = check(
        "render-node",
        Gpu::find_render_node().map_err(|e| e.to_string()),
        |p| p.display().to_string(),
    )?;
    let gpu = Gpu::open(&path).map_err(|e| e.to_string())?;
    check(
        "params",
        (|| {
            let mut found = Vec::new();
            for (name, p) in [
                ("3d", PARAM_3D_FEATURES),
                ("blob", PARAM_RESOURCE_BLOB),
                ("host-visible", PARAM_HOST_VISIBLE),
                ("context-init", PARAM_CONTEXT_INIT),
            ] {
                let v = gpu.param(p).map_err(|e| format!("GETPARAM {name}: {e}"))?;
                if v == 0 {
                    return Err(format!("{name} is 0"));
                }
                found.push(name);
            }
            let capsets = gpu
                .param(PARAM_SUPPORTED_CAPSET_IDS)
                .map_err(|e| format!("GETPARAM capset ids: {e}"))?;
            if capsets & (1 << CAPSET_CROSS_DOMAIN) == 0 {
                return Err(format!("capset mask {capsets:#x} lacks cross-domain"));
            }
            Ok(format!("{} capsets={capsets:#x}", found.join(",")))
        })(),
        |s| s.clone(),
    )?;
    check(
        "capset",
        (|| {
            let mut caps = [0u8; cross_domain::CAPABILITIES_SIZE];
            gpu.caps(CAPSET_CROSS_DOMAIN, 0, &mut caps)
                .map_err(|e| format!("GET_CAPS: {e}"))?;
            let c = cross_domain::Capabilities::parse(&caps).ok_or("short capset")?;
            if c.supported_channels & (1 << cross_domain::CHANNEL_TYPE_WAYLAND) == 0 {
                return Err(format!("no Wayland channel in {c:?}"));
            }
            Ok(c)
        })(),
        |c| format!("version={} channels={:#x}", c.version, c.supported_channels),
    )?;
    drop(gpu);

    let ctx = check("context", Context::open(), |c| {
        format!("query ring resource {}", c.ring.res)
    })?;
    check("requirements", ctx.requirements(64, 64), |r| {
        format!(
            "stride={} size={} blob_id={}",
            r.strides[0], r.size, r.blob_id
        )
    })
    .and_then(|r| {
        if r.strides[0] == 256 && r.size >= 64 * 64 * 4 {
            Ok(())
        } else {
            Err(format!("unexpected requirements {r:?}"))
        }
    })?;

    check(
        "map-write-remap-read",
        (|| {
            let blob = ctx.host_blob(64, 64)?;
            let want = pattern(blob.size as usize, 1);
            {
                let mut m = ctx.map(&blob)?;
                m.as_mut_slice().copy_from_slice(&want);
            } // unmapped here
            let m = ctx.map(&blob)?;
            if m.as_slice() != want.as_slice() {
                let at = m.as_slice().iter().zip(&want).position(|(a, b)| a != b);
                return Err(format!("the pattern came back different from byte {at:?}"));
            }
            drop(m);
            ctx.gpu.close(blob.bo).map_err(|e| e.to_string())?;
            Ok(blob)
        })(),
        |b| format!("resource {} of {} bytes", b.res, b.size),
    )?;

    check(
        "no-alias",
        (|| {
            let a = ctx.host_blob(64, 64)?;
            let b = ctx.host_blob(64, 64)?;
            let (mut ma, mut mb) = (ctx.map(&a)?, ctx.map(&b)?);
            let (pa, pb) = (pattern(ma.len(), 2), pattern(mb.len(), 3));
            ma.as_mut_slice().copy_from_slice(&pa);
            mb.as_mut_slice().copy_from_slice(&pb);
            if ma.as_slice() != pa.as_slice() || mb.as_slice() != pb.as_slice() {
                return Err("one blob's bytes show in the other".into());
            }
            drop((ma, mb));
            ctx.gpu.close(a.bo).map_err(|e| e.to_string())?;
            ctx.gpu.close(b.bo).map_err(|e| e.to_string())?;
            Ok((a.res, b.res))
        })(),
        |(a, b)| format!("resources {a} and {b}"),
    )?;

    check(
        "many-mapped",
        (|| {
            // More mappings than a vhost-user memory table without
            // CONFIGURE_MEM_SLOTS holds (8): QEMU 11 puts each in one.
            let blobs: Vec<Blob> = (0..MANY)
                .map(|_| ctx.host_blob(64, 64))
                .collect::<Result<_>>()?;
            let mut maps: Vec<Mapping> = blobs.iter().map(|b| ctx.map(b)).collect::<Result<_>>()?;
            for (i, m) in maps.iter_mut().enumerate() {
                let p = pattern(m.len(), 100 + i as u32);
                m.as_mut_slice().copy_from_slice(&p);
            }
            for (i, m) in maps.iter().enumerate() {
                if m.as_slice() != pattern(m.len(), 100 + i as u32).as_slice() {
                    return Err(format!("blob {i} of {MANY} lost its bytes"));
                }
            }
            drop(maps);
            for b in &blobs {
                ctx.gpu.close(b.bo).map_err(|e| e.to_string())?;
            }
            Ok(blobs.len())
        })(),
        |n| format!("{n} blobs mapped at once"),
    )?;

    check(
        "unref-mapped",
        (|| {
            let blob = ctx.host_blob(64, 64)?;
            let mut m = ctx.map(&blob)?;
            m.as_mut_slice()[0] = 0x5a;
            // The handle goes while the mapping holds the object; the
            // kernel unmaps and releases it with the mapping.
            ctx.gpu.close(blob.bo).map_err(|e| e.to_string())?;
            if m.as_slice()[0] != 0x5a {
                return Err("the mapping changed when its handle was closed".into());
            }
            drop(m);
            // The device still answers.
            let r = ctx.requirements(32, 32)?;
            Ok((blob.res, r.blob_id))
        })(),
        |(res, next)| format!("resource {res} released; next blob id {next}"),
    )?;
    Ok(())
}

/// Maps a blob, says so, and waits to be killed mid-way.
fn midway() -> Result<()> {
    let ctx = Context::open()?;
    let blob = ctx.host_blob(128, 128)?;
    let mut m = ctx.map(&blob)?;
    m.as_mut_slice().fill(0xa5);
    let _ring_pending = ctx.requirements(16, 16)?;
    say(&format!("CHECK midway ok resource {} mapped", blob.res));
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

/// Maps two blobs and holds them until killed (or the VM resets).
fn hold() -> Result<()> {
    let ctx = Context::open()?;
    let blobs = [ctx.host_blob(64, 64)?, ctx.host_blob(256, 256)?];
    let maps: Vec<Mapping> = blobs.iter().map(|b| ctx.map(b)).collect::<Result<_>>()?;
    say(&format!(
        "CHECK hold ok resources {} and {} mapped, {} and {} bytes",
        blobs[0].res,
        blobs[1].res,
        maps[0].len(),
        maps[1].len()
    ));
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

/// Bad input, each followed by proof that the device still works.
fn bad() -> Result<()> {
    let ctx = Context::open()?;
    let alive = |what: &str| -> Result<String> {
        ctx.requirements(16, 16).map(|r| {
            format!(
                "then requirements answered (blob id {}) after {what}",
                r.blob_id
            )
        })
    };

    // An unknown capset: the kernel refuses it before the host hears.
    let path = Gpu::find_render_node().map_err(|e| e.to_string())?;
    let other = Gpu::open(&path).map_err(|e| e.to_string())?;
    check(
        "bad-capset",
        match other.context_init(9, 1, 0) {
            Ok(()) => Err("CONTEXT_INIT with capset 9 succeeded".to_string()),
            Err(e) => alive("").map(|a| format!("refused: {e}; {a}")),
        },
        |s| s.clone(),
    )?;

    // A malformed cross-domain command (cmd_size 0, which once spun
    // render-worker): refused by the host; the kernel's EXECBUFFER is
    // asynchronous, so the guest sees the fence signal and the error in
    // its log.
    check(
        "bad-execbuffer",
        (|| {
            let mut cmd = cross_domain::command(cross_domain::CMD_POLL, &[0; 8]);
            cmd[2] = 0;
            cmd[3] = 0;
            ctx.gpu
                .execbuffer(&cmd, &[ctx.ring.bo], Some(cross_domain::QUERY_RING))
                .map_err(|e| format!("EXECBUFFER: {e}"))?;
            ctx.gpu
                .wait(ctx.ring.bo)
                .map_err(|e| format!("WAIT: {e}"))?;
            alive("cmd_size 0")
        })(),
        |s| s.clone(),
    )?;

    // A blob past --max-resource-memory (the test sets 64 MiB): the host
    // refuses it, and the map fails.
    check(
        "too-large",
        (|| {
            let r = ctx.requirements(8192, 4096)?;
            let blob = ctx.blob_for(&r)?;
            let outcome = match ctx.gpu.map(&blob) {
                Ok(_) => return Err(format!("a {} byte blob was mapped", r.size)),
                Err(e) => format!("{} bytes refused at map: {e}", r.size),
            };
            let _ = ctx.gpu.close(blob.bo);
            alive("").map(|a| format!("{outcome}; {a}"))
        })(),
        |s| s.clone(),
    )?;

    // A blob larger than the host-visible region: the kernel keeps the
    // region's allocator and refuses it before the host hears.
    check(
        "past-region",
        (|| {
            let size = 16u64 << 30;
            match ctx.gpu.create_blob(
                BLOB_MEM_HOST3D,
                BLOB_FLAG_USE_MAPPABLE | BLOB_FLAG_USE_SHAREABLE,
                size,
                1,
            ) {
                Ok(b) => {
                    let mapped = ctx.gpu.map(&b).is_ok();
                    let _ = ctx.gpu.close(b.bo);
                    if mapped {
                        return Err(format!("a {size} byte blob was mapped"));
                    }
                    alive("").map(|a| format!("{size} bytes refused at map; {a}"))
                }
                Err(e) => alive("").map(|a| format!("{size} bytes refused: {e}; {a}")),
            }
        })(),
        |s| s.clone(),
    )?;
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Map latency: blob create → map ioctl → mmap → first byte readable, and
/// unmap (munmap and GEM_CLOSE; Linux sends UNMAP_BLOB without waiting).
fn bench(n: usize) -> Result<()> {
    let ctx = Context::open()?;
    let (mut map, mut unmap) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let r = ctx.requirements(64, 64)?;
        let t = Instant::now();
        let blob = ctx.blob_for(&r)?;
        let m = ctx.map(&blob)?;
        // SAFETY: the first byte of a live mapping; volatile so the read
        // really happens.
        let _first = unsafe { std::ptr::read_volatile(m.as_slice().as_ptr()) };
        map.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        drop(m);
        ctx.gpu.close(blob.bo).map_err(|e| e.to_string())?;
        unmap.push(t.elapsed().as_secs_f64() * 1e6);
    }
    // The driver queues a freed blob's UNMAP_BLOB and UNREF and returns:
    // one more round trip behind them, answered in queue order, means the
    // device has done them before the run says it ended (a test that ends
    // the VMM next would otherwise race the last unmap).
    ctx.requirements(64, 64)?;
    map.sort_by(f64::total_cmp);
    unmap.sort_by(f64::total_cmp);
    say(&format!(
        "BENCH map n={n} p50_us={:.0} p99_us={:.0} unmap p50_us={:.0} p99_us={:.0}",
        percentile(&map, 0.5),
        percentile(&map, 0.99),
        percentile(&unmap, 0.5),
        percentile(&unmap, 0.99)
    ));
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("checks") => checks(),
        Some("midway") => midway(),
        Some("hold") => hold(),
        Some("bad") => bad(),
        Some("bench") => {
            let n = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(200);
            bench(n)
        }
        _ => Err("usage: virtgpu-check checks|midway|hold|bad|bench N".into()),
    };
    match result {
        Ok(()) => {
            say("CHECK end ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            say(&format!("CHECK end FAIL {e}"));
            ExitCode::FAILURE
        }
    }
}
