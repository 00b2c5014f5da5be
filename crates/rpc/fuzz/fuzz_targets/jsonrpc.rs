#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fv_rpc_fuzz::fuzz_jsonrpc(data));
