//! Every input of the seed corpus (and every crash AFL++ found, once
//! fixed and added there) through each target, under plain `cargo test`:
//! the corpus stays meaningful and a fixed crash stays fixed.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        run(&data);
        count += 1;
    }
    assert!(count > 0, "{} has no seeds", dir.display());
}

#[test]
fn chain_corpus() {
    replay("chain", gpu_airlock_fuzz::chain);
}

#[test]
fn ipc_frame_corpus() {
    replay("ipc_frame", gpu_airlock_fuzz::ipc_frame);
}

#[test]
fn cross_domain_corpus() {
    replay("cross_domain", gpu_airlock_fuzz::cross_domain);
}

#[test]
fn device_corpus() {
    replay("device", gpu_airlock_fuzz::device);
}
