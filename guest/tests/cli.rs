//! `gpu-airlock-guest` as a user starts it, on the host (no virtio-gpu
//! here: a client that connects is turned away, which is what such a
//! client must see). The proxy's relay itself is tested in a real guest by
//! `tests/tests/guest_wayland.rs`.

use std::io::Read;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PROXY: &str = env!("CARGO_BIN_EXE_gpu-airlock-guest");

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("airlock-guest-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(runtime: &Path, args: &[&str]) -> Child {
    Command::new(PROXY)
        .args(args)
        .env("XDG_RUNTIME_DIR", runtime)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gpu-airlock-guest")
}

fn wait_for_socket(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(path).is_err() {
        assert!(
            Instant::now() < deadline,
            "{} is not served",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop(mut child: Child) -> (i32, String) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code().unwrap_or(-1), err)
}

#[test]
fn without_a_runtime_directory_or_with_a_path_for_a_name_it_says_so_and_exits_2() {
    let out = Command::new(PROXY)
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("XDG_RUNTIME_DIR is not set"));
    let dir = Dir::new("name");
    let out = Command::new(PROXY)
        .args(["--socket", "a/b", "--device", "/nonexistent"])
        .env("XDG_RUNTIME_DIR", &dir.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--socket takes a name"));
}

/// Serves its socket, turns away a client it has no channel for (no
/// virtio-gpu here) and keeps serving, and on SIGTERM removes the socket
/// and exits 0; started again it serves again.
#[test]
fn it_serves_its_socket_turns_away_what_it_cannot_carry_and_stops_cleanly() {
    let dir = Dir::new("serve");
    let socket = dir.0.join("wayland-7");
    for _ in 0..2 {
        let child = start(
            &dir.0,
            &["--socket", "wayland-7", "--device", "/nonexistent"],
        );
        wait_for_socket(&socket);
        for _ in 0..2 {
            let mut client = UnixStream::connect(&socket).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut buf = [0u8; 16];
            assert_eq!(
                client.read(&mut buf).unwrap(),
                0,
                "the client is disconnected"
            );
        }
        let (code, err) = stop(child);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("no channel to the host's compositor"), "{err}");
        assert!(err.contains("stopping"), "{err}");
        assert!(!socket.exists(), "the socket is removed");
    }
}

/// A socket left by a proxy that died is replaced; one that is served is
/// not taken over.
#[test]
fn a_stale_socket_is_replaced_and_a_served_one_is_left_alone() {
    let dir = Dir::new("stale");
    let socket = dir.0.join("wayland-0");
    drop(UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let child = start(&dir.0, &["--device", "/nonexistent"]);
    wait_for_socket(&socket);
    let out = Command::new(PROXY)
        .args(["--device", "/nonexistent"])
        .env("XDG_RUNTIME_DIR", &dir.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is served by another process"));
    let (code, err) = stop(child);
    assert_eq!(code, 0, "{err}");
}
