//! `fv-testhost`: build the emulated host's artifacts and run commands inside it.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use fv_testhost::{ArtifactName, Artifacts, Error, RunOptions};

#[derive(Parser)]
#[command(
    about = "The emulated AMD-V host (QEMU TCG + nested KVM) for Ferrovisor's Linux-guest tests"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build missing artifacts and print their paths.
    Prepare,
    /// Print one artifact's path: host-kernel, host-initrd, guest-bzimage, guest-vmlinux, guest-initrd.
    Path { name: String },
    /// Run a command in the emulated host (cwd and paths as here); exit with its status.
    Run {
        /// Kill the emulated host after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// vCPUs of the emulated host.
        #[arg(long, default_value_t = 2)]
        smp: u32,
        /// Memory of the emulated host, MiB.
        #[arg(long, default_value_t = 2048)]
        memory: u32,
        /// Extra environment variable for the command (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Forward TCP port HOST on 127.0.0.1 here to port GUEST in the emulated host
        /// (repeatable), e.g. `--forward 8443:443`.
        #[arg(long = "forward", value_name = "HOST:GUEST")]
        forward: Vec<String>,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Build an ext4 image of SIZE_MIB MiB from the contents of DIR.
    Mkext4 {
        dir: PathBuf,
        image: PathBuf,
        size_mib: u64,
    },
    /// Fill DIR with what fvd's `--template-dir` wants: Debian's kernel (`vmlinuz`, the
    /// bzImage, whose KASLR the emulated host needs: docs/testhost.md), the
    /// guest initramfs (`initrd.img`) and a busybox root filesystem (`rootfs.img`).
    TemplateDir { dir: PathBuf },
    /// Boot the test guest with QEMU (microvm, KVM) inside the emulated host and time it.
    BootGuest {
        /// Use this initramfs instead of guest-initrd.
        #[arg(long)]
        initrd: Option<PathBuf>,
        /// Use this kernel instead of guest-bzimage.
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// The guest init's fv.action: poweroff, reboot, panic or shell.
        #[arg(long, default_value = "poweroff")]
        action: String,
    },
}

/// `HOST:GUEST`, two TCP port numbers.
fn parse_forward(s: &str) -> Result<(u16, u16), Error> {
    let bad = || Error::InvalidArgument(format!("--forward {s}: expected HOST:GUEST ports"));
    let (host, guest) = s.split_once(':').ok_or_else(bad)?;
    Ok((
        host.parse().map_err(|_| bad())?,
        guest.parse().map_err(|_| bad())?,
    ))
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fv-testhost: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::from(125)
        }
    }
}

fn real_main() -> Result<ExitCode, Error> {
    match Cli::parse().command {
        Cmd::Prepare => {
            let a = Artifacts::prepare()?;
            for name in ArtifactName::ALL {
                println!("{:14} {}", name.as_str(), a.path(name).display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Path { name } => {
            let name: ArtifactName = name.parse()?;
            println!("{}", Artifacts::prepare()?.path(name).display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run {
            timeout,
            smp,
            memory,
            env,
            forward,
            command,
        } => {
            let env = env
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .ok_or_else(|| {
                            Error::InvalidArgument(format!("--env {kv}: expected KEY=VALUE"))
                        })
                })
                .collect::<Result<_, _>>()?;
            let forward = forward
                .iter()
                .map(|f| parse_forward(f))
                .collect::<Result<_, _>>()?;
            let opts = RunOptions {
                timeout: Some(Duration::from_secs(timeout)),
                smp,
                memory_mib: memory,
                env,
                cwd: None,
                echo: true,
                forward,
            };
            let argv: Vec<&str> = command.iter().map(String::as_str).collect();
            let out = fv_testhost::run(&opts, &argv)?;
            // Statuses above 255 cannot happen in a shell; clamp rather than wrap.
            Ok(ExitCode::from(u8::try_from(out.status).unwrap_or(255)))
        }
        Cmd::Mkext4 {
            dir,
            image,
            size_mib,
        } => {
            fv_testhost::mkext4(&dir, &image, size_mib)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::TemplateDir { dir } => {
            let artifacts = Artifacts::prepare()?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::InvalidArgument(format!("{}: {e}", dir.display())))?;
            for (from, name) in [
                (&artifacts.guest_bzimage, "vmlinuz"),
                (&artifacts.guest_initrd, "initrd.img"),
            ] {
                std::fs::copy(from, dir.join(name)).map_err(|e| {
                    Error::InvalidArgument(format!("copying {}: {e}", from.display()))
                })?;
            }
            fv_testhost::build_rootfs(&dir.join("rootfs.img"))?;
            println!("{}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::BootGuest {
            initrd,
            kernel,
            action,
        } => {
            let guest = fv_testhost::GuestBootOptions {
                initrd,
                kernel,
                action,
                ..Default::default()
            };
            let host = RunOptions {
                timeout: Some(Duration::from_secs(300)),
                ..RunOptions::default()
            };
            let b = fv_testhost::boot_guest(&host, &guest)?;
            print!("{}", b.output);
            println!(
                "cpus={} mem_kib={} to_ready={:.2?} qemu_wall={:.2?} outer_wall={:.2?}",
                b.cpus, b.mem_kib, b.to_ready, b.qemu_wall, b.outer_wall
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
