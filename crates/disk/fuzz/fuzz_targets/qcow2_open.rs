//! libFuzzer target: the input is an image file, opened through `open_disk` (probed and as
//! qcow2, read-only and read-write) and used; nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static HARNESS: OnceLock<fv_disk_fuzz::Harness> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    HARNESS
        .get_or_init(|| fv_disk_fuzz::Harness::new().expect("set up the fuzz directory"))
        .run(data);
});
