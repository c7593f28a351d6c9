//! The command line, kept apart from everything else so that the man page
//! is rendered from the same definition (clap_mangen, in this module's
//! test, which keeps packaging/gpu-airlock.1 current).

use std::os::fd::RawFd;
use std::path::PathBuf;

use clap::Parser;
use ipc::{ScanoutSize, SeccompMode};

use crate::config::{self, parse_scanout};

/// A jailed vhost-user virtio-gpu device backend.
///
/// Serves one virtio-gpu device to a vhost-user front-end such as QEMU's
/// `-device vhost-user-gpu-pci,chardev=...` or crosvm's
/// `--vhost-user type=gpu,socket=...`. Three processes: this broker (owns
/// the socket), gpu-worker (reads the virtqueues) and render-worker (holds
/// GPU and Wayland descriptors), started from binaries installed beside
/// this one.
#[derive(Parser, Debug)]
#[command(name = "gpu-airlock", version, about, long_about = None)]
#[command(after_help = "Logs go to stderr; set RUST_LOG=debug for more.\n\
Example: gpu-airlock --socket-path /run/gpu.sock --display 1920x1080")]
pub struct Args {
    /// Listen for the front-end on this Unix socket path (created; an old
    /// socket file there is replaced).
    #[arg(long, value_name = "PATH", conflicts_with = "fd")]
    pub socket_path: Option<PathBuf>,

    /// Serve the front-end on this Unix stream socket descriptor instead of
    /// --socket-path: a listening one is served as --socket-path is; a
    /// connected one (QEMU's backend-program convention; libvirt hands one
    /// end of a socket pair) is the one front-end, and gpu-airlock exits 0
    /// when it disconnects. Under systemd, LISTEN_FDS takes its place.
    #[arg(long, value_name = "N")]
    pub fd: Option<RawFd>,

    /// Print this backend's capabilities as JSON (QEMU's vhost-user backend
    /// program convention) and exit.
    #[arg(long)]
    pub print_capabilities: bool,

    /// Add a scanout of this size. Repeat for more scanouts (at most 16);
    /// default: one 1280x800 scanout.
    #[arg(long = "display", value_name = "WIDTHxHEIGHT", value_parser = parse_scanout)]
    pub displays: Vec<ScanoutSize>,

    /// Namespaces, an empty root and landlock for every process
    /// (namespace), or none of them (none; debugging, or a kernel that
    /// permits none of them).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = SandboxArg::Namespace)]
    pub sandbox: SandboxArg,

    /// What a syscall outside a process's seccomp policy gets: kill the
    /// process (SIGSYS), trap (log the syscall's name, then exit), log (the
    /// kernel logs it and lets it run), or none (no filter; debugging only).
    #[arg(long, value_enum, value_name = "ACTION", default_value_t = SeccompArg::Kill)]
    pub seccomp: SeccompArg,

    /// Most memory, in MiB, that all of a guest's 2D resources may take
    /// together; a guest asking for more gets VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY.
    /// The default fits two 3840x2160 frames and more, as QEMU's 256 MiB.
    #[arg(long, value_name = "MIB", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub max_resource_memory: u64,

    /// Most contexts a guest may have at once (each is a rutabaga context;
    /// a cross-domain one also a thread and a compositor connection in
    /// render-worker); past it CTX_CREATE gets ERR_OUT_OF_MEMORY. The
    /// default is far past what a desktop guest makes (one per Wayland
    /// client and GL program).
    #[arg(long, value_name = "N", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(ipc::MAX_CONTEXTS)))]
    pub max_contexts: u32,

    /// Size of the host-visible shared memory region (shmid 1) that blob
    /// resources are mapped into, with a K, M or G suffix (like crosvm's
    /// default, 8G). Offered to front-ends that negotiate SHMEM. A power
    /// of two from 4K to 1024G: QEMU 11 needs whole pages and crosvm
    /// rounds up to a power of two, so this is the size both give the
    /// guest. 0 offers no region (and no SHMEM): the guest then copies
    /// through transfers; virgl on a host without a GPU needs that, as
    /// virglrenderer gives llvmpipe's memory no descriptor to map.
    #[arg(long, value_name = "SIZE", default_value = "8G", value_parser = config::parse_size)]
    pub shm_size: u64,

    /// The Wayland compositor's socket that guests reach through
    /// cross-domain contexts (capset 5, offered only with a socket).
    /// Default: $XDG_RUNTIME_DIR/$WAYLAND_DISPLAY when both are set and it
    /// exists. render-worker sees this one socket in its empty root and
    /// nothing else of the host's filesystem.
    #[arg(long, value_name = "PATH")]
    pub wayland_socket: Option<PathBuf>,

    /// The context types the guest is offered, colon-separated, with
    /// crosvm's names: virgl, virgl2, venus (3D: a render-worker built with
    /// the `virgl` feature), cross-domain (Wayland windows: needs a
    /// compositor socket). The device offers exactly their capsets.
    /// Default: cross-domain when there is a compositor socket, else none.
    #[arg(long, value_name = "TYPES", value_parser = wire::ContextTypes::parse)]
    pub context_types: Option<wire::ContextTypes>,

    /// Directory holding gpu-airlock-gpu-worker and
    /// gpu-airlock-render-worker; default: the directory of this binary,
    /// else ../libexec/gpu-airlock/ beside it (where the package installs
    /// them).
    #[arg(long, value_name = "DIR")]
    pub worker_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxArg {
    Namespace,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SeccompArg {
    Kill,
    Trap,
    Log,
    None,
}

impl From<SeccompArg> for SeccompMode {
    fn from(a: SeccompArg) -> Self {
        match a {
            SeccompArg::Kill => SeccompMode::Kill,
            SeccompArg::Trap => SeccompMode::Trap,
            SeccompArg::Log => SeccompMode::Log,
            SeccompArg::None => SeccompMode::None,
        }
    }
}

/// The man page: clap_mangen's rendering of [`Args`] (name, synopsis,
/// description, options), then the sections an operator needs.
#[cfg(test)]
fn man_page() -> String {
    use clap::CommandFactory;
    use roff::{bold, italic, roman, Roff};
    let man = clap_mangen::Man::new(Args::command()).date("2026-12");
    let mut out = Vec::new();
    man.render_title(&mut out).unwrap();
    man.render_name_section(&mut out).unwrap();
    man.render_synopsis_section(&mut out).unwrap();
    man.render_description_section(&mut out).unwrap();
    man.render_options_section(&mut out).unwrap();
    let mut page = Roff::new();
    let section = |page: &mut Roff, title: &str, paragraphs: &[&str]| {
        page.control("SH", [title]);
        for (i, p) in paragraphs.iter().enumerate() {
            if i > 0 {
                page.control("PP", []);
            }
            page.text([roman(*p)]);
        }
    };
    let example = |page: &mut Roff, what: &str, lines: &[&str]| {
        page.control("TP", []);
        page.text([italic(what)]);
        page.control("nf", []);
        for l in lines {
            page.text([roman(*l)]);
            page.control("br", []);
        }
        page.control("fi", []);
    };
    section(
        &mut page,
        "SANDBOX",
        &[
            "gpu-airlock runs as three processes: the broker (this program), which owns the \
             vhost-user socket and every request to the VMM; gpu-worker, which alone reads the \
             virtqueues and guest memory; and render-worker, which alone holds the compositor \
             (Wayland) socket and GPU descriptors. Each enters new user, mount, net and ipc \
             namespaces, an empty read-only root, landlock rules that refuse every file access, \
             drops every capability, sets no_new_privs and installs its own seccomp filter \
             (the thread that parses guest descriptor chains a tighter one still). minijail is \
             not used: nix, caps, landlock and seccompiler do its jobs.",
            "--sandbox none leaves out the namespaces, the empty root and landlock (a kernel \
             that forbids unprivileged user namespaces); --seccomp trap names a syscall \
             outside a policy instead of killing the process.",
        ],
    );
    section(
        &mut page,
        "LIMITS",
        &[
            "Every host allocation a guest causes counts against a limit: --max-resource-memory \
             (2D resources and guest-memory blobs), --max-contexts, --shm-size (the \
             host-visible region blobs are mapped into). A guest past a limit gets \
             VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY or the code the virtio-gpu specification \
             gives, and the device keeps running.",
            "At start gpu-airlock raises its soft descriptor and thread limits to the hard \
             ones (the workers inherit them). Each cross-domain context holds up to 8 \
             descriptors and a thread in render-worker; where the hard limit is too low for \
             --max-contexts, the cap is lowered to what it allows and one warning says so \
             (raise LimitNOFILE= in the unit to keep it).",
        ],
    );
    section(
        &mut page,
        "SYSTEMD",
        &[
            "gpu-airlock@.socket listens on /run/gpu-airlock/VM.sock and starts \
             gpu-airlock@VM.service, which receives the socket through LISTEN_FDS (no \
             --socket-path or --fd then), sends READY=1 once the device serves and \
             STOPPING=1 when SIGTERM ends it. Options for one VM go in \
             /etc/gpu-airlock/VM.conf as GPU_AIRLOCK_OPTS.",
        ],
    );
    section(
        &mut page,
        "LOGS",
        &[
            "Logs go to stderr, filtered by RUST_LOG (default info). When stderr is the \
             journal (JOURNAL_STREAM), each line carries its syslog priority and no timestamp, \
             so journalctl -p warning shows the guest commands that were refused.",
        ],
    );
    section(
        &mut page,
        "EXIT STATUS",
        &[
            "0: stopped by SIGTERM or SIGINT, or the one front-end given with --fd (a \
             connected socket) disconnected. 1: a worker died or broke the protocol, or the \
             jail could not be set up (the log names which). 2: bad command line or a wrong \
             front-end socket (not a socket, not a Unix stream socket, LISTEN_FDS for another \
             process, two of --socket-path, --fd and LISTEN_FDS at once).",
        ],
    );
    page.control("SH", ["EXAMPLES"]);
    example(
        &mut page,
        "QEMU 10 (vhost-user-gpu-pci, 2D with its display)",
        &[
            "gpu-airlock --socket-path /run/gpu.sock &",
            "qemu-system-x86_64 -object memory-backend-memfd,id=mem,size=2G,share=on \\",
            "  -machine memory-backend=mem -chardev socket,id=gpu,path=/run/gpu.sock \\",
            "  -device vhost-user-gpu-pci,chardev=gpu ...",
        ],
    );
    example(
        &mut page,
        "QEMU 11 (generic vhost-user device: blobs and cross-domain Wayland)",
        &[
            "gpu-airlock --socket-path /run/gpu.sock --wayland-socket $XDG_RUNTIME_DIR/wayland-0 &",
            "qemu-system-x86_64 ... -chardev socket,id=gpu,path=/run/gpu.sock \\",
            "  -device vhost-user-device-pci,chardev=gpu,virtio-id=16,num_vqs=2,vq_size=256 ...",
        ],
    );
    example(
        &mut page,
        "libvirt (finds gpu-airlock through /usr/share/qemu/vhost-user/50-gpu-airlock.json)",
        &[
            "<video><model type='virtio'/><driver name='vhostuser'/></video>",
            "with <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>",
        ],
    );
    example(
        &mut page,
        "crosvm",
        &[
            "gpu-airlock --socket-path /run/gpu.sock &",
            "crosvm run --vhost-user type=gpu,socket=/run/gpu.sock ...",
        ],
    );
    example(
        &mut page,
        "systemd",
        &["systemctl enable --now gpu-airlock@vm1.socket"],
    );
    section(
        &mut page,
        "FILES",
        &[
            "/usr/libexec/gpu-airlock/ holds gpu-airlock-gpu-worker and \
             gpu-airlock-render-worker (--worker-dir overrides). \
             /usr/share/qemu/vhost-user/50-gpu-airlock.json is the descriptor libvirt reads.",
        ],
    );
    page.control("SH", ["SEE ALSO"]);
    page.text([
        bold("qemu-system-x86_64"),
        roman("(1), "),
        bold("systemd.socket"),
        roman("(5)"),
    ]);
    let mut text = String::from_utf8(out).unwrap();
    text.push_str(&page.to_roff());
    text
}

#[cfg(test)]
mod tests {
    /// packaging/gpu-airlock.1 is what this command line renders to.
    #[test]
    fn the_packaged_man_page_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/gpu-airlock.1");
        let want = super::man_page();
        if std::env::var_os("GPU_AIRLOCK_BLESS").is_some() {
            std::fs::write(path, &want).unwrap();
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "{path} is stale: run GPU_AIRLOCK_BLESS=1 cargo test -p gpu-airlock"
        );
    }
}
