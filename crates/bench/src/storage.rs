//! The storage driver (fv-sr, what fvd's VDI calls run) on a real filesystem:
//!
//! - `VDI.clone` time of a 1 GiB and a 1 TiB thin VDI holding the same data: copy-on-write,
//!   so it must not grow with the size;
//! - `VDI.copy` throughput (a full, flattened copy into another SR) against `qemu-img
//!   convert -O qcow2` of the same image, in the same run, as a ratio.
//!
//! Each figure is the median of `rounds`; the pair of copy figures of a round is taken
//! back to back, so the ratio shares the machine's load.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use fv_disk::{open_disk, Format};
use fv_sr::FileSr;

use crate::stats::{median, ratio_range};

pub struct Options {
    pub rounds: usize,
    /// MiB of data written into the copied VDI.
    pub data_mib: u64,
    pub dir: Option<std::path::PathBuf>,
}

fn uuid(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// Writes `mib` MiB of non-zero data, in 1 MiB pieces spread over the first `span` bytes.
fn fill(path: &Path, mib: u64, span: u64) -> Result<(), String> {
    let disk = open_disk(path, Some(Format::Qcow2), false).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1 << 20];
    let stride = (span / mib.max(1)) & !((1 << 20) - 1);
    for i in 0..mib {
        for (j, b) in buf.iter_mut().enumerate() {
            *b = (j as u64 ^ i).wrapping_mul(2_654_435_761) as u8 | 1;
        }
        disk.write_at(&buf, i * stride.max(1 << 20))
            .map_err(|e| e.to_string())?;
    }
    disk.flush().map_err(|e| e.to_string())
}

fn secs(f: impl FnOnce() -> Result<(), String>) -> Result<f64, String> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64())
}

pub fn run(opts: &Options) -> Result<(), String> {
    let base = opts.dir.clone().unwrap_or_else(std::env::temp_dir);
    let root = base.join(format!("fv-bench-storage-{}", std::process::id()));
    let result = run_in(opts, &root);
    let _ = std::fs::remove_dir_all(&root);
    result
}

fn run_in(opts: &Options, root: &Path) -> Result<(), String> {
    let (a, b) = (root.join("sr-a"), root.join("sr-b"));
    for d in [&a, &b] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let err = |e: fv_sr::SrError| e.to_string();
    let sr = FileSr::open(&a).map_err(err)?;
    let dest = FileSr::open(&b).map_err(err)?;
    let mut next = 0u64;
    let mut fresh = || {
        next += 1;
        uuid(next)
    };

    // Clone time against size: the same 64 MiB of data in a 1 GiB and a 1 TiB VDI.
    let mut clone_times = Vec::new();
    for size in [1u64 << 30, 1 << 40] {
        let vdi = sr.create(&fresh(), size).map_err(err)?;
        fill(&a.join(&vdi.name), 64, size.min(1 << 30))?;
        let mut times = Vec::new();
        for _ in 0..opts.rounds {
            let id = fresh();
            times.push(secs(|| {
                sr.clone_vdi(&vdi.name, &id).map(drop).map_err(err)
            })?);
        }
        clone_times.push((size, median(times)));
    }
    println!(
        "VDI.clone (fv-sr clone_vdi, copy-on-write), median of {} rounds:",
        opts.rounds
    );
    for (size, t) in &clone_times {
        println!(
            "  {:>5} GiB thin VDI with 64 MiB of data: {:.2} ms",
            size >> 30,
            t * 1e3
        );
    }

    // Copy throughput against qemu-img convert of the same file.
    let data = opts.data_mib;
    let src = sr.create(&fresh(), 4 << 30).map_err(err)?;
    fill(&a.join(&src.name), data, 4 << 30)?;
    let src_path = a.join(&src.name);
    let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..opts.rounds {
        let id = fresh();
        let t_ours = secs(|| {
            sr.copy(&src.name, &dest, &id, &mut |_| true)
                .map(drop)
                .map_err(err)
        })?;
        let out = b.join(format!("qemu-{round}.qcow2"));
        let t_qemu = secs(|| {
            let status = Command::new("qemu-img")
                .args(["convert", "-O", "qcow2"])
                .arg(&src_path)
                .arg(&out)
                .status()
                .map_err(|e| format!("qemu-img: {e}"))?;
            status
                .success()
                .then_some(())
                .ok_or_else(|| "qemu-img convert failed".to_owned())
        })?;
        let _ = std::fs::remove_file(&out);
        let _ = dest.destroy(&format!("{id}.qcow2"));
        let mib = data as f64;
        ours.push(mib / t_ours);
        theirs.push(mib / t_qemu);
        ratios.push(t_qemu / t_ours);
    }
    println!(
        "VDI.copy of a 4 GiB VDI holding {data} MiB: fv-sr {:.0} MiB/s, qemu-img convert {:.0} MiB/s, \
         ratio fv-sr/qemu-img {}, median of {} rounds",
        median(ours),
        median(theirs),
        ratio_range(&ratios),
        opts.rounds
    );
    Ok(())
}
