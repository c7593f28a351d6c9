//! A vhost-user front-end for tests, built on the rust-vmm `vhost` crate's
//! `Frontend`: memfd guest memory, split virtqueues laid out in it as a
//! driver would, kick and call eventfds, and the real three-process backend
//! started from the workspace's binaries.
//!
//! Nothing here stands in for the backend: every test talks to the
//! `gpu-airlock` binary over its socket, exactly as a VMM does.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{fence, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use std::os::unix::net::UnixStream;
use vhost::vhost_user::message::{VhostUserHeaderFlag, VhostUserProtocolFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub use display::{DisplayConfig, DisplayPeer};
pub use gpu_wire::*;

pub mod blob_wire;
pub mod compositor;
pub mod display;
pub mod guest;
pub mod pattern;
pub mod shmem;
pub mod wayland;

/// Guest-side constants and layouts the tests build requests from.
pub mod gpu_wire {
    pub use gpu_worker::backend::device_features;
    pub use wire::{
        CMD_CTX_ATTACH_RESOURCE, CMD_CTX_CREATE, CMD_CTX_DESTROY, CMD_CTX_DETACH_RESOURCE,
        CMD_GET_CAPSET, CMD_GET_CAPSET_INFO, CMD_RESOURCE_ASSIGN_UUID, CMD_RESOURCE_CREATE_3D,
        CMD_RESOURCE_CREATE_BLOB, CMD_RESOURCE_MAP_BLOB, CMD_RESOURCE_UNMAP_BLOB,
        CMD_SET_SCANOUT_BLOB, CMD_SUBMIT_3D, CMD_TRANSFER_FROM_HOST_3D, CMD_TRANSFER_TO_HOST_3D,
        FLAG_INFO_RING_IDX, RESP_ERR_INVALID_CONTEXT_ID, RESP_OK_CAPSET, RESP_OK_CAPSET_INFO,
        RESP_OK_MAP_INFO, RESP_OK_RESOURCE_UUID,
    };
    pub use wire::{
        CMD_GET_DISPLAY_INFO, CMD_GET_EDID, CMD_MOVE_CURSOR, CMD_RESOURCE_ATTACH_BACKING,
        CMD_RESOURCE_CREATE_2D, CMD_RESOURCE_DETACH_BACKING, CMD_RESOURCE_FLUSH,
        CMD_RESOURCE_UNREF, CMD_SET_SCANOUT, CMD_TRANSFER_TO_HOST_2D, CMD_UPDATE_CURSOR,
        FLAG_FENCE, RESP_ERR_INVALID_PARAMETER, RESP_ERR_INVALID_RESOURCE_ID,
        RESP_ERR_INVALID_SCANOUT_ID, RESP_ERR_OUT_OF_MEMORY, RESP_ERR_UNSPEC, RESP_OK_DISPLAY_INFO,
        RESP_OK_EDID, RESP_OK_NODATA,
    };
    pub const F_EDID: u64 = 1 << wire::F_EDID;
    pub const F_VIRGL: u64 = 1 << wire::F_VIRGL;
    pub const F_RESOURCE_BLOB: u64 = 1 << wire::F_RESOURCE_BLOB;
    pub const F_RESOURCE_UUID: u64 = 1 << wire::F_RESOURCE_UUID;
    pub const F_CONTEXT_INIT: u64 = 1 << wire::F_CONTEXT_INIT;
    pub const F_VERSION_1: u64 = 1 << 32;
    pub const F_RING_EVENT_IDX: u64 = 1 << 29;
    pub const F_RING_INDIRECT_DESC: u64 = 1 << 28;
    pub const F_PROTOCOL_FEATURES: u64 = 1 << 30;

    /// A `virtio_gpu_ctrl_hdr`, as bytes.
    pub fn ctrl_hdr(type_: u32, flags: u32, fence_id: u64) -> Vec<u8> {
        use vm_memory::ByteValued;
        wire::CtrlHdr {
            type_: type_.into(),
            flags: flags.into(),
            fence_id: fence_id.into(),
            ..Default::default()
        }
        .as_slice()
        .to_vec()
    }

    /// A command: an unfenced header, then `body` as little-endian words.
    pub fn cmd(type_: u32, body: &[u32]) -> Vec<u8> {
        let mut v = ctrl_hdr(type_, 0, 0);
        for w in body {
            v.extend_from_slice(&w.to_le_bytes());
        }
        v
    }

    /// `type`, `flags` and `fence_id` of a response header.
    pub fn parse_hdr(resp: &[u8]) -> (u32, u32, u64) {
        use vm_memory::ByteValued;
        let mut hdr = wire::CtrlHdr::default();
        hdr.as_mut_slice().copy_from_slice(&resp[..24]);
        (
            hdr.type_.to_native(),
            hdr.flags.to_native(),
            hdr.fence_id.to_native(),
        )
    }
}

pub const VRING_DESC_F_NEXT: u16 = 1;
pub const VRING_DESC_F_WRITE: u16 = 2;

/// Size of the guest memory the harness gives the device.
pub const GUEST_MEM_SIZE: usize = 16 << 20;
/// Where request and response buffers start in guest memory.
pub const DATA_BASE: u64 = 1 << 20;
pub const QUEUE_SIZE: u16 = 64;

/// The directory holding the workspace's binaries for the running profile:
/// target/<profile>, whether this is a test or example (target/<profile>/deps/…,
/// …/examples/…) or a
/// benchmark binary (target/<profile>/…).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("own binary path");
    let dir = exe.parent().expect("a binary lives in a directory");
    if dir
        .file_name()
        .is_some_and(|n| n == "deps" || n == "examples")
    {
        dir.parent()
            .expect("deps lives in target/<profile>")
            .to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The binaries that run on the host inside the jail: the device's three
/// processes and the hostile stand-in for render-worker.
pub const HOST_PROCESS_BINARIES: [&str; 4] = [
    "gpu-airlock",
    "gpu-airlock-gpu-worker",
    "gpu-airlock-render-worker",
    "hostile-render-worker",
];

/// `GPU_AIRLOCK_BIN_DIR`: where the host processes' binaries are taken
/// from instead of the build's own directory; `tests/libc/suites` points it
/// at copies that load another Debian root's C library
/// (`tests/libc/relink`), so that the same suites prove the jail on it.
pub fn host_binary_dir() -> Option<PathBuf> {
    std::env::var_os("GPU_AIRLOCK_BIN_DIR").map(PathBuf::from)
}

pub fn binary(name: &str) -> PathBuf {
    let dir = match host_binary_dir() {
        Some(dir) if HOST_PROCESS_BINARIES.contains(&name) => dir,
        _ => target_dir(),
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds every binary",
        path.display()
    );
    path
}

/// Makes `fd` the child's descriptor 3, without FD_CLOEXEC. `fd` may be 3
/// itself (a test process with few descriptors open): dup2 onto itself
/// leaves FD_CLOEXEC set, and the child would find 3 closed (seen: a
/// flaky EBADF), so that case clears the flag instead.
pub fn give_fd_3(cmd: &mut Command, fd: std::os::fd::RawFd) {
    // SAFETY: dup2 and fcntl are async-signal-safe; the closure allocates
    // nothing.
    unsafe {
        cmd.pre_exec(move || {
            let done = if fd == 3 {
                nix::libc::fcntl(3, nix::libc::F_SETFD, 0)
            } else {
                nix::libc::dup2(fd, 3)
            };
            if done < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Lines a process wrote to stderr, collected as they arrive.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Waits until a line containing every one of `needles` appears.
    pub fn wait_for(&self, needles: &[&str], timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self
                .lines()
                .into_iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return Some(l);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A running gpu-airlock broker and its workers.
pub struct Backend {
    pub child: Child,
    pub socket: PathBuf,
    pub log: Log,
    _dir: TempDir,
}

/// A private directory under /tmp, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let mut random = [0u8; 8];
        use std::io::Read;
        File::open("/dev/urandom")
            .unwrap()
            .read_exact(&mut random)
            .unwrap();
        let path = std::env::temp_dir().join(format!(
            "gpu-airlock-{tag}-{}-{:016x}",
            std::process::id(),
            u64::from_le_bytes(random)
        ));
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

impl Backend {
    /// Starts `gpu-airlock --socket-path … <extra>` and waits until it says
    /// it is ready.
    pub fn start(extra: &[&str]) -> Backend {
        let backend = Backend::try_start(extra);
        backend.wait_ready();
        backend
    }

    /// Waits until the broker says it is ready (20 s at most), or fails
    /// the test with its log.
    pub fn wait_ready(&self) {
        assert!(
            self.log
                .wait_for(&["ready on"], Duration::from_secs(20))
                .is_some(),
            "gpu-airlock did not become ready; log: {:#?}",
            self.log.lines()
        );
    }

    /// Starts `gpu-airlock --socket-path … <extra>` without waiting for it
    /// (for tests of what it refuses at start).
    pub fn try_start(extra: &[&str]) -> Backend {
        let dir = TempDir::new("backend");
        let socket = dir.0.join("gpu.sock");
        let mut cmd = Command::new(binary("gpu-airlock"));
        cmd.arg("--socket-path").arg(&socket).args(extra);
        Backend::spawn(cmd, dir, socket)
    }

    /// Starts gpu-airlock as libvirt does: one end of a socket pair as
    /// `--fd 3`, the other returned, already connected.
    pub fn start_on_connected_fd(extra: &[&str]) -> (Backend, UnixStream) {
        let dir = TempDir::new("backend");
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut cmd = Command::new(binary("gpu-airlock"));
        cmd.args(["--fd", "3"]).args(extra);
        give_fd_3(&mut cmd, theirs.as_raw_fd());
        let socket = dir.0.join("none");
        let backend = Backend::spawn(cmd, dir, socket);
        drop(theirs);
        assert!(
            backend
                .log
                .wait_for(
                    &["ready on the socket it was given"],
                    Duration::from_secs(20)
                )
                .is_some(),
            "gpu-airlock started on the connected fd: {:#?}",
            backend.log.lines()
        );
        (backend, ours)
    }

    /// Starts `cmd` (a gpu-airlock command line, perhaps behind a
    /// launcher) with the harness's logging, without waiting for it.
    pub fn spawn(mut cmd: Command, dir: TempDir, socket: PathBuf) -> Backend {
        // For writing policies: GPU_AIRLOCK_TEST_SECCOMP=trap names the
        // syscall a filter refused.
        // A test that chooses its own --seccomp keeps it.
        if let Some(mode) = std::env::var_os("GPU_AIRLOCK_TEST_SECCOMP") {
            if !cmd.get_args().any(|a| a == "--seccomp") {
                cmd.arg("--seccomp").arg(mode);
            }
        }
        // GPU_AIRLOCK_TEST_LOG (debug, say) when a test needs more.
        let level = std::env::var("GPU_AIRLOCK_TEST_LOG").unwrap_or_else(|_| "info".into());
        cmd.env("RUST_LOG", level)
            // The compositor is always the test's choice (--wayland-socket).
            .env_remove("WAYLAND_DISPLAY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        dies_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("start gpu-airlock");
        let log = Log::default();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[backend] {line}");
                sink.0.lock().unwrap().push(line);
            }
        });
        Backend {
            child,
            socket,
            log,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The broker's children: (gpu-worker pid, render-worker pid).
    pub fn worker_pids(&self) -> (u32, u32) {
        let children = fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.pid()))
            .expect("read the broker's children");
        let mut gpu = None;
        let mut render = None;
        for pid in children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            // comm is cut to 15 characters: "gpu-airlock-gpu", "gpu-airlock-ren".
            if comm.starts_with("gpu-airlock-gpu") {
                gpu = Some(pid);
            } else if comm.starts_with("gpu-airlock-ren") {
                render = Some(pid);
            }
        }
        (
            gpu.expect("gpu-worker is running"),
            render.expect("render-worker is running"),
        )
    }

    /// Waits for the broker to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Open descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Targets of a process's open descriptors.
pub fn fd_targets(pid: u32) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| fs::read_link(e.ok()?.path()).ok())
                .map(|p| p.to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie still has a /proc entry; it is not alive.
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// A listening Unix socket nobody serves: enough for `--wayland-socket`
/// where a test only needs the cross-domain capset (channel type 0 never
/// connects). Tests that talk Wayland start weston instead.
pub struct UnservedSocket {
    _listener: std::os::unix::net::UnixListener,
    pub path: PathBuf,
    _dir: TempDir,
}

impl UnservedSocket {
    pub fn new() -> UnservedSocket {
        let dir = TempDir::new("unserved-socket");
        let path = dir.0.join("wayland-test");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        UnservedSocket {
            _listener: listener,
            path,
            _dir: dir,
        }
    }

    /// `--wayland-socket PATH`, for Backend::start.
    pub fn arg(&self) -> String {
        self.path.display().to_string()
    }
}

impl Default for UnservedSocket {
    fn default() -> Self {
        UnservedSocket::new()
    }
}

/// Makes a process started with `cmd` die with the thread that starts it,
/// even where Drop never runs (a benchmark built with panic = "abort"
/// that panics, a test killed by a timeout).
pub fn dies_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe; nothing else runs in the child
    // before exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        })
    }
}

/// Guest memory in a memfd, mapped here as the VMM maps it.
pub fn guest_memory() -> GuestMemoryMmap {
    guest_memory_of(GUEST_MEM_SIZE)
}

/// Guest memory of `size` bytes in a memfd.
pub fn guest_memory_of(size: usize) -> GuestMemoryMmap {
    let fd = nix::sys::memfd::memfd_create(
        "gpu-airlock-guest-ram",
        nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
    )
    .expect("memfd_create");
    let file = File::from(fd);
    file.set_len(size as u64).unwrap();
    GuestMemoryMmap::from_ranges_with_files(&[(
        GuestAddress(0),
        size,
        Some(FileOffset::new(file, 0)),
    )])
    .expect("map guest memory")
}

/// One split virtqueue as the driver sees it.
pub struct DriverQueue {
    pub index: usize,
    pub size: u16,
    pub desc: GuestAddress,
    pub avail: GuestAddress,
    pub used: GuestAddress,
    pub kick: EventFd,
    pub call: EventFd,
    next_avail: u16,
    last_used: u16,
}

impl DriverQueue {
    fn new(index: usize, base: GuestAddress, size: u16) -> DriverQueue {
        let desc = base;
        let avail = GuestAddress(desc.0 + 16 * u64::from(size));
        // The used ring is 4-byte aligned; start it on its own page.
        let used = GuestAddress((avail.0 + 6 + 2 * u64::from(size) + 4095) & !4095);
        DriverQueue {
            index,
            size,
            desc,
            avail,
            used,
            kick: EventFd::new(EFD_NONBLOCK).unwrap(),
            call: EventFd::new(EFD_NONBLOCK).unwrap(),
            next_avail: 0,
            last_used: 0,
        }
    }

    /// Writes raw descriptors starting at table index `first` and makes
    /// descriptor `head` available. Returns nothing: the caller wrote what
    /// it meant, sound or not.
    pub fn push_raw(
        &mut self,
        mem: &GuestMemoryMmap,
        first: u16,
        descs: &[(u64, u32, u16, u16)],
        head: u16,
    ) {
        for (i, (addr, len, flags, next)) in descs.iter().enumerate() {
            let at = self.desc.0 + 16 * u64::from(first + i as u16);
            mem.write_obj(*addr, GuestAddress(at)).unwrap();
            mem.write_obj(*len, GuestAddress(at + 8)).unwrap();
            mem.write_obj(*flags, GuestAddress(at + 12)).unwrap();
            mem.write_obj(*next, GuestAddress(at + 14)).unwrap();
        }
        let slot = self.next_avail % self.size;
        mem.write_obj(head, GuestAddress(self.avail.0 + 4 + 2 * u64::from(slot)))
            .unwrap();
        // used_event (EVENT_IDX): ask to be notified for the next used entry.
        mem.write_obj(
            self.last_used,
            GuestAddress(self.avail.0 + 4 + 2 * u64::from(self.size)),
        )
        .unwrap();
        // The ring entry must be visible before the index that publishes it.
        fence(Ordering::SeqCst);
        self.next_avail = self.next_avail.wrapping_add(1);
        mem.write_obj(self.next_avail, GuestAddress(self.avail.0 + 2))
            .unwrap();
        fence(Ordering::SeqCst);
        self.kick.write(1).unwrap();
    }

    /// Waits for the next used entry: (descriptor id, length).
    pub fn wait_used(&mut self, mem: &GuestMemoryMmap, timeout: Duration) -> Option<(u32, u32)> {
        let deadline = Instant::now() + timeout;
        loop {
            fence(Ordering::SeqCst);
            let used_idx: u16 = mem.read_obj(GuestAddress(self.used.0 + 2)).unwrap();
            if used_idx != self.last_used {
                let slot = self.last_used % self.size;
                let elem = self.used.0 + 4 + 8 * u64::from(slot);
                let id: u32 = mem.read_obj(GuestAddress(elem)).unwrap();
                let len: u32 = mem.read_obj(GuestAddress(elem + 4)).unwrap();
                self.last_used = self.last_used.wrapping_add(1);
                return Some((id, len));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            // SAFETY: `self.call` owns the descriptor and outlives this poll.
            let call = unsafe { BorrowedFd::borrow_raw(self.call.as_raw_fd()) };
            let mut fds = [PollFd::new(call, PollFlags::POLLIN)];
            let ms = left.as_millis().min(100) as u16;
            let _ = poll(&mut fds, PollTimeout::from(ms));
            let _ = self.call.read();
        }
    }

    /// Used entries the device has published so far.
    pub fn used_idx(&self, mem: &GuestMemoryMmap) -> u16 {
        fence(Ordering::SeqCst);
        mem.read_obj(GuestAddress(self.used.0 + 2)).unwrap()
    }
}

/// What the harness negotiated.
pub struct Negotiated {
    pub features: u64,
    pub protocol_features: VhostUserProtocolFeatures,
}

/// A connected front-end with guest memory and both queues running.
pub struct Device {
    pub frontend: Frontend,
    /// The same connection, for the one request `Frontend` lacks
    /// (VHOST_USER_GPU_SET_SOCKET).
    raw: UnixStream,
    /// The front-end's end of the back-end request channel.
    backend_channel: Option<OwnedFd>,
    pub mem: GuestMemoryMmap,
    pub controlq: DriverQueue,
    pub cursorq: DriverQueue,
    pub negotiated: Negotiated,
    /// The host-visible region, when the back-end offered SHMEM.
    pub shmem: Option<Arc<shmem::HostVisibleRegion>>,
}

impl Device {
    /// Closes the front-end's end of the back-end request channel while
    /// the connection and its queues go on, as QEMU's vhost-user teardown
    /// does before the back-end has answered the guest's last commands.
    pub fn close_backend_channel(&mut self) {
        let fd = self
            .backend_channel
            .take()
            .expect("a back-end request channel");
        nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Both)
            .expect("shut the channel down");
    }

    /// `virtio_gpu_config.num_capsets`, read with GET_CONFIG as QEMU does.
    pub fn num_capsets(&mut self) -> u32 {
        use vhost::vhost_user::message::VhostUserConfigFlags;
        let (_, config) = self
            .frontend
            .get_config(0, 16, VhostUserConfigFlags::WRITABLE, &[0u8; 16])
            .expect("GET_CONFIG");
        u32::from_le_bytes(config[12..16].try_into().expect("4 bytes"))
    }

    /// Connects and sets the device up the way QEMU does: owner, features,
    /// protocol features, memory table, then each vring.
    pub fn connect(socket: &Path) -> Device {
        Device::connect_with_memory(socket, GUEST_MEM_SIZE)
    }

    /// As [`Device::connect`], with `mem_size` bytes of guest memory.
    pub fn connect_with_memory(socket: &Path, mem_size: usize) -> Device {
        Device::connect_as(socket, mem_size, true)
    }

    /// As [`Device::connect`], as QEMU 10 does: the back-end request
    /// channel, but no SHMEM (no host-visible region to map blobs into).
    pub fn connect_without_shmem(socket: &Path) -> Device {
        Device::connect_as(socket, GUEST_MEM_SIZE, false)
    }

    fn connect_as(socket: &Path, mem_size: usize, want_shmem: bool) -> Device {
        let stream = UnixStream::connect(socket).expect("connect to gpu-airlock");
        Device::over(stream, mem_size, want_shmem)
    }

    /// As [`Device::connect`], over a socket already connected to the
    /// back-end (a socket pair, as libvirt hands one end to each side).
    pub fn over(stream: UnixStream, mem_size: usize, want_shmem: bool) -> Device {
        let raw = stream.try_clone().unwrap();
        let mut frontend = Frontend::from_stream(stream, 2);
        frontend.set_owner().unwrap();
        let offered = frontend.get_features().unwrap();
        // As Linux's driver: every feature it knows that the device offers.
        let features = offered
            & (F_VERSION_1
                | F_EDID
                | F_RING_EVENT_IDX
                | F_RING_INDIRECT_DESC
                | F_PROTOCOL_FEATURES
                | F_VIRGL
                | F_RESOURCE_BLOB
                | F_RESOURCE_UUID
                | F_CONTEXT_INIT);
        frontend.set_features(features).unwrap();
        let offered_proto = frontend.get_protocol_features().unwrap();
        let mut wanted = VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::RESET_DEVICE
            | VhostUserProtocolFeatures::BACKEND_REQ
            | VhostUserProtocolFeatures::BACKEND_SEND_FD
            | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS;
        if want_shmem {
            wanted |= VhostUserProtocolFeatures::SHMEM;
        }
        let proto = offered_proto & wanted;
        frontend.set_protocol_features(proto).unwrap();
        frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        // As crosvm's front-end: learn the region's size, reserve it, and
        // serve the back-end's map requests into it.
        let shmem = proto.contains(VhostUserProtocolFeatures::SHMEM).then(|| {
            let config = frontend.get_shmem_config().expect("GET_SHMEM_CONFIG");
            let size = config.memory_sizes[1];
            assert!(config.nregions >= 2 && size > 0, "shmid 1 has a size");
            shmem::HostVisibleRegion::reserve(size)
        });
        let mut backend_channel = None;
        if proto.contains(VhostUserProtocolFeatures::BACKEND_REQ) {
            let (mut handler, fd) = shmem::serve(shmem.clone());
            // SAFETY: `fd` is the handler's own socket, open while it lives.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            frontend
                .set_backend_request_fd(&borrowed)
                .expect("SET_BACKEND_REQ_FD");
            // SAFETY: the handler's receiving socket, open while it lives;
            // duplicated, so the copy outlives it.
            let ours = unsafe { BorrowedFd::borrow_raw(handler.as_raw_fd()) };
            backend_channel = Some(ours.try_clone_to_owned().expect("dup the channel"));
            thread::spawn(move || while handler.handle_request().is_ok() {});
        }

        let mem = guest_memory_of(mem_size);
        let regions: Vec<VhostUserMemoryRegionInfo> = mem
            .iter()
            .map(|r| VhostUserMemoryRegionInfo::from_guest_region(r).unwrap())
            .collect();
        frontend.set_mem_table(&regions).unwrap();
        if let Some(region) = &shmem {
            let slots = proto.contains(VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS);
            region.send_mem_tables(frontend.clone(), regions.clone(), slots);
        }

        let mut controlq = DriverQueue::new(0, GuestAddress(0), QUEUE_SIZE);
        let mut cursorq = DriverQueue::new(1, GuestAddress(0x10_000), QUEUE_SIZE);
        for q in [&mut controlq, &mut cursorq] {
            start_queue(&mut frontend, &mem, q);
        }
        Device {
            frontend,
            raw,
            backend_channel,
            mem,
            controlq,
            cursorq,
            negotiated: Negotiated {
                features,
                protocol_features: proto,
            },
            shmem,
        }
    }

    /// As [`Device::connect`], then gives the device a display socket whose
    /// other end `display` serves, as QEMU does on DRIVER_OK.
    pub fn connect_with_display(socket: &Path, config: DisplayConfig) -> (Device, DisplayPeer) {
        let mut dev = Device::connect(socket);
        let peer = dev.set_display(config);
        (dev, peer)
    }

    /// Sends VHOST_USER_GPU_SET_SOCKET (33) with one end of a new socket
    /// pair; the returned display serves the other. The `vhost` crate's
    /// `Frontend` has no method for it, so the 12-byte header (request,
    /// flags = version 1, size 0) goes out here with the descriptor.
    pub fn set_display(&mut self, config: DisplayConfig) -> DisplayPeer {
        DisplayPeer::serve(self.set_display_socket(), config)
    }

    /// Sends VHOST_USER_GPU_SET_SOCKET as [`Device::set_display`] does and
    /// returns the front-end's end of the display socket, unserved: a
    /// display that never answers (a stalled VMM main loop).
    pub fn set_display_socket(&mut self) -> UnixStream {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut hdr = Vec::with_capacity(12);
        for word in [33u32, 0x1, 0] {
            hdr.extend_from_slice(&word.to_ne_bytes());
        }
        let fds = [theirs.as_raw_fd()];
        sendmsg::<()>(
            self.raw.as_raw_fd(),
            &[std::io::IoSlice::new(&hdr)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .expect("send VHOST_USER_GPU_SET_SOCKET");
        // SET_SOCKET has no reply; a request that has one shows the device
        // has taken it (requests are handled in order), as QEMU's own
        // SET_FEATURES and vring set-up that follow it do.
        self.frontend
            .get_features()
            .expect("GET_FEATURES after SET_SOCKET");
        ours
    }

    /// Resets the device as QEMU does on a virtio reset (a guest reboot):
    /// VHOST_USER_RESET_DEVICE, then the start sequence again — features,
    /// memory table, and fresh rings, as the rebooted driver lays them out.
    pub fn reset(&mut self) {
        // The blobs' SHMEM_UNMAPs come while RESET_DEVICE waits for its
        // answer: the memory table follows once it has one.
        if let Some(region) = &self.shmem {
            region.hold_tables(true);
        }
        self.frontend.reset_device().expect("RESET_DEVICE");
        if let Some(region) = &self.shmem {
            region.hold_tables(false);
        }
        self.frontend
            .set_features(self.negotiated.features)
            .unwrap();
        let regions: Vec<VhostUserMemoryRegionInfo> = self
            .mem
            .iter()
            .map(|r| VhostUserMemoryRegionInfo::from_guest_region(r).unwrap())
            .collect();
        self.frontend.set_mem_table(&regions).unwrap();
        self.fresh_queues();
    }

    /// New rings where the rebooted driver lays them out, started at 0.
    fn fresh_queues(&mut self) {
        self.mem
            .write_slice(&[0u8; 0x20_000], GuestAddress(0))
            .unwrap();
        self.controlq = DriverQueue::new(0, GuestAddress(0), QUEUE_SIZE);
        self.cursorq = DriverQueue::new(1, GuestAddress(0x10_000), QUEUE_SIZE);
        for q in [&mut self.controlq, &mut self.cursorq] {
            start_queue(&mut self.frontend, &self.mem, q);
        }
    }

    /// Resets as QEMU 11's generic vhost-user device does at a guest
    /// reboot: it drops every mapping in the host-visible region itself,
    /// stops both rings (GET_VRING_BASE), and later starts them afresh at
    /// index 0, with no RESET_DEVICE.
    pub fn reset_without_reset_device(&mut self) {
        if let Some(region) = &self.shmem {
            region.drop_all();
        }
        for index in 0..2 {
            self.frontend.get_vring_base(index).unwrap();
        }
        self.frontend
            .set_features(self.negotiated.features)
            .unwrap();
        self.fresh_queues();
    }

    /// Stops both rings and starts them again where they stopped, as QEMU
    /// does around a VM pause: no reset.
    pub fn pause_and_resume(&mut self) {
        let mut bases = Vec::new();
        for index in 0..2 {
            bases.push(self.frontend.get_vring_base(index).unwrap() as u16);
        }
        self.frontend
            .set_features(self.negotiated.features)
            .unwrap();
        for (q, base) in [&mut self.controlq, &mut self.cursorq]
            .into_iter()
            .zip(bases)
        {
            start_queue_at(&mut self.frontend, &self.mem, q, base);
        }
    }

    /// Sends a command that answers with a bare header; returns its type.
    pub fn answer(&mut self, request: &[u8]) -> u32 {
        let (len, resp) = self.control(request, 64);
        assert_eq!(len, 24, "a bare response header");
        parse_hdr(&resp).0
    }

    /// Sends `request` on the cursor queue (no response buffer: cursor
    /// commands have none) and waits until the device has used it.
    pub fn cursor(&mut self, request: &[u8]) {
        let req = DATA_BASE + 0x20_000;
        self.mem.write_slice(request, GuestAddress(req)).unwrap();
        let descs = [(req, request.len() as u32, 0, 0)];
        self.cursorq.push_raw(&self.mem, 0, &descs, 0);
        self.cursorq
            .wait_used(&self.mem, Duration::from_secs(10))
            .expect("the device used the cursor request");
    }

    /// As [`Device::control`], but None if the device has not answered
    /// within `timeout` (the chain stays with the device: do not reuse the
    /// queue for another request after that).
    pub fn control_within(
        &mut self,
        request: &[u8],
        resp_len: u32,
        timeout: Duration,
    ) -> Option<(u32, Vec<u8>)> {
        let (req, resp) = (DATA_BASE, DATA_BASE + 0x10_000);
        self.mem.write_slice(request, GuestAddress(req)).unwrap();
        self.mem
            .write_slice(&vec![0xaa; resp_len as usize], GuestAddress(resp))
            .unwrap();
        let descs = [
            (req, request.len() as u32, VRING_DESC_F_NEXT, 1),
            (resp, resp_len, VRING_DESC_F_WRITE, 0),
        ];
        self.controlq.push_raw(&self.mem, 0, &descs, 0);
        let (id, len) = self.controlq.wait_used(&self.mem, timeout)?;
        assert_eq!(id, 0, "used entry names the chain's head");
        let mut out = vec![0u8; resp_len as usize];
        self.mem.read_slice(&mut out, GuestAddress(resp)).unwrap();
        Some((len, out))
    }

    /// Sends `request` on the control queue with a `resp_len`-byte writable
    /// buffer; returns the used length and the response bytes.
    pub fn control(&mut self, request: &[u8], resp_len: u32) -> (u32, Vec<u8>) {
        self.control_within(request, resp_len, Duration::from_secs(10))
            .expect("the device answered on the control queue")
    }
}

fn start_queue(frontend: &mut Frontend, mem: &GuestMemoryMmap, q: &mut DriverQueue) {
    start_queue_at(frontend, mem, q, 0);
}

fn start_queue_at(frontend: &mut Frontend, mem: &GuestMemoryMmap, q: &mut DriverQueue, base: u16) {
    let host = |a: GuestAddress| mem.get_host_address(a).unwrap() as u64;
    frontend.set_vring_num(q.index, q.size).unwrap();
    frontend
        .set_vring_addr(
            q.index,
            &VringConfigData {
                queue_max_size: q.size,
                queue_size: q.size,
                flags: 0,
                desc_table_addr: host(q.desc),
                used_ring_addr: host(q.used),
                avail_ring_addr: host(q.avail),
                log_addr: None,
            },
        )
        .unwrap();
    frontend.set_vring_base(q.index, base).unwrap();
    frontend.set_vring_call(q.index, &q.call).unwrap();
    frontend.set_vring_kick(q.index, &q.kick).unwrap();
    frontend.set_vring_enable(q.index, true).unwrap();
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Some(region) = &self.shmem {
            region.stop_mem_tables();
        }
    }
}

/// Whether a process maps a file whose name contains `name`.
pub fn maps_memfd(pid: u32, name: &str) -> bool {
    fs::read_to_string(format!("/proc/{pid}/maps"))
        .map(|m| m.lines().any(|l| l.contains(name)))
        .unwrap_or(false)
}
