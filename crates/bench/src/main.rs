//! fv-bench: measures fv-vmm next to QEMU in the same run and prints ratios, since these
//! machines are too noisy for absolute figures to mean much.
//!
//!   fv-bench host    start-up CPU/wall time and memory overhead, on the host's own KVM
//!   fv-bench boot    Linux boot time to init, in the emulated AMD-V host
//!   fv-bench all     both

mod boot;
mod host;
mod procfs;
mod stats;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "fv-bench",
    about = "Benchmarks fv-vmm against QEMU in the same run"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start-up time (CPU and wall ms to API ready) and memory overhead, on the host.
    Host {
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// Linux boot time to init, fv-vmm vs QEMU microvm, in the emulated host.
    Boot {
        #[arg(long, default_value_t = 5)]
        runs: usize,
        #[arg(long, default_value_t = 1)]
        vcpus: u32,
        #[arg(long, default_value_t = 256)]
        memory: u32,
    },
    /// Both.
    All {
        #[arg(long, default_value_t = 20)]
        host_runs: usize,
        #[arg(long, default_value_t = 5)]
        boot_runs: usize,
    },
    /// (internal) The boot benchmark's inner half, run inside the emulated host.
    #[command(hide = true)]
    BootInside {
        #[arg(long)]
        runs: usize,
        #[arg(long)]
        vcpus: u32,
        #[arg(long)]
        memory: u32,
        #[arg(long)]
        fv_vmm: PathBuf,
        #[arg(long)]
        bzimage: PathBuf,
        #[arg(long)]
        vmlinux: PathBuf,
        #[arg(long)]
        initrd: PathBuf,
    },
}

/// The fv-vmm built alongside this binary (same profile).
fn fv_vmm() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe.with_file_name("fv-vmm");
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: build it first (cargo build --release -p fv-vmm)",
            path.display()
        ))
    }
}

fn park_guest() -> Result<PathBuf, String> {
    let out = std::env::temp_dir().join(format!("fv-bench-guests-{}", std::process::id()));
    fv_testhost::build_tiny_guest("park", &out).map_err(|e| e.to_string())
}

fn host(runs: usize) -> Result<(), String> {
    let guest = park_guest()?;
    let result = host::run(&fv_vmm()?, &guest, runs);
    if let Some(dir) = guest.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

fn main() {
    let result = match Cli::parse().command {
        Cmd::Host { runs } => host(runs),
        Cmd::Boot {
            runs,
            vcpus,
            memory,
        } => fv_vmm().and_then(|f| boot::run(&f, runs, vcpus, memory)),
        Cmd::All {
            host_runs,
            boot_runs,
        } => host(host_runs).and_then(|_| {
            println!();
            boot::run(&fv_vmm()?, boot_runs, 1, 256)
        }),
        Cmd::BootInside {
            runs,
            vcpus,
            memory,
            fv_vmm,
            bzimage,
            vmlinux,
            initrd,
        } => boot::inside(
            &boot::Images {
                fv_vmm,
                bzimage,
                vmlinux,
                initrd,
            },
            runs,
            vcpus,
            memory,
        ),
    };
    if let Err(e) = result {
        eprintln!("fv-bench: {e}");
        std::process::exit(1);
    }
}
