//! render-worker is started by the broker with its channels at fds 3 and 4;
//! started any other way it must refuse, clearly and without a panic.

use std::process::Command;

#[test]
fn refuses_to_run_without_its_channels() {
    let out = Command::new(env!("CARGO_BIN_EXE_gpu-airlock-render-worker"))
        .output()
        .expect("run render-worker");
    assert_eq!(out.status.code(), Some(1), "a clean failure, not a crash");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not by hand"), "says why: {err}");
    assert!(!err.contains("panicked"), "{err}");
}
