//! fv: Ferrovisor's command-line interface. See the crate docs (`lib.rs`).

#![forbid(unsafe_code)]

fn main() {
    let mut argv = Vec::new();
    for a in std::env::args_os().skip(1) {
        match a.into_string() {
            Ok(s) => argv.push(s),
            Err(bad) => {
                eprintln!("fv: argument {} is not UTF-8", bad.to_string_lossy());
                std::process::exit(2);
            }
        }
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = fv::run::main_with(argv, &mut out) {
        eprintln!("fv: {}", e.chain());
        std::process::exit(e.exit_code());
    }
}
