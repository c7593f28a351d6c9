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
