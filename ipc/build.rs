//! Derives a build identity from the source of this crate, so a broker and a
//! worker that were built from different message vocabularies refuse to talk
//! (see `Hello` in src/channel.rs).

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::Hasher;
use std::path::Path;

fn main() {
    let src = Path::new("src");
    let mut files: Vec<_> = fs::read_dir(src)
        .expect("ipc/src is readable")
        .map(|e| e.expect("ipc/src entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();

    // DefaultHasher is SipHash with fixed keys: the same bytes give the same
    // id for one toolchain, which is all a single build needs.
    let mut hasher = DefaultHasher::new();
    hasher.write(env!("CARGO_PKG_VERSION").as_bytes());
    for file in &files {
        hasher.write(file.to_string_lossy().as_bytes());
        hasher.write(&fs::read(file).expect("ipc source is readable"));
        println!("cargo:rerun-if-changed={}", file.display());
    }
    println!("cargo:rerun-if-changed=src");
    println!(
        "cargo:rustc-env=GPU_AIRLOCK_IPC_BUILD_ID={}-{:016x}",
        env!("CARGO_PKG_VERSION"),
        hasher.finish()
    );
}
