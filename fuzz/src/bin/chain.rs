//! `cargo afl fuzz ... target/debug/fuzz-chain`: see [`gpu_airlock_fuzz::chain`].
fn main() {
    afl::fuzz!(|data: &[u8]| gpu_airlock_fuzz::chain(data));
}
