//! The broker's command line as a user meets it.

use std::process::Command;

fn broker() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gpu-airlock"))
}

#[test]
fn print_capabilities_follows_qemus_convention() {
    let out = broker().arg("--print-capabilities").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("\"type\": \"gpu\""), "{text}");
    assert!(text.contains("\"edid\""), "{text}");
}

#[test]
fn help_names_every_option() {
    let out = broker().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for opt in [
        "--socket-path",
        "--fd",
        "--display",
        "--print-capabilities",
        "--worker-dir",
    ] {
        assert!(help.contains(opt), "--help mentions {opt}");
    }
}

#[test]
fn missing_socket_is_a_clear_error() {
    let out = broker().output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--socket-path"), "says what to give: {err}");
}

#[test]
fn bad_display_and_bad_fd_are_refused() {
    let out = broker()
        .args(["--socket-path", "/nonexistent/x.sock", "--display", "0x600"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("0x600"));

    let out = broker().args(["--fd", "0"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a socket"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = broker()
        .args([
            "--socket-path",
            "/tmp/unused.sock",
            "--worker-dir",
            "/nonexistent",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--worker-dir"));
}

/// Runs the broker with `fd` as descriptor 3 and `args`; returns its exit
/// code and stderr.
fn with_fd_3(fd: &impl std::os::fd::AsRawFd, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    use std::os::unix::process::CommandExt;
    let raw = fd.as_raw_fd();
    let mut cmd = broker();
    cmd.args(args).envs(env.iter().copied());
    // SAFETY: dup2 is async-signal-safe; the child gets the descriptor at
    // 3 without close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            // Through a copy above 3: dup2 onto itself would keep
            // close-on-exec.
            let copy = nix::libc::fcntl(raw, nix::libc::F_DUPFD, 10);
            if copy < 0 || nix::libc::dup2(copy, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Each way of naming the front-end socket wrongly is bad input: one line
/// that names the option, exit status 2, and nothing left behind.
#[test]
fn a_wrong_front_end_socket_is_one_line_and_exit_2() {
    let file = std::fs::File::open("/proc/self/exe").unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let datagram = std::os::unix::net::UnixDatagram::unbound().unwrap();
    let stream = std::os::unix::net::UnixStream::pair().unwrap().0;
    let dir = std::env::temp_dir().join(format!("gpu-airlock-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("left-behind.sock");
    let socket_arg = socket.to_str().unwrap();
    let cases: Vec<(i32, String, &str)> = vec![
        {
            let (c, e) = with_fd_3(&file, &["--fd", "3"], &[]);
            (c, e, "--fd 3 is not a socket")
        },
        {
            let (c, e) = with_fd_3(&udp, &["--fd", "3"], &[]);
            (c, e, "--fd 3 is not a Unix socket (family Inet)")
        },
        {
            let (c, e) = with_fd_3(&datagram, &["--fd", "3"], &[]);
            (c, e, "--fd 3 is a Datagram socket, not a stream socket")
        },
        {
            let (c, e) = with_fd_3(&stream, &[], &[("LISTEN_FDS", "1"), ("LISTEN_PID", "1")]);
            (c, e, "LISTEN_FDS is meant for process 1")
        },
        {
            let (c, e) = with_fd_3(&file, &[], &[("LISTEN_FDS", "1"), ("LISTEN_PID", "1")]);
            (c, e, "LISTEN_FDS is meant for process 1")
        },
        {
            // Two ways at once: clap refuses --socket-path with --fd.
            let (c, e) = with_fd_3(&stream, &["--fd", "3", "--socket-path", socket_arg], &[]);
            (c, e, "--socket-path")
        },
    ];
    for (code, stderr, want) in cases {
        assert_eq!(code, 2, "{want}: {stderr}");
        assert!(stderr.contains(want), "want {want:?} in {stderr:?}");
        let lines = stderr.lines().filter(|l| !l.trim().is_empty()).count();
        // clap adds a usage line and a hint; ours are one line.
        assert!(
            lines == 1 || want == "--socket-path",
            "one line: {stderr:?}"
        );
    }
    assert!(!socket.exists(), "nothing left behind");
    let _ = std::fs::remove_dir_all(&dir);
}
