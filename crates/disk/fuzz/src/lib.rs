//! What both fuzz drivers share: the harness that turns an input into an image file and uses
//! it through `fv_disk::open_disk`, and the seed images (made with the real `qemu-img`).

use fv_disk::{open_disk, DiskFile, ErrorKind, Format};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Bytes read at most per request, so that a huge virtual size costs nothing.
const MAX_IO: u64 = 256 * 1024;

/// A directory holding the image under test (`img.qcow2`) and the backing files the seeds
/// name: `base.raw` and `base.qcow2`. The image may name itself, as a loop.
pub struct Harness {
    dir: PathBuf,
    img: PathBuf,
}

impl Harness {
    /// Makes a fresh directory under the system's temporary directory, with the backing files.
    pub fn new() -> io::Result<Harness> {
        let dir = std::env::temp_dir().join(format!("fv-disk-fuzz-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        make_backing_files(&dir)?;
        Ok(Harness {
            img: dir.join("img.qcow2"),
            dir,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `data` as the image and uses it: probed read-only, then as qcow2 read-write
    /// (from a fresh copy of `data`, since the first may have changed nothing but the second
    /// may change anything). Errors are fine; a panic is a finding.
    pub fn run(&self, data: &[u8]) {
        for (format, read_only) in [(None, true), (Some(Format::Qcow2), false)] {
            if fs::write(&self.img, data).is_err() {
                return;
            }
            if let Ok(disk) = open_disk(&self.img, format, read_only) {
                exercise(&*disk, data);
            }
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Reads (and, if writable, writes, discards, zeroes and flushes) a few ranges chosen by the
/// input's own bytes, and checks that the one thing that must fail, a request past the end,
/// fails as out of range.
fn exercise(disk: &dyn DiskFile, data: &[u8]) {
    let size = disk.size();
    let pick = |i: usize| -> u64 {
        let mut v = [0u8; 8];
        for (j, b) in v.iter_mut().enumerate() {
            *b = data
                .get((i * 8 + j) % data.len().max(1))
                .copied()
                .unwrap_or(0);
        }
        u64::from_le_bytes(v)
    };
    let len = (pick(3) % MAX_IO + 1).min(size);
    let mut buf = vec![0u8; len as usize];
    let offsets = [
        0,
        size / 2,
        size - len,
        pick(5) % (size - len + 1),
        pick(11) % (size - len + 1),
    ];
    for &offset in &offsets {
        let _ = disk.read_at(&mut buf, offset);
    }
    let past = disk.read_at(&mut [0u8; 1], size).unwrap_err();
    assert_eq!(past.kind(), ErrorKind::OutOfRange, "{past}");

    if disk.read_only() {
        return;
    }
    for (i, b) in buf.iter_mut().enumerate() {
        *b = i as u8 ^ 0x5a;
    }
    let _ = disk.write_at(&buf, offsets[3]);
    let _ = disk.read_at(&mut buf, offsets[3]);
    let _ = disk.discard(offsets[4], len);
    let _ = disk.write_zeroes(offsets[1], len.min(size - offsets[1]));
    let _ = disk.write_at(&buf[..len as usize / 2], offsets[4]);
    let _ = disk.flush();
    for &offset in &offsets {
        let _ = disk.read_at(&mut buf, offset);
    }
}

fn qemu_img(dir: &Path, args: &[&str]) -> io::Result<()> {
    let out = Command::new("qemu-img")
        .current_dir(dir)
        .args(args)
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "qemu-img {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

fn qemu_io(dir: &Path, img: &str, cmds: &[&str]) -> io::Result<()> {
    let mut args = vec!["-f", "qcow2"];
    for c in cmds {
        args.extend(["-c", c]);
    }
    args.push(img);
    let out = Command::new("qemu-io")
        .current_dir(dir)
        .args(&args)
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "qemu-io {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// `base.raw` (64 KiB of a pattern) always; `base.qcow2` when `qemu-img` is installed.
fn make_backing_files(dir: &Path) -> io::Result<()> {
    let pattern: Vec<u8> = (0..65536u32).map(|i| (i * 7 + i / 251) as u8).collect();
    fs::write(dir.join("base.raw"), pattern)?;
    let made = qemu_img(
        dir,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=512",
            "base.qcow2",
            "128K",
        ],
    )
    .and_then(|()| qemu_io(dir, "base.qcow2", &["write -P 0x33 1000 5000"]));
    if let Err(err) = made {
        eprintln!("no base.qcow2 for the fuzz inputs to name as backing file: {err}");
    }
    Ok(())
}

/// Small qcow2 images that cover what the reader must handle: versions 2 and 3, small and
/// default clusters, data, zero and compressed clusters, refcount widths, internal snapshots,
/// raw and qcow2 backing files, and a backing file that is the image itself. Made in `dir`
/// (a harness directory, so that their backing names resolve); needs `qemu-img`/`qemu-io`.
pub fn make_seeds(dir: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let data_cmds = [
        "write -P 0xa1 0 3000",
        "write -P 0xb2 70000 10000",
        "write -z 140000 4096",
        "discard 0 512",
    ];
    let seeds: &[(&str, &[&str])] = &[
        ("v3-512", &["-o", "cluster_size=512"]),
        ("v2-512", &["-o", "compat=0.10,cluster_size=512"]),
        ("v3-4k-rc1", &["-o", "cluster_size=4096,refcount_bits=1"]),
        ("v3-4k-rc64", &["-o", "cluster_size=4096,refcount_bits=64"]),
        (
            "v3-4k-raw-backing",
            &["-o", "cluster_size=4096", "-b", "base.raw", "-F", "raw"],
        ),
        (
            "v3-512-qcow2-backing",
            &["-o", "cluster_size=512", "-b", "base.qcow2", "-F", "qcow2"],
        ),
        (
            "v2-512-raw-backing",
            &[
                "-o",
                "compat=0.10,cluster_size=512",
                "-b",
                "base.raw",
                "-F",
                "raw",
            ],
        ),
        ("v3-64k", &[]),
    ];
    let mut out = Vec::new();
    for (name, opts) in seeds {
        let file = format!("seed-{name}.qcow2");
        let mut args = vec!["create", "-q", "-f", "qcow2"];
        args.extend_from_slice(opts);
        args.extend([file.as_str(), "256K"]);
        qemu_img(dir, &args)?;
        qemu_io(dir, &file, &data_cmds)?;
        out.push((name.to_string(), fs::read(dir.join(&file))?));
        fs::remove_file(dir.join(&file))?;
    }

    // Compressed clusters.
    let raw: Vec<u8> = (0..131072u32).map(|i| (i / 300) as u8).collect();
    fs::write(dir.join("seed.raw"), raw)?;
    qemu_img(
        dir,
        &[
            "convert",
            "-c",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=4096",
            "seed.raw",
            "seed-c.qcow2",
        ],
    )?;
    out.push(("compressed".into(), fs::read(dir.join("seed-c.qcow2"))?));

    // An internal snapshot.
    qemu_img(dir, &["snapshot", "-c", "s1", "seed-c.qcow2"])?;
    qemu_io(dir, "seed-c.qcow2", &["write -P 0x44 0 9000"])?;
    out.push(("snapshot".into(), fs::read(dir.join("seed-c.qcow2"))?));

    // An image that is its own backing file (it is written as img.qcow2 by the harness).
    qemu_img(
        dir,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=512",
            "seed-l.qcow2",
            "64K",
        ],
    )?;
    qemu_img(
        dir,
        &[
            "rebase",
            "-u",
            "-b",
            "img.qcow2",
            "-F",
            "qcow2",
            "seed-l.qcow2",
        ],
    )?;
    out.push(("self-backing".into(), fs::read(dir.join("seed-l.qcow2"))?));

    for f in ["seed.raw", "seed-c.qcow2", "seed-l.qcow2"] {
        fs::remove_file(dir.join(f))?;
    }
    Ok(out)
}
