#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fv_virtio_fuzz::fuzz_chain(data));
