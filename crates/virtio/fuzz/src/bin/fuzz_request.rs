//! `fuzz_request [ITERATIONS] [SEED]` or `fuzz_request --replay FILE`: random inputs on stable.

fn main() {
    fv_virtio_fuzz::runner::main("fuzz_request", fv_virtio_fuzz::fuzz_request);
}
