//! A real compositor for the cross-domain tests, and the guest's side of a
//! cross-domain Wayland channel, as a guest proxy (sommelier) drives it:
//! a context with `context_init` = 5, two 4 KiB guest-memory rings (query
//! and channel), CROSS_DOMAIN_CMD_INIT with the Wayland channel type, SEND
//! with the Wayland bytes, and POLL fenced on the channel ring, after which
//! the channel ring holds what the compositor sent (RECEIVE).
//!
//! The Wayland wire format (a 32-bit object id, then size << 16 | opcode,
//! then arguments) is written and read here by hand: no Wayland client
//! library talks through a virtio-gpu ring.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};
use wayland_client::globals::{registry_queue_init, GlobalListContents};
use wayland_client::protocol::wl_pointer::ButtonState;
use wayland_client::protocol::wl_registry::WlRegistry;
use wayland_client::protocol::wl_seat::WlSeat;
use wayland_client::{Connection, Dispatch, QueueHandle};
use wayland_protocols_wlr::virtual_pointer::v1::client::{
    zwlr_virtual_pointer_manager_v1::ZwlrVirtualPointerManagerV1,
    zwlr_virtual_pointer_v1::ZwlrVirtualPointerV1,
};

use crate::blob_wire::*;
use crate::gpu_wire::*;
use crate::{dies_with_parent, Device, TempDir, DATA_BASE, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

/// Where [`WaylandChannel::post_poll`] puts its POLL in the control
/// queue's descriptor table ([`Device::control`] uses 0 and 1).
pub const POLL_HEAD: u16 = 2;

/// The channel ring's guest page (the query ring is at [`RING_AT`]).
pub const CHANNEL_AT: u64 = RING_AT + 0x1_0000;
const QUERY_RING: u32 = 10;
const CHANNEL_RING: u32 = 11;
pub use wire::cross_domain::{
    CHANNEL_TYPE_WAYLAND as CROSS_DOMAIN_CHANNEL_TYPE_WAYLAND,
    CMD_RECEIVE as CROSS_DOMAIN_CMD_RECEIVE, CMD_SEND as CROSS_DOMAIN_CMD_SEND,
    ID_TYPE_VIRTGPU_BLOB as CROSS_DOMAIN_ID_TYPE_VIRTGPU_BLOB,
    SEND_RECEIVE_SIZE as SEND_RECEIVE_HEADER,
};

/// Starts a headless compositor from `cmd`: no display of the machine's
/// of its own, no terminal.
fn spawn_headless(cmd: &mut Command, what: &str) -> Child {
    cmd.env_remove("WAYLAND_DISPLAY")
        .env_remove("DISPLAY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"))
}

/// Waits (20 s at most) for the compositor `what` to make the socket
/// `find` finds.
fn wait_for_socket(what: &str, mut find: impl FnMut() -> Option<PathBuf>) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(socket) = find() {
            return socket;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not create its socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// sway with its headless backend (wlroots, pixman): a compositor with a
/// seat, which weston's headless backend lacks, so a guest application can
/// be typed into (`wtype`, through the virtual-keyboard protocol) and
/// screenshot (`grim`). sway refuses to run as root: it runs as `nobody`,
/// in a runtime directory of its own, and its socket is made writable for
/// the jailed backend (root in a user namespace of its own, with no
/// capability over the host's files).
pub struct Sway {
    child: Child,
    pub socket: PathBuf,
    dir: TempDir,
}

impl Sway {
    /// Starts sway, or None (after saying so loudly) where sway, grim or
    /// wtype is not installed.
    pub fn start() -> Option<Sway> {
        for tool in ["sway", "grim", "wtype", "wl-copy", "setpriv"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success());
            if !found {
                crate::guest::cannot_run(&format!(
                    "the seat tests need {tool} (apt-get install sway grim wtype wl-clipboard; .ci/run does)"
                ));
                return None;
            }
        }
        let dir = TempDir::new("sway");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        let run = dir.0.join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
        let nobody = nix::unistd::Uid::from_raw(65534);
        let nogroup = nix::unistd::Gid::from_raw(65534);
        nix::unistd::chown(&run, Some(nobody), Some(nogroup)).unwrap();
        let config = dir.0.join("config");
        std::fs::write(
            &config,
            "xwayland disable\noutput * bg #203040 solid_color\n",
        )
        .unwrap();
        let mut setpriv = Command::new("setpriv");
        let command = dies_with_parent(&mut setpriv);
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(["sway", "-c"])
            .arg(&config)
            .env("XDG_RUNTIME_DIR", &run)
            .env("HOME", &run)
            .env("WLR_BACKENDS", "headless")
            .env("WLR_LIBINPUT_NO_DEVICES", "1")
            .env("WLR_RENDERER", "pixman")
            .env("WLR_HEADLESS_OUTPUTS", "1");
        let child = spawn_headless(command, "sway");
        let socket = wait_for_socket("sway", || {
            let found = std::fs::read_dir(&run).unwrap().flatten().find(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with("wayland-") && !name.ends_with(".lock")
            });
            found.map(|e| e.path())
        });
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).unwrap();
        Some(Sway { child, socket, dir })
    }

    pub fn arg(&self) -> String {
        self.socket.display().to_string()
    }

    /// A client of sway's, as root.
    fn client(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("XDG_RUNTIME_DIR", self.socket.parent().unwrap())
            .env("WAYLAND_DISPLAY", &self.socket);
        cmd
    }

    /// The whole output as RGB rows, from `grim`: (width, height, pixels).
    pub fn screenshot(&self) -> (usize, usize, Vec<u8>) {
        let png = self.dir.0.join("screenshot.png");
        let status = self.client("grim").arg(&png).status().expect("run grim");
        assert!(status.success(), "grim: {status}");
        crate::pattern::read_png(&png)
    }

    /// The application id of every window sway holds, from its IPC tree
    /// (`swaymsg -t get_tree`), in the tree's order.
    pub fn windows(&self) -> Vec<String> {
        let run = self.socket.parent().unwrap();
        let ipc = std::fs::read_dir(run)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.starts_with("sway-ipc.") && name.ends_with(".sock")
            })
            .expect("sway's IPC socket");
        let out = Command::new("swaymsg")
            .arg("-s")
            .arg(&ipc)
            .args(["-r", "-t", "get_tree"])
            .output()
            .expect("run swaymsg");
        assert!(out.status.success(), "swaymsg: {}", out.status);
        let tree = String::from_utf8_lossy(&out.stdout);
        let key = "\"app_id\": \"";
        tree.match_indices(key)
            .filter_map(|(at, _)| {
                let rest = &tree[at + key.len()..];
                rest.find('"').map(|end| rest[..end].to_string())
            })
            .collect()
    }

    /// Sets sway's clipboard to `text`, as a host application would
    /// (`wl-copy`, which serves it from the background until the clipboard
    /// changes or sway ends).
    pub fn copy(&self, text: &str) {
        let status = self
            .client("wl-copy")
            .arg(text)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run wl-copy");
        assert!(status.success(), "wl-copy: {status}");
    }

    /// What sway's clipboard holds, as a host application reads it
    /// (`wl-paste`), or None when it holds nothing.
    pub fn paste(&self) -> Option<String> {
        let out = self
            .client("timeout")
            .args(["20", "wl-paste", "--no-newline"])
            .output()
            .expect("run wl-paste");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A pointer on sway's seat, for an output of `extent` pixels.
    pub fn pointer(&self, extent: (u32, u32)) -> Pointer {
        let stream = std::os::unix::net::UnixStream::connect(&self.socket).expect("sway's socket");
        let conn = Connection::from_socket(stream).expect("a Wayland connection to sway");
        let (globals, queue) = registry_queue_init::<PointerState>(&conn).expect("sway's globals");
        let qh = queue.handle();
        let seat: WlSeat = globals.bind(&qh, 1..=1, ()).expect("sway has a seat");
        let manager: ZwlrVirtualPointerManagerV1 = globals
            .bind(&qh, 1..=2, ())
            .expect("sway offers zwlr_virtual_pointer_manager_v1");
        let pointer = manager.create_virtual_pointer(Some(&seat), &qh, ());
        let mut pointer = Pointer {
            queue,
            pointer,
            extent,
            started: Instant::now(),
        };
        pointer
            .queue
            .roundtrip(&mut PointerState)
            .expect("sway answers");
        pointer
    }

    /// Types `text` into the focused window, as a keyboard would (`wtype`).
    ///
    /// The headless seat has no keyboard until wtype makes its virtual one;
    /// a client then binds `wl_keyboard` when the seat's capabilities say
    /// so, and keys sent before that reach no one. Through the guest proxy
    /// that round trip is long enough to lose the first keys (seen with
    /// `WAYLAND_DEBUG`: the terminal bound its keyboard after them), so
    /// wtype waits a second after making its keyboard, as a keyboard that
    /// was there before the typing would be.
    pub fn type_text(&self, text: &str) {
        self.keys(&[text]);
    }

    /// Runs `wtype` with `args` (after the same second's wait as
    /// [`Sway::type_text`]): `-M ctrl -k v -m ctrl` presses Ctrl+V.
    pub fn keys(&self, args: &[&str]) {
        let status = self
            .client("wtype")
            .args(["-s", "1000"])
            .args(args)
            .status()
            .expect("run wtype");
        assert!(status.success(), "wtype: {status}");
    }
}

/// A pointer on sway's seat, through the wlr virtual-pointer protocol:
/// the headless backend has no pointer of its own, so this one makes the
/// seat's pointer capability, as a mouse plugged in would (kept as long as
/// this lives, so clients bind it once).
pub struct Pointer {
    queue: wayland_client::EventQueue<PointerState>,
    pointer: ZwlrVirtualPointerV1,
    /// The output's size: absolute motion is given in it.
    extent: (u32, u32),
    started: Instant,
}

/// [`Pointer`]'s dispatch: none of its objects has events it needs.
pub struct PointerState;

impl Dispatch<WlRegistry, GlobalListContents> for PointerState {
    fn event(
        _: &mut Self,
        _: &WlRegistry,
        _: wayland_client::protocol::wl_registry::Event,
        _: &GlobalListContents,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
    }
}

wayland_client::delegate_noop!(PointerState: ignore WlSeat);
wayland_client::delegate_noop!(PointerState: ZwlrVirtualPointerManagerV1);
wayland_client::delegate_noop!(PointerState: ZwlrVirtualPointerV1);

/// Linux's BTN_LEFT.
pub const BUTTON_LEFT: u32 = 0x110;

impl Pointer {
    fn time(&self) -> u32 {
        self.started.elapsed().as_millis() as u32
    }

    /// Moves the pointer to (x, y) on the output.
    pub fn move_to(&mut self, x: u32, y: u32) {
        let t = self.time();
        self.pointer
            .motion_absolute(t, x, y, self.extent.0, self.extent.1);
        self.pointer.frame();
        self.queue
            .roundtrip(&mut PointerState)
            .expect("sway answers");
    }

    /// Presses and releases `button` where the pointer is.
    pub fn click(&mut self, button: u32) {
        for state in [ButtonState::Pressed, ButtonState::Released] {
            let t = self.time();
            self.pointer.button(t, button, state);
            self.pointer.frame();
            self.queue
                .roundtrip(&mut PointerState)
                .expect("sway answers");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// weston with its headless backend, on a private socket in a private
/// runtime directory.
pub struct Weston {
    child: Child,
    pub socket: PathBuf,
    _dir: TempDir,
}

impl Weston {
    /// Starts weston, or None (after saying so loudly) where it is not
    /// installed.
    pub fn start() -> Option<Weston> {
        Weston::start_with(&[])
    }

    /// weston with `extra` arguments (`--debug`, which lets
    /// `weston-screenshooter` take screenshots).
    pub fn start_with(extra: &[&str]) -> Option<Weston> {
        let installed = Command::new("weston")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !installed {
            crate::guest::cannot_run(
                "the Wayland tests need weston (apt-get install weston; .ci/run does)",
            );
            return None;
        }
        let dir = TempDir::new("weston");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o700)).unwrap();
        let socket = dir.0.join("wayland-airlock");
        // A screen that changes only when a client draws: the panel's clock
        // ticking between two screenshots once made a test see a window
        // from the clock's corner to the window's (454x482 for 250x250);
        // no fades either.
        let config = dir.0.join("weston.ini");
        std::fs::write(
            &config,
            "[shell]\nclock-format=none\nstartup-animation=none\nclose-animation=none\n",
        )
        .unwrap();
        let mut weston = Command::new("weston");
        let command = dies_with_parent(&mut weston);
        command
            .args([
                "--backend=headless-backend.so",
                "--socket=wayland-airlock",
                "--idle-time=0",
            ])
            .arg(format!("--config={}", config.display()))
            .args(extra)
            .env("XDG_RUNTIME_DIR", &dir.0);
        let child = spawn_headless(command, "weston");
        wait_for_socket("weston", || socket.exists().then(|| socket.clone()));
        Some(Weston {
            child,
            socket,
            _dir: dir,
        })
    }

    pub fn arg(&self) -> String {
        self.socket.display().to_string()
    }

    /// The whole output as RGB rows, from `weston-screenshooter` (weston
    /// must run with `--debug`): (width, height, pixels).
    pub fn screenshot(&self) -> (usize, usize, Vec<u8>) {
        let dir = TempDir::new("screenshot");
        let status = Command::new("weston-screenshooter")
            .current_dir(&dir.0)
            .env("XDG_RUNTIME_DIR", self.socket.parent().unwrap())
            .env("WAYLAND_DISPLAY", &self.socket)
            .status()
            .expect("run weston-screenshooter");
        assert!(status.success(), "weston-screenshooter: {status}");
        let png = std::fs::read_dir(&dir.0)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "png"))
            .expect("weston-screenshooter wrote a PNG");
        crate::pattern::read_png(&png)
    }

    /// The compositor goes away.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Weston {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Wayland message: object, opcode, arguments.
pub fn wl_msg(object: u32, opcode: u16, args: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + args.len());
    v.extend_from_slice(&object.to_le_bytes());
    v.extend_from_slice(&(((8 + args.len() as u32) << 16) | u32::from(opcode)).to_le_bytes());
    v.extend_from_slice(args);
    v
}

/// A Wayland string argument.
pub fn wl_string(s: &str) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(s.len() as u32 + 1).to_le_bytes());
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}

/// One event: object, opcode, arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WlEvent {
    pub object: u32,
    pub opcode: u16,
    pub args: Vec<u8>,
}

impl WlEvent {
    pub fn u32_at(&self, i: usize) -> u32 {
        u32::from_le_bytes(self.args[i..i + 4].try_into().unwrap())
    }

    /// The string argument starting at byte `i`.
    pub fn string_at(&self, i: usize) -> String {
        let len = self.u32_at(i) as usize;
        String::from_utf8_lossy(&self.args[i + 4..i + 4 + len.saturating_sub(1)]).into_owned()
    }
}

/// Splits a byte stream into Wayland messages.
pub fn wl_parse(mut bytes: &[u8]) -> Vec<WlEvent> {
    let mut out = Vec::new();
    while bytes.len() >= 8 {
        let object = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
        let word = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
        let size = (word >> 16) as usize;
        if size < 8 || size > bytes.len() {
            break;
        }
        out.push(WlEvent {
            object,
            opcode: (word & 0xffff) as u16,
            args: bytes[8..size].to_vec(),
        });
        bytes = &bytes[size..];
    }
    out
}

/// A cross-domain SEND of `data` with `identifiers` (id, type), saying
/// it carries `count` of them (a test may say more than it carries).
pub fn cross_domain_send(data: &[u8], identifiers: &[(u32, u32)], count: u32) -> Vec<u8> {
    use vm_memory::ByteValued;
    let mut send = wire::cross_domain::SendReceive {
        hdr: wire::cross_domain::header(CROSS_DOMAIN_CMD_SEND, SEND_RECEIVE_HEADER + data.len())
            .expect("a SEND that fits its 16-bit size"),
        num_identifiers: count.into(),
        opaque_data_size: (data.len() as u32).into(),
        ..Default::default()
    };
    for (i, (id, ty)) in identifiers.iter().enumerate().take(28) {
        send.identifiers[i] = (*id).into();
        send.identifier_types[i] = (*ty).into();
    }
    let mut v = send.as_slice().to_vec();
    v.extend_from_slice(data);
    v
}

/// Creates cross-domain context `ctx` with its query ring (resource
/// `query`, at [`RING_AT`]) and channel ring (`channel`, at [`CHANNEL_AT`])
/// and sends INIT with the Wayland channel, which connects render-worker
/// to the compositor. The first answer that is not RESP_OK_NODATA
/// (CTX_CREATE's, say, past `--max-contexts`), else INIT's.
pub fn open_channel(dev: &mut Device, ctx: u32, query: u32, channel: u32) -> u32 {
    let answer = |dev: &mut Device, r: &[u8]| {
        let (_, resp) = dev.control(r, 64);
        parse_hdr(&resp).0
    };
    let create = answer(dev, &ctx_create(ctx, CAPSET_CROSS_DOMAIN, "wayland"));
    if create != RESP_OK_NODATA {
        return create;
    }
    for (id, at) in [(query, RING_AT), (channel, CHANNEL_AT)] {
        assert_eq!(
            answer(
                dev,
                &create_blob(0, id, BLOB_MEM_GUEST, 0, 0, 4096, &[(at, 4096)])
            ),
            RESP_OK_NODATA
        );
        assert_eq!(
            answer(
                dev,
                &words(hdr(CMD_CTX_ATTACH_RESOURCE, ctx, None), &[id, 0])
            ),
            RESP_OK_NODATA
        );
    }
    let init = cross_domain(
        1,
        &[query, channel, CROSS_DOMAIN_CHANNEL_TYPE_WAYLAND],
        &[0; 16],
    );
    answer(dev, &submit(ctx, &init, None))
}

/// The guest's end of one cross-domain Wayland channel on context [`CTX`].
pub struct WaylandChannel {
    next_fence: u64,
}

impl WaylandChannel {
    /// Creates the context and its two rings and sends INIT; the answer's
    /// response type (RESP_OK_NODATA when the compositor was reached).
    pub fn open(dev: &mut Device) -> (WaylandChannel, u32) {
        let code = open_channel(dev, CTX, QUERY_RING, CHANNEL_RING);
        (WaylandChannel { next_fence: 100 }, code)
    }

    /// Sends Wayland bytes (and blobs as descriptors); the response type.
    pub fn send(&mut self, dev: &mut Device, data: &[u8], blobs: &[u32]) -> u32 {
        let ids: Vec<(u32, u32)> = blobs
            .iter()
            .map(|b| (*b, CROSS_DOMAIN_ID_TYPE_VIRTGPU_BLOB))
            .collect();
        let request = submit(CTX, &cross_domain_send(data, &ids, ids.len() as u32), None);
        let (_, resp) = dev.control(&request, 64);
        parse_hdr(&resp).0
    }

    /// POLLs, fenced on the channel ring, and returns what the compositor
    /// sent: None if the fence did not signal within `timeout`.
    pub fn receive(&mut self, dev: &mut Device, timeout: Duration) -> Option<Vec<u8>> {
        let poll = self.next_poll();
        let (_, resp) = dev.control_within(&poll, 64, timeout)?;
        assert_eq!(parse_hdr(&resp).0, RESP_OK_NODATA, "POLL answered");
        Some(Self::received(dev))
    }

    /// Makes a POLL available (descriptors [`POLL_HEAD`] and the one
    /// after) without waiting for it. A guest proxy keeps one in flight
    /// (gpu-airlock-guest and sommelier do), so the compositor's answer
    /// signals it as soon as it comes; [`WaylandChannel::receive_posted`]
    /// waits for it. Only unfenced requests may go on the control queue
    /// meanwhile, with [`Device::control`] (head 0).
    pub fn post_poll(&mut self, dev: &mut Device) {
        let poll = self.next_poll();
        let (req, resp) = (DATA_BASE + 0x30_000, DATA_BASE + 0x31_000);
        dev.mem.write_slice(&poll, GuestAddress(req)).unwrap();
        let descs = [
            (req, poll.len() as u32, VRING_DESC_F_NEXT, POLL_HEAD + 1),
            (resp, 64, VRING_DESC_F_WRITE, 0),
        ];
        dev.controlq
            .push_raw(&dev.mem, POLL_HEAD, &descs, POLL_HEAD);
    }

    /// Waits for the POLL [`WaylandChannel::post_poll`] made available and
    /// returns what the compositor sent: None if it did not signal within
    /// `timeout`.
    pub fn receive_posted(&mut self, dev: &mut Device, timeout: Duration) -> Option<Vec<u8>> {
        let (id, _) = dev.controlq.wait_used(&dev.mem, timeout)?;
        assert_eq!(id, u32::from(POLL_HEAD), "the used entry is the POLL's");
        let mut hdr = [0u8; 24];
        dev.mem
            .read_slice(&mut hdr, GuestAddress(DATA_BASE + 0x31_000))
            .unwrap();
        assert_eq!(parse_hdr(&hdr).0, RESP_OK_NODATA, "POLL answered");
        Some(Self::received(dev))
    }

    /// The next POLL, fenced on the channel ring.
    fn next_poll(&mut self) -> Vec<u8> {
        self.next_fence += 1;
        submit(
            CTX,
            &cross_domain(3, &[0, 0], &[]),
            Some((self.next_fence, Some(1))),
        )
    }

    /// What the channel ring holds after a POLL signalled: a RECEIVE's data.
    fn received(dev: &Device) -> Vec<u8> {
        let mut ring = vec![0u8; 4096];
        dev.mem
            .read_slice(&mut ring, GuestAddress(CHANNEL_AT))
            .unwrap();
        let receive: wire::cross_domain::SendReceive =
            wire::cross_domain::read(&ring).expect("a ring of 4 KiB");
        assert_eq!(
            receive.hdr.cmd, CROSS_DOMAIN_CMD_RECEIVE,
            "the channel ring holds a RECEIVE"
        );
        let size = receive.opaque_data_size.to_native() as usize;
        ring[SEND_RECEIVE_HEADER..SEND_RECEIVE_HEADER + size].to_vec()
    }

    /// Receives until an event satisfies `done`; returns every event.
    pub fn receive_until(
        &mut self,
        dev: &mut Device,
        done: impl Fn(&WlEvent) -> bool,
    ) -> Vec<WlEvent> {
        let mut events = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !events.iter().any(&done) {
            assert!(Instant::now() < deadline, "no such event: {events:?}");
            let bytes = self
                .receive(dev, Duration::from_secs(10))
                .expect("the compositor answered");
            events.extend(wl_parse(&bytes));
        }
        events
    }
}
