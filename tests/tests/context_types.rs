//! `--context-types`: the guest is offered exactly the capsets of the
//! context types named (crosvm's names), a type the render-worker was not
//! built with stops the device at start with one line saying how to get
//! it, and cross-domain without a compositor is refused.

use std::time::Duration;

use harness::blob_wire::*;
use harness::*;

#[test]
fn cross_domain_named_is_the_one_capset_offered() {
    let socket = UnservedSocket::new();
    let backend = Backend::start(&[
        "--wayland-socket",
        &socket.arg(),
        "--context-types",
        "cross-domain",
    ]);
    assert!(backend
        .log
        .wait_for(
            &["ready on", "context types cross-domain"],
            Duration::from_secs(5)
        )
        .is_some());
    let mut dev = Device::connect(&backend.socket);
    assert_eq!(dev.num_capsets(), 1);
    let (_, info) = dev.control(&words(hdr(CMD_GET_CAPSET_INFO, 0, None), &[0, 0]), 64);
    assert_eq!(parse_hdr(&info).0, RESP_OK_CAPSET_INFO);
    let capset_id = u32::from_le_bytes(info[24..28].try_into().unwrap());
    assert_eq!(capset_id, CAPSET_CROSS_DOMAIN);
    assert_eq!(
        code(&mut dev, &words(hdr(CMD_GET_CAPSET_INFO, 0, None), &[1, 0])),
        RESP_ERR_INVALID_PARAMETER,
        "no second capset"
    );
}

/// A 3D context type on a render-worker built without virglrenderer (the
/// workspace's default build): the device does not start, and the log says
/// what to build.
#[test]
fn a_context_type_this_build_lacks_stops_the_device_with_one_line() {
    for types in ["virgl", "venus", "virgl2:cross-domain"] {
        let socket = UnservedSocket::new();
        let mut backend =
            Backend::try_start(&["--wayland-socket", &socket.arg(), "--context-types", types]);
        let status = backend
            .wait_exit(Duration::from_secs(20))
            .expect("the broker exits");
        assert!(!status.success(), "--context-types {types}");
        assert!(
            backend
                .log
                .wait_for(
                    &["built without the", "--features virgl"],
                    Duration::from_secs(5)
                )
                .is_some(),
            "--context-types {types}: {:#?}",
            backend.log.lines()
        );
        assert!(!backend.log.lines().iter().any(|l| l.contains("ready on")));
    }
}

#[test]
fn cross_domain_without_a_compositor_is_refused_at_start() {
    let mut cmd = std::process::Command::new(binary("gpu-airlock"));
    let dir = TempDir::new("no-compositor");
    let socket = dir.0.join("gpu.sock");
    cmd.arg("--socket-path")
        .arg(&socket)
        .args(["--context-types", "cross-domain"])
        .env_remove("XDG_RUNTIME_DIR");
    let mut backend = Backend::spawn(cmd, dir, socket);
    let status = backend
        .wait_exit(Duration::from_secs(10))
        .expect("the broker exits");
    assert!(!status.success());
    assert!(
        backend
            .log
            .wait_for(
                &["--context-types cross-domain needs a compositor"],
                Duration::from_secs(5)
            )
            .is_some(),
        "{:#?}",
        backend.log.lines()
    );
    // And a name that is no context type is bad input (exit 2).
    let out = std::process::Command::new(binary("gpu-airlock"))
        .args([
            "--socket-path",
            "/nonexistent/x.sock",
            "--context-types",
            "virgl:gl",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'gl' is not a context type"), "{err}");
}
