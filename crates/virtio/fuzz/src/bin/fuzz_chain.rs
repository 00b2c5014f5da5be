//! `fuzz_chain [ITERATIONS] [SEED]` or `fuzz_chain --replay FILE`: random inputs on stable.

fn main() {
    fv_virtio_fuzz::runner::main("fuzz_chain", fv_virtio_fuzz::fuzz_chain);
}
