//! `cargo afl fuzz ... target/debug/fuzz-cross-domain`: see [`gpu_airlock_fuzz::cross_domain`].
fn main() {
    afl::fuzz!(|data: &[u8]| gpu_airlock_fuzz::cross_domain(data));
}
