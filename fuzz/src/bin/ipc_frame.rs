//! `cargo afl fuzz ... target/debug/fuzz-ipc-frame`: see [`gpu_airlock_fuzz::ipc_frame`].
fn main() {
    afl::fuzz!(|data: &[u8]| gpu_airlock_fuzz::ipc_frame(data));
}
