//! The qcow2 fuzzer without libFuzzer or nightly: mutates seed images (made with qemu-img)
//! with a xorshift generator and runs each through the same harness as the libFuzzer target.
//!
//!   cargo run --release --no-default-features --bin fuzz_qcow2 -- [ITERATIONS] [options]
//!     --seconds S      stop after S seconds (whichever comes first)
//!     --seed X         the generator's seed (default: the time)
//!     --corpus DIR     also run every file in DIR first (e.g. libFuzzer's corpus)
//!     --write-seeds D  write the seed images to D (a libFuzzer corpus) and exit
//!
//! A panic, a single allocation above 64 MiB, or a case slower than 5 s is a finding: the
//! input is saved under `artifacts/` and the run exits non-zero at the end. A stack overflow
//! aborts the process: the input that caused it is `artifacts/last-input`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Records the largest single allocation, so that a hostile image that makes the reader
/// allocate gigabytes is found even when the machine has them.
struct Watch;

static BIGGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract that the caller keeps for us is the one `System` needs; the only
// addition is an atomic counter, which allocates nothing.
unsafe impl GlobalAlloc for Watch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        BIGGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        BIGGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        BIGGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Watch = Watch;

const BIG_ALLOC: usize = 64 << 20;
const SLOW: Duration = Duration::from_secs(5);

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Values that tend to break size and offset arithmetic.
fn interesting(rng: &mut Rng, file_len: u64) -> u64 {
    match rng.below(12) {
        0 => 0,
        1 => 1,
        2 => u64::MAX,
        3 => u64::MAX >> 1,
        4 => 1 << rng.below(64),
        5 => (1 << rng.below(64)) - 1,
        6 => file_len,
        7 => file_len.wrapping_sub(1 + rng.below(600)),
        8 => rng.below(file_len + 1) & !511,
        9 => u64::from(u32::MAX),
        10 => (1 << 63) | (rng.below(file_len + 1) & !511), // a "copied" flag on an offset
        _ => rng.next(),
    }
}

/// One to a few mutations of `seed`: bit flips, big-endian fields (4 or 8 bytes, aligned,
/// mostly in the header and tables) set to interesting values, truncation, extension,
/// copying a block from elsewhere in the file.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = data.len() as u64;
        if len == 0 {
            data.push(rng.below(256) as u8);
            continue;
        }
        match rng.below(10) {
            0..=2 => {
                let at = if rng.below(2) == 0 {
                    rng.below(len.min(512))
                } else {
                    rng.below(len)
                };
                data[at as usize] ^= 1 << rng.below(8);
            }
            3..=6 => {
                let width = if rng.below(2) == 0 { 4 } else { 8 };
                let at = if rng.below(2) == 0 {
                    rng.below(len.min(112)) & !(width - 1)
                } else {
                    rng.below(len) & !(width - 1)
                };
                let value = interesting(rng, len);
                let bytes = value.to_be_bytes();
                let field = &bytes[8 - width as usize..];
                let end = (at as usize + field.len()).min(data.len());
                data[at as usize..end].copy_from_slice(&field[..end - at as usize]);
            }
            7 => data.truncate(rng.below(len) as usize),
            8 => {
                let extra = rng.below(70_000) as usize;
                data.resize(data.len() + extra, 0);
            }
            _ => {
                let n = rng.below(513) as usize;
                let from = rng.below(len) as usize;
                let to = rng.below(len) as usize;
                let n = n.min(data.len() - from).min(data.len() - to);
                let block = data[from..from + n].to_vec();
                data[to..to + n].copy_from_slice(&block);
            }
        }
    }
    data
}

struct Args {
    iterations: u64,
    seconds: Option<u64>,
    seed: u64,
    corpus: Option<PathBuf>,
    write_seeds: Option<PathBuf>,
}

fn parse_args() -> Args {
    let mut args = Args {
        iterations: 10_000,
        seconds: None,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1,
        corpus: None,
        write_seeds: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match arg.as_str() {
            "--seconds" => args.seconds = Some(value("--seconds").parse().expect("seconds")),
            "--seed" => args.seed = value("--seed").parse::<u64>().expect("seed") | 1,
            "--corpus" => args.corpus = Some(value("--corpus").into()),
            "--write-seeds" => args.write_seeds = Some(value("--write-seeds").into()),
            n => args.iterations = n.parse().expect("ITERATIONS [--seconds S] [--seed X]"),
        }
    }
    args
}

struct Findings {
    dir: PathBuf,
    count: usize,
}

impl Findings {
    fn save(&mut self, what: &str, data: &[u8], detail: &str) {
        std::fs::create_dir_all(&self.dir).expect("create artifacts/");
        let name = format!("{what}-{}-{}", std::process::id(), self.count);
        let path = self.dir.join(&name);
        std::fs::write(&path, data).expect("save a finding");
        eprintln!(
            "FINDING {what}: {detail}; input saved as {}",
            path.display()
        );
        self.count += 1;
    }
}

fn main() {
    let args = parse_args();
    let harness = fv_disk_fuzz::Harness::new().expect("set up the fuzz directory");
    let seeds = fv_disk_fuzz::make_seeds(harness.dir()).expect("make seeds (needs qemu-utils)");
    if let Some(dir) = &args.write_seeds {
        std::fs::create_dir_all(dir).expect("create the seed directory");
        for (name, data) in &seeds {
            std::fs::write(dir.join(name), data).expect("write a seed");
        }
        println!("wrote {} seeds to {}", seeds.len(), dir.display());
        return;
    }

    // Panics are findings, reported once by us rather than by the default hook per thread.
    std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
    let mut findings = Findings {
        dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts"),
        count: 0,
    };
    // A stack overflow or an abort cannot be caught: the input being run is always on disk.
    let last = findings.dir.join("last-input");
    std::fs::create_dir_all(&findings.dir).expect("create artifacts/");
    let run = |data: &[u8], findings: &mut Findings| -> Duration {
        std::fs::write(&last, data).expect("save the current input");
        BIGGEST.store(0, Ordering::Relaxed);
        let start = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| harness.run(data)));
        let took = start.elapsed();
        let biggest = BIGGEST.load(Ordering::Relaxed);
        if result.is_err() {
            findings.save("crash", data, "panicked");
        }
        if biggest > BIG_ALLOC {
            findings.save("alloc", data, &format!("allocated {biggest} bytes at once"));
        }
        if took > SLOW {
            findings.save("slow", data, &format!("took {took:?}"));
        }
        took
    };

    let mut corpus_runs = 0;
    for (_, data) in &seeds {
        run(data, &mut findings);
    }
    if let Some(dir) = &args.corpus {
        for entry in std::fs::read_dir(dir).expect("read the corpus directory") {
            let data = std::fs::read(entry.expect("corpus entry").path()).expect("corpus file");
            run(&data, &mut findings);
            corpus_runs += 1;
        }
    }

    let mut rng = Rng(args.seed);
    let start = Instant::now();
    let deadline = args.seconds.map(|s| start + Duration::from_secs(s));
    let mut slowest = Duration::ZERO;
    let mut done = 0;
    while done < args.iterations && deadline.is_none_or(|d| Instant::now() < d) {
        let seed = &seeds[rng.below(seeds.len() as u64) as usize].1;
        let data = mutate(&mut rng, seed);
        slowest = slowest.max(run(&data, &mut findings));
        done += 1;
        if done % 2000 == 0 {
            eprintln!("{done} cases, {:.0?}", start.elapsed());
        }
    }
    println!(
        "fuzz_qcow2: seed {}, {} seeds, {corpus_runs} corpus files, {done} mutated cases in {:.1?} \
         (slowest {slowest:.1?}): {} findings",
        args.seed,
        seeds.len(),
        start.elapsed(),
        findings.count
    );
    if findings.count > 0 {
        std::process::exit(1);
    }
}
