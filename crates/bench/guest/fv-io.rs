//! fv-io: the guest side of `fv-bench guest-io`, a tiny static program run inside the
//! benchmark's Linux guest (std only; `fv-bench` compiles it with
//! `rustc -C target-feature=+crt-static` and appends it to the guest's initramfs).
//!
//!   fv-io disk DEVICE MODE BLOCK SPAN SECS   MODE: seqread seqwrite randread randwrite
//!   fv-io tcp ADDR:PORT MIB
//!
//! `disk` does synchronous O_DIRECT I/O of BLOCK bytes (one request in flight: what one
//! request costs through the whole path) over the first SPAN bytes of DEVICE for SECS
//! seconds; `tcp` sends MIB MiB and waits for the receiver to close. Each prints one line:
//! `FV-IO <name> bytes=N ops=N usecs=N`.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// O_DIRECT on x86-64 (the guest's libc is not ours to ask: std has no constant for it).
const O_DIRECT: i32 = 0o40000;
const ALIGN: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    SeqRead,
    SeqWrite,
    RandRead,
    RandWrite,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "seqread" => Mode::SeqRead,
            "seqwrite" => Mode::SeqWrite,
            "randread" => Mode::RandRead,
            "randwrite" => Mode::RandWrite,
            _ => return None,
        })
    }

    fn writes(self) -> bool {
        matches!(self, Mode::SeqWrite | Mode::RandWrite)
    }
}

/// The offsets of `mode`'s requests: consecutive and wrapping at `span`, or uniformly
/// random (xorshift64, fixed seed) and `block`-aligned.
pub struct Offsets {
    random: bool,
    block: u64,
    slots: u64,
    next: u64,
    state: u64,
}

impl Offsets {
    pub fn new(mode: Mode, block: u64, span: u64) -> Offsets {
        Offsets {
            random: matches!(mode, Mode::RandRead | Mode::RandWrite),
            block,
            slots: (span / block).max(1),
            next: 0,
            state: 0x9e37_79b9_7f4a_7c15,
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
            self.next = (s + 1) % self.slots;
            s
        };
        slot * self.block
    }
}

/// `len` bytes aligned for O_DIRECT, inside `storage`.
fn aligned(storage: &mut Vec<u8>, len: usize) -> &mut [u8] {
    storage.resize(len + ALIGN, 0);
    let skip = storage.as_ptr().align_offset(ALIGN);
    &mut storage[skip..skip + len]
}

fn report(name: &str, bytes: u64, ops: u64, took: Duration) {
    println!(
        "FV-IO {name} bytes={bytes} ops={ops} usecs={}",
        took.as_micros()
    );
}

fn disk(device: &str, mode: Mode, block: usize, span: u64, secs: f64) -> Result<(), String> {
    let file = OpenOptions::new()
        .read(true)
        .write(mode.writes())
        .custom_flags(O_DIRECT)
        .open(device)
        .map_err(|e| format!("{device}: {e}"))?;
    let mut storage = Vec::new();
    let buf = aligned(&mut storage, block);
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i * 7 + i / 4096) as u8;
    }
    let mut offsets = Offsets::new(mode, block as u64, span);
    let limit = Duration::from_secs_f64(secs);
    let started = Instant::now();
    let mut ops = 0u64;
    loop {
        let offset = offsets.next_offset();
        let r = if mode.writes() {
            file.write_all_at(buf, offset)
        } else {
            file.read_exact_at(buf, offset)
        };
        r.map_err(|e| format!("{device} at {offset}: {e}"))?;
        ops += 1;
        let took = started.elapsed();
        if took >= limit {
            let name = format!("{mode:?}-{block}").to_lowercase();
            report(&name, ops * block as u64, ops, took);
            return Ok(());
        }
    }
}

fn tcp(addr: &str, mib: u64) -> Result<(), String> {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let chunk = vec![0x5au8; 256 << 10];
    let total = mib << 20;
    let mut sent = 0;
    while sent < total {
        let n = (total - sent).min(chunk.len() as u64) as usize;
        s.write_all(&chunk[..n]).map_err(|e| format!("send: {e}"))?;
        sent += n as u64;
    }
    s.shutdown(Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    // The receiver closes once it has everything: the time covers delivery, not queueing.
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .map_err(|e| format!("waiting for the receiver: {e}"))?;
    report(
        "tcp-send",
        sent,
        sent.div_ceil(chunk.len() as u64),
        started.elapsed(),
    );
    Ok(())
}

fn run(args: &[String]) -> Result<(), String> {
    let num = |s: &String| s.parse::<u64>().map_err(|_| format!("not a number: {s}"));
    match args {
        [cmd, device, mode, block, span, secs] if cmd == "disk" => {
            let mode = Mode::parse(mode).ok_or(format!("unknown mode {mode}"))?;
            let block = usize::try_from(num(block)?).map_err(|e| e.to_string())?;
            let secs: f64 = secs.parse().map_err(|_| format!("not seconds: {secs}"))?;
            disk(device, mode, block, num(span)?, secs)
        }
        [cmd, addr, mib] if cmd == "tcp" => tcp(addr, num(mib)?),
        _ => Err("usage: fv-io disk DEVICE MODE BLOCK SPAN SECS | fv-io tcp ADDR:PORT MIB".into()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fv-io: {e}");
            ExitCode::FAILURE
        }
    }
}
