//! `cargo afl fuzz ... target/debug/fuzz-device`: see [`gpu_airlock_fuzz::device`].
fn main() {
    afl::fuzz!(|data: &[u8]| gpu_airlock_fuzz::device(data));
}
