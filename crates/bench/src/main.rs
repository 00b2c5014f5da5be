//! fv-bench: measures fv-vmm (or a piece of it) next to a peer (QEMU, or plain syscalls) in
//! the same run and prints ratios, since these machines are too noisy for absolute figures
//! to mean much.
//!
//!   fv-bench host      start-up CPU/wall time and memory overhead, on the host's own KVM
//!   fv-bench boot      Linux boot time to init, in the emulated AMD-V host
//!   fv-bench blk       the virtio-blk request path against pread/pwrite, on the host
//!   fv-bench guest-io  disk and network throughput inside a Linux guest, in the emulated host
//!   fv-bench all       all of them

mod blk;
mod boot;
mod guest_io;
mod host;
mod procfs;
mod stats;
mod storage;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "fv-bench",
    about = "Benchmarks fv-vmm against a peer (QEMU, or plain syscalls) in the same run"
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
    /// The virtio-blk request path (guest memory, device model, image file) against
    /// pread/pwrite on the same file, on the host (no KVM).
    Blk {
        /// Rounds; each side runs once per round, in turn.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Wall time of each side in each round, ms.
        #[arg(long, default_value_t = 500)]
        round_ms: u64,
        /// Size of the image, MiB.
        #[arg(long, default_value_t = 256)]
        disk_mib: u64,
        /// Directory for the image (default: the temporary directory); not a tmpfs.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Leave out the qcow2 column.
        #[arg(long)]
        no_qcow2: bool,
        /// Only the workloads whose name contains this ("random", "sequential write"...).
        #[arg(long)]
        only: Option<String>,
    },
    /// Disk and TCP throughput inside a Linux guest, fv-vmm vs QEMU, in the emulated host.
    GuestIo {
        #[command(flatten)]
        opts: GuestIoArgs,
    },
    /// The storage driver (fv-sr): VDI.clone time against size, and VDI.copy against
    /// qemu-img convert of the same image
    Storage {
        /// Rounds of each measurement.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// MiB of data in the copied VDI.
        #[arg(long, default_value_t = 512)]
        data_mib: u64,
        /// Directory for the SRs (default: the temporary directory); not a tmpfs.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// All of them, with their default settings.
    All {
        #[arg(long, default_value_t = 20)]
        host_runs: usize,
        #[arg(long, default_value_t = 5)]
        boot_runs: usize,
    },
    /// (internal) The guest-io benchmark's inner half, run inside the emulated host.
    #[command(hide = true)]
    GuestIoInside {
        #[command(flatten)]
        opts: GuestIoArgs,
        #[arg(long)]
        fv_vmm: PathBuf,
        #[arg(long)]
        kernel: PathBuf,
        #[arg(long)]
        initrd: PathBuf,
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

#[derive(clap::Args)]
struct GuestIoArgs {
    /// Boots of the pair of VMs (both up at once, taking turns test by test).
    #[arg(long, default_value_t = 2)]
    boots: usize,
    /// Rounds of every test per boot.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds of each disk test in the guest.
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
    /// Size of the disk image (on a tmpfs in the emulated host), MiB.
    #[arg(long, default_value_t = 512)]
    disk_mib: u64,
    /// MiB the guest sends over TCP; 0 leaves the network out.
    #[arg(long, default_value_t = 64)]
    net_mib: u64,
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    #[arg(long, default_value_t = 256)]
    memory: u32,
}

impl GuestIoArgs {
    fn options(&self) -> guest_io::Options {
        guest_io::Options {
            boots: self.boots,
            rounds: self.rounds,
            secs: self.secs,
            disk_mib: self.disk_mib,
            net_mib: self.net_mib,
            vcpus: self.vcpus,
            memory_mib: self.memory,
        }
    }
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
        Cmd::Blk {
            rounds,
            round_ms,
            disk_mib,
            dir,
            no_qcow2,
            only,
        } => blk::run(&blk::Options {
            rounds,
            round_ms,
            disk_mib,
            dir,
            qcow2: !no_qcow2,
            only,
        }),
        Cmd::Storage {
            rounds,
            data_mib,
            dir,
        } => storage::run(&storage::Options {
            rounds,
            data_mib,
            dir,
        }),
        Cmd::All {
            host_runs,
            boot_runs,
        } => host(host_runs)
            .and_then(|_| {
                println!();
                boot::run(&fv_vmm()?, boot_runs, 1, 256)
            })
            .and_then(|_| {
                println!();
                blk::run(&blk::Options::default())
            })
            .and_then(|_| {
                println!();
                guest_io::run(&fv_vmm()?, &guest_io::Options::default())
            }),
        Cmd::GuestIo { opts } => fv_vmm().and_then(|f| guest_io::run(&f, &opts.options())),
        Cmd::GuestIoInside {
            opts,
            fv_vmm,
            kernel,
            initrd,
        } => guest_io::inside(
            &guest_io::Inside {
                fv_vmm,
                kernel,
                initrd,
            },
            &opts.options(),
        ),
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
