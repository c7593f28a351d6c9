//! What this backend tells QEMU and libvirt it supports: the
//! `--print-capabilities` answer of QEMU's vhost-user backend program
//! conventions (`docs/interop/vhost-user.json`, type "gpu"), and the
//! descriptor installed in /usr/share/qemu/vhost-user/ that leads libvirt
//! to the binary. Both are built from here, and a test checks the
//! installed descriptor against it.

/// The gpu features of `docs/interop/vhost-user.json`
/// (`VHostUserBackendCapabilitiesGPU`) this backend has: EDID (GET_EDID,
/// answered from the display's modes). Not "virgl" (no 3D renderer in
/// this build) and not "render-node" (no GPU device is opened: libvirt
/// would pass `--render-node`).
pub const FEATURES: &[&str] = &["edid"];

/// The JSON `--print-capabilities` prints.
pub fn json() -> String {
    let features: Vec<String> = FEATURES.iter().map(|f| format!("    \"{f}\"")).collect();
    format!(
        "{{\n  \"type\": \"gpu\",\n  \"features\": [\n{}\n  ]\n}}\n",
        features.join(",\n")
    )
}

/// The descriptor for /usr/share/qemu/vhost-user/, naming `binary`
/// (written to packaging/ by the test below).
#[cfg(test)]
fn descriptor(binary: &str) -> String {
    format!(
        "{{\n  \"description\": \"gpu-airlock: a jailed virtio-gpu device (2D, blobs, cross-domain Wayland)\",\n  \"type\": \"gpu\",\n  \"binary\": \"{binary}\"\n}}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The descriptor the Debian package installs is the one built here.
    #[test]
    fn the_packaged_descriptor_is_current() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../packaging/50-gpu-airlock.json"
        );
        let want = descriptor("/usr/bin/gpu-airlock");
        if std::env::var_os("GPU_AIRLOCK_BLESS").is_some() {
            std::fs::write(path, &want).unwrap();
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert_eq!(
            have, want,
            "{path} is stale: run GPU_AIRLOCK_BLESS=1 cargo test -p gpu-airlock"
        );
    }
}
