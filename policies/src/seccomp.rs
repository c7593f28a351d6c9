//! The seccomp layer: the BPF programs `build.rs` compiled from
//! `seccomp/*.json`, and the handler that names a trapped syscall.

use std::sync::atomic::{AtomicPtr, Ordering};

use ipc::SeccompMode;
use nix::libc;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use seccompiler::sock_filter;

include!(concat!(env!("OUT_DIR"), "/syscall_names.rs"));

/// The three processes, each with a policy of its own; render-worker with
/// a 3D context type adds what its GPU stack needs
/// (`seccomp/render-worker-gpu-stack.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Broker,
    GpuWorker,
    RenderWorker,
    RenderWorker3d,
    /// virglrenderer's render server (venus), started by render-worker
    /// before its own jail, in a jail of its own: render-worker-3d's policy
    /// and `seccomp/render-server.json` (its exec, a process per context).
    RenderServer,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Broker => "broker",
            Profile::GpuWorker => "gpu-worker",
            Profile::RenderWorker | Profile::RenderWorker3d => "render-worker",
            Profile::RenderServer => "render-server",
        }
    }
}

/// Exit status of a process that `--seccomp trap` caught: 128 + SIGSYS, as a
/// shell reports a death by SIGSYS.
pub const TRAP_EXIT_STATUS: i32 = 128 + libc::SIGSYS;

macro_rules! program_bytes {
    ($profile:literal, $flag:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/", $profile, "-", $flag, ".bpf"))
    };
}

fn program_bytes(profile: Profile, mode: SeccompMode) -> Option<&'static [u8]> {
    use Profile::*;
    use SeccompMode::*;
    Some(match (profile, mode) {
        (_, None) => return Option::None,
        (Broker, Kill) => program_bytes!("broker", "kill"),
        (Broker, Trap) => program_bytes!("broker", "trap"),
        (Broker, Log) => program_bytes!("broker", "log"),
        (GpuWorker, Kill) => program_bytes!("gpu-worker", "kill"),
        (GpuWorker, Trap) => program_bytes!("gpu-worker", "trap"),
        (GpuWorker, Log) => program_bytes!("gpu-worker", "log"),
        (RenderWorker, Kill) => program_bytes!("render-worker", "kill"),
        (RenderWorker, Trap) => program_bytes!("render-worker", "trap"),
        (RenderWorker, Log) => program_bytes!("render-worker", "log"),
        (RenderWorker3d, Kill) => program_bytes!("render-worker-3d", "kill"),
        (RenderWorker3d, Trap) => program_bytes!("render-worker-3d", "trap"),
        (RenderWorker3d, Log) => program_bytes!("render-worker-3d", "log"),
        (RenderServer, Kill) => program_bytes!("render-server", "kill"),
        (RenderServer, Trap) => program_bytes!("render-server", "trap"),
        (RenderServer, Log) => program_bytes!("render-server", "log"),
    })
}

/// The compiled filter of `profile` for `mode` (`None` for `SeccompMode::None`).
pub fn program(profile: Profile, mode: SeccompMode) -> Option<Vec<sock_filter>> {
    Some(decode(program_bytes(profile, mode)?))
}

/// The thread kinds with a filter of their own, tighter than their
/// process's: installed by the thread on itself once it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// vhost-user-backend's vring thread in gpu-worker: it parses every
    /// descriptor chain the guest posts.
    Vring,
}

/// The filter of thread kind `kind` for `mode`.
pub fn thread_program(kind: ThreadKind, mode: SeccompMode) -> Option<Vec<sock_filter>> {
    use SeccompMode::*;
    let bytes: &[u8] = match (kind, mode) {
        (_, None) => return Option::None,
        (ThreadKind::Vring, Kill) => program_bytes!("gpu-worker-vring", "kill"),
        (ThreadKind::Vring, Trap) => program_bytes!("gpu-worker-vring", "trap"),
        (ThreadKind::Vring, Log) => program_bytes!("gpu-worker-vring", "log"),
    };
    Some(decode(bytes))
}

/// The workers' threads filter (`seccomp/threads.json`): clone3 gets
/// ENOSYS, so glibc creates threads with clone, whose flags the worker's
/// policy pins. Installed before the policy (which has no `seccomp`).
pub fn threads_program(profile: Profile) -> Option<Vec<sock_filter>> {
    match profile {
        Profile::GpuWorker
        | Profile::RenderWorker
        | Profile::RenderWorker3d
        | Profile::RenderServer => Some(decode(include_bytes!(concat!(
            env!("OUT_DIR"),
            "/threads.bpf"
        )))),
        Profile::Broker => None,
    }
}

fn decode(bytes: &[u8]) -> Vec<sock_filter> {
    {
        bytes
            .chunks_exact(8)
            .map(|i| sock_filter {
                code: u16::from_ne_bytes([i[0], i[1]]),
                jt: i[2],
                jf: i[3],
                k: u32::from_ne_bytes([i[4], i[5], i[6], i[7]]),
            })
            .collect()
    }
}

/// The process name the trap handler prints, set once before the filter.
static TRAP_PROCESS: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());

/// Installs the SIGSYS handler that `--seccomp trap` relies on.
pub fn install_trap_handler(profile: Profile) -> nix::Result<()> {
    TRAP_PROCESS.store(profile.name().as_ptr().cast_mut(), Ordering::Relaxed);
    TRAP_PROCESS_LEN.store(profile.name().len(), Ordering::Relaxed);
    let action = SigAction::new(
        SigHandler::SigAction(on_sigsys),
        SaFlags::SA_SIGINFO,
        SigSet::empty(),
    );
    // SAFETY: the handler only reads its siginfo and static data, and calls
    // write(2) and _exit(2), which are async-signal-safe.
    unsafe { sigaction(Signal::SIGSYS, &action) }.map(|_| ())
}

static TRAP_PROCESS_LEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn write_stderr(bytes: &[u8]) {
    // SAFETY: writing a valid buffer to fd 2; the result is ignored because
    // nothing more can be done about a failed log line here.
    unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
}

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers; for
    // SIGSYS its union holds `_sigsys { void *_call_addr; int _syscall; ... }`
    // right after the three ints and padding of the header (offset 16), so
    // the syscall number sits at offset 24 on 64-bit Linux.
    let nr = unsafe { *(info as *const u8).add(24).cast::<libc::c_int>() };
    let name_ptr = TRAP_PROCESS.load(Ordering::Relaxed);
    let name_len = TRAP_PROCESS_LEN.load(Ordering::Relaxed);
    write_stderr(b"gpu-airlock: ");
    if !name_ptr.is_null() {
        // SAFETY: set from a &'static str in install_trap_handler.
        write_stderr(unsafe { std::slice::from_raw_parts(name_ptr, name_len) });
    }
    write_stderr(b": seccomp trapped a syscall outside its policy: ");
    match usize::try_from(nr).ok().and_then(|n| SYSCALL_NAMES.get(n)) {
        Some(name) if !name.is_empty() => write_stderr(name.as_bytes()),
        _ => write_stderr(b"(unknown)"),
    }
    write_stderr(b" (number ");
    let mut digits = [0u8; 12];
    let mut n = i64::from(nr).unsigned_abs();
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    write_stderr(&digits[at..]);
    write_stderr(b")\n");
    // SAFETY: _exit ends the process at once; exit_group is in every policy.
    unsafe { libc::_exit(TRAP_EXIT_STATUS) };
}
