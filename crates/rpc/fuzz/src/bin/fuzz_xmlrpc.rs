//! `fuzz_xmlrpc [ITERATIONS] [SEED]` or `fuzz_xmlrpc --replay FILE`: random inputs on stable.

fn main() {
    fv_rpc_fuzz::runner::main("fuzz_xmlrpc", fv_rpc_fuzz::fuzz_xmlrpc);
}
