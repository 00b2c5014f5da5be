//! Runs a target on inputs from a small xorshift generator, for machines without nightly
//! and cargo-fuzz. A panic saves the input under `crashes/` and exits non-zero.
//!
//! `NAME [ITERATIONS [SEED]]` runs ITERATIONS inputs (default 100000) from SEED (default:
//! the clock); `NAME --replay FILE` runs one saved input. The slowest input of a run is
//! kept as `crashes/NAME-slowest.bin`. (A copy of crates/virtio/fuzz/src/runner.rs.)

use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// xorshift64* (Vigna): small, fast, good enough to make inputs.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// An input of 0..=4096 bytes, short ones more often.
    pub fn input(&mut self, buf: &mut Vec<u8>) {
        let len = match self.next_u64() % 4 {
            0 => self.next_u64() % 64,
            1 => self.next_u64() % 512,
            _ => self.next_u64() % 4097,
        } as usize;
        buf.clear();
        while buf.len() < len {
            buf.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        buf.truncate(len);
    }
}

pub fn main(name: &str, target: fn(&[u8])) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--replay") {
        let path = args.get(1).expect("--replay FILE");
        let data = std::fs::read(path).expect("readable input file");
        let t = Instant::now();
        target(&data);
        println!("{name}: {path}: no panic, {:?}", t.elapsed());
        return;
    }
    let iterations: u64 = args
        .first()
        .map_or(100_000, |a| a.parse().expect("ITERATIONS"));
    let seed: u64 = args.get(1).map_or_else(
        || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        },
        |a| a.parse().expect("SEED"),
    );
    println!("{name}: {iterations} inputs from seed {seed}");
    let mut rng = XorShift::new(seed);
    let mut data = Vec::new();
    let start = Instant::now();
    let mut slowest = (Duration::ZERO, 0u64);
    let mut slowest_input = Vec::new();
    for i in 0..iterations {
        rng.input(&mut data);
        let t = Instant::now();
        let res = panic::catch_unwind(AssertUnwindSafe(|| target(&data)));
        let took = t.elapsed();
        if took > slowest.0 {
            slowest = (took, i);
            slowest_input.clone_from(&data);
        }
        if res.is_err() {
            let dir = PathBuf::from("crashes");
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join(format!("{name}-{seed}-{i}.bin"));
            let _ = std::fs::write(&path, &data);
            eprintln!("{name}: input {i} panicked; saved to {}", path.display());
            std::process::exit(1);
        }
        if iterations >= 10 && (i + 1) % (iterations / 10) == 0 {
            println!(
                "{name}: {} inputs, {:.1}s",
                i + 1,
                start.elapsed().as_secs_f64()
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // Kept for a look at what took longest (replay it with --replay).
    let dir = PathBuf::from("crashes");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{name}-slowest.bin")), &slowest_input);
    println!(
        "{name}: {iterations} inputs in {secs:.1}s ({:.0}/s), no panic; slowest input {} took {:?}",
        iterations as f64 / secs,
        slowest.1,
        slowest.0
    );
}
