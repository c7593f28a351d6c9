//! A Wayland client for the guest tests, built on wayland-client (its
//! pure-Rust backend, so it needs no libwayland in the initramfs):
//!
//! - `wl-pattern show W H`: a W×H xdg toplevel of [`harness::pattern`],
//!   in a wl_shm buffer; says `PATTERN shown W H` once the compositor has
//!   drawn it (its frame callback), then waits until /tmp/quit exists and
//!   ends cleanly (`PATTERN exit`).
//! - `wl-pattern bench W H FRAMES DAMAGE`: FRAMES frames into two
//!   alternating buffers, each changing a DAMAGE×DAMAGE square (or `full`),
//!   damaged, committed and round-tripped; prints
//!   `BENCH wayland WxH damage=D frames=N fps=F`.
//! - `wl-pattern bad`: clients that break the protocol in each way the
//!   proxy must answer with a protocol error, each on its own connection.
//! - `wl-pattern seat`: takes the keyboard's keymap and the clipboard,
//!   prints `KEYMAP bytes=N fnv=H sealed=S` and `CLIPBOARD text`, then
//!   sets a selection of its own and writes [`GUEST_SELECTION`] when the
//!   compositor asks (`SENT`).

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use wayland_client::protocol::{
    wl_buffer::{self, WlBuffer},
    wl_callback::{self, WlCallback},
    wl_compositor::WlCompositor,
    wl_data_device::{self, WlDataDevice},
    wl_data_device_manager::WlDataDeviceManager,
    wl_data_offer::{self, WlDataOffer},
    wl_data_source::{self, WlDataSource},
    wl_keyboard::{self, WlKeyboard},
    wl_registry::{self, WlRegistry},
    wl_seat::WlSeat,
    wl_shm::{self, WlShm},
    wl_shm_pool::WlShmPool,
    wl_surface::WlSurface,
};
use wayland_client::{delegate_noop, event_created_child, Connection, Dispatch, QueueHandle};

/// What the guest's selection holds.
const GUEST_SELECTION: &str = "the guest's clipboard, through a cross-domain write pipe";
use wayland_protocols::xdg::shell::client::{
    xdg_surface::{self, XdgSurface},
    xdg_toplevel::{self, XdgToplevel},
    xdg_wm_base::{self, XdgWmBase},
};

#[derive(Default)]
struct App {
    compositor: Option<WlCompositor>,
    shm: Option<WlShm>,
    wm: Option<XdgWmBase>,
    configured: bool,
    drawn: bool,
    released: [bool; 2],
    seat: Option<WlSeat>,
    data: Option<WlDataDeviceManager>,
    keymap: Option<(Vec<u8>, bool)>,
    selection: Option<WlDataOffer>,
    sent: bool,
}

impl Dispatch<WlRegistry, ()> for App {
    fn event(
        app: &mut Self,
        registry: &WlRegistry,
        event: wl_registry::Event,
        _: &(),
        _: &Connection,
        qh: &QueueHandle<Self>,
    ) {
        if let wl_registry::Event::Global {
            name,
            interface,
            version,
        } = event
        {
            match interface.as_str() {
                "wl_compositor" => {
                    app.compositor = Some(registry.bind(name, version.min(4), qh, ()))
                }
                "wl_shm" => app.shm = Some(registry.bind(name, 1, qh, ())),
                "xdg_wm_base" => app.wm = Some(registry.bind(name, 1, qh, ())),
                "wl_seat" => app.seat = Some(registry.bind(name, version.min(5), qh, ())),
                "wl_data_device_manager" => {
                    app.data = Some(registry.bind(name, version.min(3), qh, ()))
                }
                _ => {}
            }
        }
    }
}

impl Dispatch<XdgWmBase, ()> for App {
    fn event(
        _: &mut Self,
        wm: &XdgWmBase,
        event: xdg_wm_base::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let xdg_wm_base::Event::Ping { serial } = event {
            wm.pong(serial);
        }
    }
}

impl Dispatch<XdgSurface, ()> for App {
    fn event(
        app: &mut Self,
        s: &XdgSurface,
        event: xdg_surface::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let xdg_surface::Event::Configure { serial } = event {
            s.ack_configure(serial);
            app.configured = true;
        }
    }
}

impl Dispatch<XdgToplevel, ()> for App {
    fn event(
        _: &mut Self,
        _: &XdgToplevel,
        _: xdg_toplevel::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
    }
}

impl Dispatch<WlBuffer, usize> for App {
    fn event(
        app: &mut Self,
        _: &WlBuffer,
        event: wl_buffer::Event,
        which: &usize,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_buffer::Event::Release = event {
            app.released[*which] = true;
        }
    }
}

impl Dispatch<WlCallback, ()> for App {
    fn event(
        app: &mut Self,
        _: &WlCallback,
        event: wl_callback::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_callback::Event::Done { .. } = event {
            app.drawn = true;
        }
    }
}

impl Dispatch<WlShm, ()> for App {
    fn event(
        _: &mut Self,
        _: &WlShm,
        _: wl_shm::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
    }
}

impl Dispatch<WlKeyboard, ()> for App {
    fn event(
        app: &mut Self,
        _: &WlKeyboard,
        event: wl_keyboard::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_keyboard::Event::Keymap { fd, size, .. } = event {
            let file = File::from(fd);
            let mut bytes = vec![0u8; size as usize];
            file.read_exact_at(&mut bytes, 0)
                .unwrap_or_else(|e| fail(&format!("reading the keymap: {e}")));
            let seals = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GET_SEALS).unwrap_or(0);
            let wanted = nix::fcntl::SealFlag::F_SEAL_WRITE | nix::fcntl::SealFlag::F_SEAL_SHRINK;
            let sealed = nix::fcntl::SealFlag::from_bits_truncate(seals).contains(wanted);
            app.keymap = Some((bytes, sealed));
        }
    }
}

impl Dispatch<WlDataDevice, ()> for App {
    fn event(
        app: &mut Self,
        _: &WlDataDevice,
        event: wl_data_device::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_data_device::Event::Selection { id } = event {
            app.selection = id;
        }
    }

    event_created_child!(App, WlDataDevice, [
        wl_data_device::EVT_DATA_OFFER_OPCODE => (WlDataOffer, ()),
    ]);
}

impl Dispatch<WlDataOffer, ()> for App {
    fn event(
        _: &mut Self,
        _: &WlDataOffer,
        _: wl_data_offer::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
    }
}

impl Dispatch<WlDataSource, ()> for App {
    fn event(
        app: &mut Self,
        _: &WlDataSource,
        event: wl_data_source::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_data_source::Event::Send { fd, .. } = event {
            let mut pipe = File::from(fd);
            std::io::Write::write_all(&mut pipe, GUEST_SELECTION.as_bytes())
                .unwrap_or_else(|e| fail(&format!("writing the selection: {e}")));
            app.sent = true;
        }
    }
}

delegate_noop!(App: ignore WlSeat);
delegate_noop!(App: ignore WlDataDeviceManager);
delegate_noop!(App: ignore WlCompositor);
delegate_noop!(App: ignore WlSurface);
delegate_noop!(App: ignore WlShmPool);

fn fail(what: &str) -> ! {
    eprintln!("wl-pattern: {what}");
    std::process::exit(1);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 2 {
        fail("usage: wl-pattern show W H | bench W H FRAMES DAMAGE|full | seat | bad");
    }
    let num = |i: usize| -> u32 {
        args.get(i).and_then(|a| a.parse().ok()).unwrap_or_else(|| {
            fail("usage: wl-pattern show W H | bench W H FRAMES DAMAGE|full | seat | bad")
        })
    };
    let conn = Connection::connect_to_env().unwrap_or_else(|e| fail(&format!("connect: {e}")));
    let mut queue = conn.new_event_queue();
    let qh = queue.handle();
    conn.display().get_registry(&qh, ());
    let mut app = App::default();
    queue
        .roundtrip(&mut app)
        .unwrap_or_else(|e| fail(&format!("roundtrip: {e}")));
    if args[1] == "seat" {
        return seat(&conn, &mut queue, app);
    }
    if args[1] == "bad" {
        return bad();
    }
    let (width, height) = (num(2), num(3));
    let (Some(compositor), Some(shm), Some(wm)) =
        (app.compositor.clone(), app.shm.clone(), app.wm.clone())
    else {
        fail("the compositor lacks wl_compositor, wl_shm or xdg_wm_base");
    };

    let stride = width * 4;
    let size = (stride * height) as usize;
    let memfd =
        nix::sys::memfd::memfd_create(c"wl-pattern", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .unwrap_or_else(|e| fail(&format!("memfd: {e}")));
    let file = File::from(memfd);
    file.set_len(2 * size as u64).unwrap();
    let pixels = harness::pattern::pixels(width, height);
    file.write_all_at(&pixels, 0).unwrap();
    file.write_all_at(&pixels, size as u64).unwrap();
    let pool = shm.create_pool(file.as_fd(), 2 * size as i32, &qh, ());
    let buffers = [0usize, 1].map(|i| {
        pool.create_buffer(
            (i * size) as i32,
            width as i32,
            height as i32,
            stride as i32,
            wl_shm::Format::Xrgb8888,
            &qh,
            i,
        )
    });
    let surface = compositor.create_surface(&qh, ());
    let xdg = wm.get_xdg_surface(&surface, &qh, ());
    let toplevel = xdg.get_toplevel(&qh, ());
    toplevel.set_title("airlock-pattern".into());
    surface.commit();
    while !app.configured {
        queue
            .blocking_dispatch(&mut app)
            .unwrap_or_else(|e| fail(&format!("dispatch: {e}")));
    }
    surface.attach(Some(&buffers[0]), 0, 0);
    surface.damage_buffer(0, 0, width as i32, height as i32);
    surface.frame(&qh, ());
    surface.commit();
    while !app.drawn {
        queue
            .blocking_dispatch(&mut app)
            .unwrap_or_else(|e| fail(&format!("dispatch: {e}")));
    }

    match args[1].as_str() {
        "show" => {
            println!("PATTERN shown {width} {height}");
            while !Path::new("/tmp/quit").exists() {
                std::thread::sleep(Duration::from_millis(50));
                conn.flush().ok();
                if let Some(guard) = queue.prepare_read() {
                    // Reads what is there without blocking; the end of the
                    // connection (the compositor gone) ends the client.
                    match guard.read() {
                        Ok(_) => {}
                        Err(wayland_client::backend::WaylandError::Io(e))
                            if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => {
                            println!("PATTERN connection ended: {e}");
                            std::process::exit(3);
                        }
                    }
                }
                queue
                    .dispatch_pending(&mut app)
                    .unwrap_or_else(|e| fail(&format!("dispatch: {e}")));
            }
        }
        "bench" => {
            let frames = num(4);
            let damage = args.get(5).map(String::as_str).unwrap_or("full");
            let (dw, dh) = match damage {
                "full" => (width, height),
                d => {
                    let d: u32 = d
                        .parse()
                        .unwrap_or_else(|_| fail("DAMAGE is a number or full"));
                    (d.min(width), d.min(height))
                }
            };
            let mut row = vec![0u8; (dw * 4) as usize];
            app.released = [true, true];
            app.released[0] = false;
            let start = Instant::now();
            for frame in 0..frames {
                let which = (frame as usize + 1) % 2;
                while !app.released[which] {
                    queue
                        .blocking_dispatch(&mut app)
                        .unwrap_or_else(|e| fail(&format!("dispatch: {e}")));
                }
                app.released[which] = false;
                row.fill((frame & 0xff) as u8);
                for y in 0..dh {
                    let at = which * size + (y * stride) as usize;
                    file.write_all_at(&row, at as u64).unwrap();
                }
                surface.attach(Some(&buffers[which]), 0, 0);
                surface.damage_buffer(0, 0, dw as i32, dh as i32);
                surface.commit();
                queue
                    .roundtrip(&mut app)
                    .unwrap_or_else(|e| fail(&format!("roundtrip: {e}")));
            }
            let secs = start.elapsed().as_secs_f64();
            println!(
                "BENCH wayland {width}x{height} damage={damage} frames={frames} fps={:.1}",
                f64::from(frames) / secs
            );
        }
        other => fail(&format!("unknown mode {other}")),
    }
    toplevel.destroy();
    xdg.destroy();
    surface.destroy();
    for b in &buffers {
        b.destroy();
    }
    pool.destroy();
    queue
        .roundtrip(&mut app)
        .unwrap_or_else(|e| fail(&format!("roundtrip: {e}")));
    println!("PATTERN exit");
}

fn seat(conn: &Connection, queue: &mut wayland_client::EventQueue<App>, mut app: App) {
    let qh = queue.handle();
    let (Some(seat), Some(data)) = (app.seat.clone(), app.data.clone()) else {
        fail("the compositor lacks wl_seat or wl_data_device_manager");
    };
    let keyboard = seat.get_keyboard(&qh, ());
    let device = data.get_data_device(&seat, &qh, ());
    let roundtrip = |queue: &mut wayland_client::EventQueue<App>, app: &mut App| {
        queue
            .roundtrip(app)
            .unwrap_or_else(|e| fail(&format!("roundtrip: {e}")));
    };
    roundtrip(queue, &mut app);
    roundtrip(queue, &mut app);
    let Some((keymap, sealed)) = app.keymap.take() else {
        fail("no keymap came")
    };
    println!(
        "KEYMAP bytes={} fnv={:08x} sealed={sealed}",
        keymap.len(),
        harness::compositor::fnv(&keymap)
    );
    let Some(offer) = app.selection.take() else {
        fail("no selection came")
    };
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    offer.receive(harness::compositor::MIME.into(), write.as_fd());
    drop(write);
    conn.flush()
        .unwrap_or_else(|e| fail(&format!("flush: {e}")));
    let mut text = String::new();
    std::io::Read::read_to_string(&mut File::from(read), &mut text)
        .unwrap_or_else(|e| fail(&format!("reading the clipboard: {e}")));
    println!("CLIPBOARD {text}");
    let source = data.create_data_source(&qh, ());
    source.offer(harness::compositor::MIME.into());
    device.set_selection(Some(&source), 0);
    while !app.sent {
        queue
            .blocking_dispatch(&mut app)
            .unwrap_or_else(|e| fail(&format!("dispatch: {e}")));
    }
    println!("SENT");
    roundtrip(queue, &mut app);
    offer.destroy();
    source.destroy();
    device.release();
    keyboard.release();
    roundtrip(queue, &mut app);
    println!("PATTERN exit");
}

/// A raw connection to the proxy, for the malformed clients of `bad`.
struct Raw {
    stream: std::os::unix::net::UnixStream,
    next_id: u32,
}

impl Raw {
    fn connect() -> Raw {
        let dir = std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| fail("XDG_RUNTIME_DIR"));
        let path = Path::new(&dir).join("wayland-0");
        let stream = std::os::unix::net::UnixStream::connect(path)
            .unwrap_or_else(|e| fail(&format!("connect: {e}")));
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Raw { stream, next_id: 2 }
    }

    fn id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id - 1
    }

    fn send(&self, bytes: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]) {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        use std::os::fd::AsRawFd;
        let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let cmsg = [ControlMessage::ScmRights(&raw)];
        let iov = [std::io::IoSlice::new(bytes)];
        let _ = sendmsg::<()>(
            self.stream.as_raw_fd(),
            &iov,
            if raw.is_empty() { &[] } else { &cmsg },
            MsgFlags::MSG_NOSIGNAL,
            None,
        );
    }

    /// Events until `until` says stop or the connection ends: (object,
    /// opcode, body).
    fn events(&mut self, mut until: impl FnMut(u32, u16, &[u8]) -> bool) {
        use std::io::Read;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            while let Ok(Some(h)) = airlock_guest::wire::Header::peek(&buf) {
                if buf.len() < h.size {
                    break;
                }
                let body = buf[8..h.size].to_vec();
                buf.drain(..h.size);
                if until(h.object, h.opcode, &body) {
                    return;
                }
            }
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The wl_display.error the proxy sends, as `code message`, or what
    /// happened instead.
    fn error(&mut self) -> String {
        use airlock_guest::wire::{parse, Arg};
        use wayland_client::protocol::wl_display::WlDisplay;
        use wayland_client::Proxy;
        let mut got = "no error: the connection ended without one".to_string();
        self.events(|object, opcode, body| {
            if object == 1 && opcode == 0 {
                let sig = WlDisplay::interface().events[0].signature;
                got = match parse(body, sig).as_deref() {
                    Ok([Arg::Object(o), Arg::Uint(code), Arg::Str(Some(m))]) => {
                        format!("object={o} code={code} {}", String::from_utf8_lossy(m))
                    }
                    other => format!("a malformed error: {other:?}"),
                };
                return true;
            }
            false
        });
        got
    }

    /// get_registry, then the name of global `interface`.
    fn global(&mut self, interface: &str) -> u32 {
        use airlock_guest::wire::{message, parse, Arg};
        use wayland_client::protocol::wl_registry::WlRegistry;
        use wayland_client::Proxy;
        let registry = self.id();
        let sync = self.id();
        let mut out = message(1, 1, &[Arg::NewId(registry)]);
        out.extend(message(1, 0, &[Arg::NewId(sync)]));
        self.send(&out, &[]);
        let mut name = None;
        self.events(|object, opcode, body| {
            if object == registry && opcode == 0 {
                if let Ok([Arg::Uint(n), Arg::Str(Some(i)), _]) =
                    parse(body, WlRegistry::interface().events[0].signature).as_deref()
                {
                    if i == interface.as_bytes() {
                        name = Some(*n);
                    }
                }
            }
            object == sync
        });
        name.unwrap_or_else(|| fail(&format!("no {interface} global")))
    }

    /// Binds wl_shm and creates a pool of `size` over `fd`: (shm, pool).
    fn pool(&mut self, fd: std::os::fd::BorrowedFd<'_>, size: i32) -> (u32, u32) {
        use airlock_guest::wire::{message, Arg};
        let name = self.global("wl_shm");
        let (shm, pool) = (self.id(), self.id());
        let mut out = message(
            2,
            0,
            &[
                Arg::Uint(name),
                Arg::Str(Some(b"wl_shm".to_vec())),
                Arg::Uint(1),
                Arg::NewId(shm),
            ],
        );
        out.extend(message(
            shm,
            0,
            &[Arg::NewId(pool), Arg::Fd, Arg::Int(size)],
        ));
        self.send(&out, &[fd]);
        (shm, pool)
    }
}

/// Clients that break the protocol, each on its own connection: each must
/// get a protocol error (`BAD name object=O code=C message`).
fn bad() {
    use airlock_guest::wire::{message, Arg};
    let memfd = |size: u64| {
        let fd =
            nix::sys::memfd::memfd_create(c"bad", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
        let f = File::from(fd);
        f.set_len(size).unwrap();
        f
    };
    let report = |name: &str, got: String| println!("BAD {name} {got}");

    // A header whose size is not a whole number of words.
    let mut raw = Raw::connect();
    let mut m = message(1, 0, &[Arg::NewId(2)]);
    m[4..8].copy_from_slice(&(6u32 << 16).to_ne_bytes());
    raw.send(&m, &[]);
    report("malformed", raw.error());

    // A request to an object that does not exist.
    let mut raw = Raw::connect();
    raw.send(&message(99, 0, &[]), &[]);
    report("unknown-object", raw.error());

    // Arguments cut short (wl_display.get_registry without its id).
    let mut raw = Raw::connect();
    raw.send(&message(1, 1, &[]), &[]);
    report("short-arguments", raw.error());

    // Descriptors sent ahead of any message that carries them.
    let mut raw = Raw::connect();
    let f = memfd(4096);
    let fds: Vec<std::os::fd::BorrowedFd<'_>> = (0..28).map(|_| f.as_fd()).collect();
    for i in 0..3 {
        raw.send(&message(1, 0, &[Arg::NewId(2 + i)]), &fds);
    }
    report("fd-flood", raw.error());

    // A global the proxy did not announce.
    let mut raw = Raw::connect();
    let name = raw.global("wl_compositor");
    raw.send(
        &message(
            2,
            0,
            &[
                Arg::Uint(name + 1000),
                Arg::Str(Some(b"zwp_linux_dmabuf_v1".to_vec())),
                Arg::Uint(3),
                Arg::NewId(9),
            ],
        ),
        &[],
    );
    report("unannounced-global", raw.error());

    // A pool on a pipe.
    let mut raw = Raw::connect();
    let (r, _w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    raw.pool(r.as_fd(), 4096);
    report("pool-on-a-pipe", raw.error());

    // A buffer past the end of its pool.
    let mut raw = Raw::connect();
    let f = memfd(4096);
    let (_, pool) = raw.pool(f.as_fd(), 4096);
    let buffer = raw.id();
    raw.send(
        &message(
            pool,
            0,
            &[
                Arg::NewId(buffer),
                Arg::Int(0),
                Arg::Int(64),
                Arg::Int(64),
                Arg::Int(256),
                Arg::Uint(1),
            ],
        ),
        &[],
    );
    report("buffer-outside-pool", raw.error());

    // A buffer larger than the host's blob budget (a sparse 256 MiB pool).
    let mut raw = Raw::connect();
    let f = memfd(256 << 20);
    let (_, pool) = raw.pool(f.as_fd(), 256 << 20);
    let buffer = raw.id();
    raw.send(
        &message(
            pool,
            0,
            &[
                Arg::NewId(buffer),
                Arg::Int(0),
                Arg::Int(8192),
                Arg::Int(8192),
                Arg::Int(32768),
                Arg::Uint(1),
            ],
        ),
        &[],
    );
    report("pool-past-budget", raw.error());

    // A client that never reads its events: 60,000 wl_display.sync, each
    // answered with a done and a delete_id (24 bytes), 1.4 MiB it leaves
    // unread. The proxy must end it, not buffer without bound (nor stall).
    let raw = Raw::connect();
    let syncs: Vec<u8> = (0..60_000u32)
        .flat_map(|i| message(1, 0, &[Arg::NewId(2 + i)]))
        .collect();
    for chunk in syncs.chunks(4092) {
        raw.send(chunk, &[]);
    }
    // Only now read: what the proxy had let through, then the end.
    let mut read = 0usize;
    let mut chunk = [0u8; 65536];
    // A close comes as end of file, or as ECONNRESET when the proxy closed
    // with some of this client's syncs still unread in its socket (Linux
    // resets the peer of a socket closed with data queued): both are the
    // proxy ending the client. Anything else (the 20 s read timeout above
    // all) means the connection stayed open.
    let ended = loop {
        match std::io::Read::read(&mut &raw.stream, &mut chunk) {
            Ok(0) => break Ok("end of file"),
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break Ok("reset"),
            Err(e) => break Err(e),
        }
    };
    report(
        "never-reads",
        match ended {
            Ok(how) => format!("closed after {read} bytes ({how})"),
            Err(e) => format!("still open after {read} bytes: {e}"),
        },
    );

    println!("BAD done");
}
