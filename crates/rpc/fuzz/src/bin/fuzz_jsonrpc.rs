//! `fuzz_jsonrpc [ITERATIONS] [SEED]` or `fuzz_jsonrpc --replay FILE`: random inputs on stable.

fn main() {
    fv_rpc_fuzz::runner::main("fuzz_jsonrpc", fv_rpc_fuzz::fuzz_jsonrpc);
}
