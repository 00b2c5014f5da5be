//! The virtio-blk request path on the host, no KVM: guest memory → `fv_virtio`'s
//! [`BlockDevice`] → an image file opened by `fv_disk::open_disk`, next to plain
//! `pread`/`pwrite` doing the same I/O (same sizes, offsets and file) into ordinary buffers.
//!
//! The device is driven synchronously through [`BlockDevice::process_queue`] with a ring
//! filled by the test driver (`fv_virtio::testing::Driver`): each batch puts `batch`
//! requests in the ring (one indirect descriptor each, pointing at header, data and status,
//! as Linux lays them out), processes them all with one call and takes them back. Only that
//! call is timed (in CPU time of the thread, see [`thread_cpu`]); the peer's batch of
//! syscalls is timed the same way. Both sides run for the
//! same wall-clock budget per round, in an order that rotates each round, and the ratio is
//! taken per round (so each pair shares the machine's noise), then the median.
//!
//! The image lives on a real filesystem (not tmpfs) and is in the page cache: both sides
//! measure the CPU cost of the path, not the disk.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fv_disk::{open_disk, Format};
use fv_virtio::block::{BlockConfig, BlockDevice, HEADER_SIZE, SECTOR_SIZE};
use fv_virtio::testing::{Desc, Driver, F_INDIRECT, F_NEXT, F_WRITE};
use fv_virtio::{Interrupt, VirtioDevice};
use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT};
use vm_memory::{Address, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use crate::stats::{median, Table};

/// One kind of I/O.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    pub name: &'static str,
    pub write: bool,
    pub random: bool,
    /// Bytes per request.
    pub size: u32,
    /// Requests per batch (in the ring at once).
    pub batch: usize,
}

pub const WORKLOADS: [Workload; 4] = [
    Workload {
        name: "4 KiB random read",
        write: false,
        random: true,
        size: 4096,
        batch: 128,
    },
    Workload {
        name: "4 KiB random write",
        write: true,
        random: true,
        size: 4096,
        batch: 128,
    },
    Workload {
        name: "1 MiB sequential read",
        write: false,
        random: false,
        size: 1 << 20,
        batch: 32,
    },
    Workload {
        name: "1 MiB sequential write",
        write: true,
        random: false,
        size: 1 << 20,
        batch: 32,
    },
];

/// The offsets of a workload's requests: 4 KiB-aligned random (xorshift64, seeded, so that
/// both sides of a round do the same I/O), or consecutive, wrapping at the end of the disk.
pub struct Offsets {
    random: bool,
    size: u64,
    /// Request slots in the disk.
    slots: u64,
    state: u64,
    next: u64,
}

impl Offsets {
    pub fn new(w: &Workload, disk_size: u64, seed: u64) -> Self {
        Offsets {
            random: w.random,
            size: u64::from(w.size),
            slots: disk_size / u64::from(w.size),
            state: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            next: 0,
        }
    }

    pub fn next_offset(&mut self) -> u64 {
        let slot = if self.random {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            self.state % self.slots
        } else {
            let s = self.next;
            self.next = (self.next + 1) % self.slots;
            s
        };
        slot * self.size
    }

    fn fill(&mut self, out: &mut [u64]) {
        for o in out {
            *o = self.next_offset();
        }
    }
}

/// CPU time of the calling thread (user and system): unlike wall time, it does not count
/// the time this thread waits while the busy machine runs something else. Both sides are
/// synchronous, so it is all the work their I/O costs.
fn thread_cpu() -> Duration {
    // CLOCK_THREAD_CPUTIME_ID cannot fail on Linux; zero would only make a batch look free.
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// Interrupts go nowhere: the benchmark looks at the used ring itself.
struct NoInterrupt;

impl Interrupt for NoInterrupt {
    fn signal_queue(&self, _queue: u16) {}
    fn signal_config(&self) {}
}

/// One request's place in guest memory.
struct Slot {
    header: GuestAddress,
    status: GuestAddress,
    /// The indirect table: header, data, status.
    table: GuestAddress,
}

fn raw_desc(addr: GuestAddress, len: u32, flags: u16, next: u16) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[0..8].copy_from_slice(&addr.raw_value().to_le_bytes());
    d[8..12].copy_from_slice(&len.to_le_bytes());
    d[12..14].copy_from_slice(&flags.to_le_bytes());
    d[14..16].copy_from_slice(&next.to_le_bytes());
    d
}

/// A block device over one image, activated on the test driver's queue, with a batch of
/// request slots laid out in guest memory.
struct DeviceSide {
    dev: BlockDevice,
    /// The data buffers, `work.size` bytes per slot, one after the other (for tests).
    #[cfg(test)]
    data: GuestAddress,
    /// The image, opened once more for fdatasync between rounds.
    image: File,
    driver: Driver,
    slots: Vec<Slot>,
    work: Workload,
    offsets: Vec<u64>,
}

impl DeviceSide {
    fn new(image: &Path, format: Format, work: Workload) -> Result<Self, String> {
        let disk = open_disk(image, Some(format), false).map_err(|e| e.to_string())?;
        let dev = BlockDevice::new(disk, BlockConfig::default()).map_err(|e| e.to_string())?;
        let size = u64::from(work.size);
        let n = work.batch as u64;
        // Rings, then page-aligned data buffers, then headers, statuses and tables.
        let mem_size = (n * size + n * 128 + (1 << 20)).next_multiple_of(1 << 20);
        let mut driver = Driver::for_device(&dev, mem_size);
        let data = driver.alloc(u32::try_from(n * size).map_err(|e| e.to_string())?);
        let data_flags = if work.write { 0 } else { F_WRITE };
        let mut slots = Vec::with_capacity(work.batch);
        for i in 0..n {
            let header = driver.alloc(HEADER_SIZE);
            let status = driver.alloc(1);
            let table = driver.alloc(48);
            let buf = data.unchecked_add(i * size);
            let mut t = Vec::with_capacity(48);
            t.extend(raw_desc(header, HEADER_SIZE, F_NEXT, 1));
            t.extend(raw_desc(buf, work.size, data_flags | F_NEXT, 2));
            t.extend(raw_desc(status, 1, F_WRITE, 0));
            driver.write(table, &t);
            slots.push(Slot {
                header,
                status,
                table,
            });
        }
        // Data the device writes to the disk: not zeroes, so that nothing could skip it.
        let pattern: Vec<u8> = (0..n * size).map(|i| (i * 7 + i / 4096) as u8).collect();
        driver.write(data, &pattern);
        let image = File::open(image).map_err(|e| format!("{}: {e}", image.display()))?;
        let mut side = DeviceSide {
            dev,
            #[cfg(test)]
            data,
            image,
            driver,
            slots,
            work,
            offsets: vec![0; work.batch],
        };
        let mem = side.driver.mem.clone();
        let queues = side.driver.queues();
        let events = vec![EventFd::new(0).map_err(|e| e.to_string())?];
        let features = side.dev.avail_features();
        side.dev
            .activate(mem, Arc::new(NoInterrupt), queues, events, features)
            .map_err(|e| e.to_string())?;
        Ok(side)
    }

    /// One batch: fill the ring, process it (timed), take the requests back and check them.
    fn batch(&mut self, offsets: &mut Offsets) -> Result<Duration, String> {
        offsets.fill(&mut self.offsets);
        let kind = if self.work.write {
            VIRTIO_BLK_T_OUT
        } else {
            VIRTIO_BLK_T_IN
        };
        for (slot, &offset) in self.slots.iter().zip(&self.offsets) {
            let mut h = [0u8; 16];
            h[0..4].copy_from_slice(&kind.to_le_bytes());
            h[8..16].copy_from_slice(&(offset / SECTOR_SIZE).to_le_bytes());
            self.driver.write(slot.header, &h);
            self.driver.write(slot.status, &[0xff]);
            let head = self.driver.write_chain(
                0,
                &[Desc {
                    addr: slot.table,
                    len: 48,
                    flags: F_INDIRECT,
                }],
            );
            self.driver.push_avail(0, head);
        }
        let started = thread_cpu();
        self.dev.process_queue();
        let took = thread_cpu().saturating_sub(started);
        let used = self.driver.take_used(0);
        if used.len() != self.slots.len() {
            return Err(format!(
                "the device completed {} of {} requests (needs reset: {})",
                used.len(),
                self.slots.len(),
                self.dev.needs_reset()
            ));
        }
        for slot in &self.slots {
            let status = self.driver.read(slot.status, 1)[0];
            if status != VIRTIO_BLK_S_OK as u8 {
                return Err(format!("a request failed with virtio-blk status {status}"));
            }
        }
        Ok(took)
    }
}

/// Where the guest's bytes are in an image file: `(guest offset, length, file offset)`
/// extents, sorted. A raw image is one extent at 0; a qcow2 image's come from `qemu-img map`.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout(Vec<(u64, u64, u64)>);

impl Layout {
    pub fn identity(size: u64) -> Self {
        Layout(vec![(0, size, 0)])
    }

    /// From `qemu-img map --output=json`: every extent must hold data (a fully allocated
    /// image), so that each guest byte has a place in the file.
    pub fn from_qemu_img_map(json: &str) -> Result<Self, String> {
        let extents: Vec<serde_json::Value> =
            serde_json::from_str(json).map_err(|e| format!("qemu-img map: {e}"))?;
        let mut out = Vec::new();
        for e in &extents {
            let field = |k: &str| e.get(k).and_then(serde_json::Value::as_u64);
            let (Some(start), Some(len)) = (field("start"), field("length")) else {
                return Err(format!("qemu-img map: no start/length in {e}"));
            };
            let Some(host) = field("offset").filter(|_| e.get("data") == Some(&true.into())) else {
                return Err(format!("qemu-img map: extent without data: {e}"));
            };
            out.push((start, len, host));
        }
        out.sort_unstable();
        Ok(Layout(out))
    }

    /// The file ranges `(offset, length)` holding `len` guest bytes at `offset`.
    fn pieces(
        &self,
        mut offset: u64,
        mut len: u64,
        out: &mut Vec<(u64, usize)>,
    ) -> Result<(), String> {
        out.clear();
        while len > 0 {
            let i = self.0.partition_point(|&(start, l, _)| start + l <= offset);
            let Some(&(start, l, host)) = self.0.get(i).filter(|e| e.0 <= offset) else {
                return Err(format!("guest offset {offset} is not in the image's map"));
            };
            let n = (start + l - offset).min(len);
            out.push((host + offset - start, n as usize));
            offset += n;
            len -= n;
        }
        Ok(())
    }
}

/// pread/pwrite with the same sizes and offsets, into as many ordinary buffers as the
/// device has request slots, on the image file at the place its format keeps those bytes.
struct SyscallSide {
    file: File,
    layout: Layout,
    bufs: Vec<u8>,
    work: Workload,
    offsets: Vec<u64>,
    pieces: Vec<(u64, usize)>,
}

impl SyscallSide {
    fn new(image: &Path, layout: Layout, work: Workload) -> Result<Self, String> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(image)
            .map_err(|e| format!("cannot open {}: {e}", image.display()))?;
        let n = work.batch * work.size as usize;
        let bufs = (0..n).map(|i| (i * 7 + i / 4096) as u8).collect();
        Ok(SyscallSide {
            file,
            layout,
            bufs,
            work,
            offsets: vec![0; work.batch],
            pieces: Vec::new(),
        })
    }

    fn batch(&mut self, offsets: &mut Offsets) -> Result<Duration, String> {
        offsets.fill(&mut self.offsets);
        let size = self.work.size as usize;
        let started = thread_cpu();
        for (buf, &offset) in self.bufs.chunks_exact_mut(size).zip(&self.offsets) {
            self.layout.pieces(offset, size as u64, &mut self.pieces)?;
            let mut at = 0;
            for &(pos, n) in &self.pieces {
                let buf = &mut buf[at..at + n];
                let r = if self.work.write {
                    self.file.write_all_at(buf, pos)
                } else {
                    self.file.read_exact_at(buf, pos)
                };
                r.map_err(|e| format!("pread/pwrite at {pos}: {e}"))?;
                at += n;
            }
        }
        Ok(thread_cpu().saturating_sub(started))
    }
}

enum Side {
    Device(Box<DeviceSide>),
    Syscall(SyscallSide),
}

impl Side {
    /// Runs whole batches for `budget` of wall time; returns throughput in MiB/s of the
    /// timed part.
    fn round(
        &mut self,
        w: &Workload,
        disk_size: u64,
        seed: u64,
        budget: Duration,
    ) -> Result<f64, String> {
        // Start from clean pages: how much of the file is dirty or under writeback changes
        // what a write costs, so each side begins its round in the same state.
        let file = match self {
            Side::Device(d) => &d.image,
            Side::Syscall(s) => &s.file,
        };
        file.sync_data().map_err(|e| format!("fdatasync: {e}"))?;
        let mut offsets = Offsets::new(w, disk_size, seed);
        let started = Instant::now();
        let mut busy = Duration::ZERO;
        let mut bytes = 0u64;
        while started.elapsed() < budget {
            busy += match self {
                Side::Device(d) => d.batch(&mut offsets)?,
                Side::Syscall(s) => s.batch(&mut offsets)?,
            };
            bytes += w.batch as u64 * u64::from(w.size);
        }
        Ok(bytes as f64 / (1 << 20) as f64 / busy.as_secs_f64())
    }
}

/// The filesystem type `path` is on, from /proc/self/mounts (longest matching mount point).
fn fs_type(path: &Path) -> String {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return "?".into();
    };
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    mounts
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (_, point, fs) = (w.next()?, w.next()?, w.next()?);
            path.starts_with(point)
                .then(|| (point.len(), fs.to_string()))
        })
        .max()
        .map_or("?".into(), |(_, fs)| fs)
}

/// Writes a `size`-byte raw image of pseudo-random data (and so leaves it in the page cache).
fn make_raw(path: &Path, size: u64) -> Result<(), String> {
    let err = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut f = File::create(path).map_err(err)?;
    let mut offsets = Offsets::new(&WORKLOADS[0], 1 << 40, 42);
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..size >> 20 {
        for word in chunk.chunks_exact_mut(8) {
            word.copy_from_slice(&offsets.next_offset().to_le_bytes());
        }
        f.write_all(&chunk).map_err(err)?;
    }
    f.sync_all().map_err(err)
}

/// The same data as a fully allocated qcow2 image (`qemu-img convert`) and where its data
/// lies in the file, or why not.
fn make_qcow2(raw: &Path, qcow2: &Path) -> Result<Layout, String> {
    let out = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(qcow2)
        .output()
        .map_err(|e| format!("cannot run qemu-img: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "qemu-img convert failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let out = Command::new("qemu-img")
        .args(["map", "--output=json", "-f", "qcow2"])
        .arg(qcow2)
        .output()
        .map_err(|e| format!("cannot run qemu-img: {e}"))?;
    let layout = Layout::from_qemu_img_map(&String::from_utf8_lossy(&out.stdout))?;
    // Read it once so that it is in the page cache like the raw image.
    std::fs::read(qcow2).map_err(|e| e.to_string())?;
    Ok(layout)
}

pub struct Options {
    pub rounds: usize,
    pub round_ms: u64,
    pub disk_mib: u64,
    pub dir: Option<PathBuf>,
    pub qcow2: bool,
    /// Only the workloads whose name contains this.
    pub only: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rounds: 5,
            round_ms: 500,
            disk_mib: 256,
            dir: None,
            qcow2: true,
            only: None,
        }
    }
}

pub fn run(opts: &Options) -> Result<(), String> {
    let base = opts.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("fv-bench-blk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = run_in(opts, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(opts: &Options, dir: &Path) -> Result<(), String> {
    let raw = dir.join("disk.raw");
    let disk_size = opts.disk_mib << 20;
    make_raw(&raw, disk_size)?;
    let fs = fs_type(dir);
    let qcow2_path = dir.join("disk.qcow2");
    let qcow2 = if opts.qcow2 {
        match make_qcow2(&raw, &qcow2_path) {
            Ok(layout) => Some(layout),
            Err(e) => {
                eprintln!("fv-bench blk: no qcow2 columns: {e}");
                None
            }
        }
    } else {
        None
    };
    if fs == "tmpfs" {
        eprintln!(
            "fv-bench blk: warning: {} is on tmpfs; use --dir",
            dir.display()
        );
    }
    println!(
        "virtio-blk request path on the host: fv_virtio BlockDevice::process_queue on a \
         {} MiB image vs pread/pwrite of the same bytes in the same file ({fs}, page cache, \
         no fsync; for qcow2 at the file offsets qemu-img map gives). MiB/s per CPU second, \
         median of {} rounds of {} ms per side; ratio device/syscalls per round: median \
         (min-max)",
        opts.disk_mib, opts.rounds, opts.round_ms
    );
    let mut header = vec!["workload", "batch", "raw: syscalls", "fv", "ratio"];
    if qcow2.is_some() {
        header.extend(["qcow2: syscalls", "fv", "ratio"]);
    }
    let mut table = Table::new(&header);
    let budget = Duration::from_millis(opts.round_ms);
    let chosen = WORKLOADS.iter().filter(|w| {
        opts.only
            .as_ref()
            .is_none_or(|o| w.name.contains(o.as_str()))
    });
    for w in chosen {
        let mut sides = vec![
            Side::Syscall(SyscallSide::new(&raw, Layout::identity(disk_size), *w)?),
            Side::Device(Box::new(DeviceSide::new(&raw, Format::Raw, *w)?)),
        ];
        if let Some(layout) = &qcow2 {
            sides.push(Side::Syscall(SyscallSide::new(
                &qcow2_path,
                layout.clone(),
                *w,
            )?));
            sides.push(Side::Device(Box::new(DeviceSide::new(
                &qcow2_path,
                Format::Qcow2,
                *w,
            )?)));
        }
        let mut mibs: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
        for round in 0..opts.rounds {
            // Rotate who goes first, so that no side always follows the same one.
            for k in 0..sides.len() {
                let i = (round + k) % sides.len();
                let v = sides[i].round(w, disk_size, round as u64 + 1, budget)?;
                mibs[i].push(v);
            }
        }
        eprintln!(
            "blk {}: {}",
            w.name,
            ["raw syscalls", "raw fv", "qcow2 syscalls", "qcow2 fv"]
                .iter()
                .zip(&mibs)
                .map(|(n, v)| format!(
                    "{n} {}",
                    v.iter()
                        .map(|x| format!("{x:.0}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
        let mut row = vec![w.name.to_string(), w.batch.to_string()];
        for pair in mibs.chunks_exact(2) {
            let (sys, dev) = (&pair[0], &pair[1]);
            let ratios: Vec<f64> = dev.iter().zip(sys).map(|(d, s)| d / s).collect();
            row.push(format!("{:.0}", median(sys.clone())));
            row.push(format!("{:.0}", median(dev.clone())));
            row.push(crate::stats::ratio_range(&ratios));
        }
        table.text_row(row);
    }
    table.print();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_stay_in_the_disk_and_repeat_for_a_seed() {
        let disk = 1 << 20;
        let mut a = Offsets::new(&WORKLOADS[0], disk, 3);
        let mut b = Offsets::new(&WORKLOADS[0], disk, 3);
        for _ in 0..1000 {
            let o = a.next_offset();
            assert_eq!(o, b.next_offset());
            assert!(o.is_multiple_of(4096) && o + 4096 <= disk);
        }
        let mut s = Offsets::new(&WORKLOADS[2], 3 << 20, 1);
        let seq: Vec<u64> = (0..4).map(|_| s.next_offset()).collect();
        assert_eq!(seq, [0, 1 << 20, 2 << 20, 0]);
    }

    #[test]
    fn layouts_map_guest_ranges_to_file_ranges() {
        let map = r#"[{ "start": 65536, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true, "offset": 1048576},
{ "start": 0, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true, "offset": 327680}]"#;
        let l = Layout::from_qemu_img_map(map).unwrap();
        let mut out = Vec::new();
        l.pieces(4096, 4096, &mut out).unwrap();
        assert_eq!(out, [(327680 + 4096, 4096)]);
        l.pieces(61440, 8192, &mut out).unwrap();
        assert_eq!(out, [(327680 + 61440, 4096), (1048576, 4096)]);
        assert!(l.pieces(126976, 8192, &mut out).is_err());
        let hole = r#"[{ "start": 0, "length": 65536, "depth": 0, "present": false, "zero": true, "data": false}]"#;
        assert!(Layout::from_qemu_img_map(hole).is_err());
        Layout::identity(1 << 20)
            .pieces(0, 1 << 20, &mut out)
            .unwrap();
        assert_eq!(out, [(0, 1 << 20)]);
    }

    /// Both sides on a small image: the device completes every request, and what it wrote
    /// is on the disk where pwrite would have put it.
    #[test]
    fn device_and_syscalls_do_the_same_io() {
        let dir = std::env::temp_dir().join(format!("fv-bench-blk-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let raw = dir.join("disk.raw");
        make_raw(&raw, 4 << 20).unwrap();
        let w = Workload {
            batch: 8,
            ..WORKLOADS[1]
        };
        let mut dev = DeviceSide::new(&raw, Format::Raw, w).unwrap();
        let mut offsets = Offsets::new(&w, 4 << 20, 9);
        dev.batch(&mut offsets).unwrap();
        let mut check = Offsets::new(&w, 4 << 20, 9);
        let file = File::open(&raw).unwrap();
        let sys = SyscallSide::new(&raw, Layout::identity(4 << 20), w).unwrap();
        for i in 0..w.batch {
            let o = check.next_offset();
            let mut got = vec![0; 4096];
            file.read_exact_at(&mut got, o).unwrap();
            assert_eq!(got, sys.bufs[i * 4096..(i + 1) * 4096], "request {i}");
        }
        // Reads: the guest's buffers and the syscalls' get the same bytes.
        let r = Workload {
            batch: 3,
            ..WORKLOADS[2]
        };
        let mut reads = DeviceSide::new(&raw, Format::Raw, r).unwrap();
        let mut s = SyscallSide::new(&raw, Layout::identity(4 << 20), r).unwrap();
        reads.batch(&mut Offsets::new(&r, 4 << 20, 1)).unwrap();
        s.batch(&mut Offsets::new(&r, 4 << 20, 1)).unwrap();
        assert!(reads.driver.read(reads.data, 3 << 20) == s.bufs);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
