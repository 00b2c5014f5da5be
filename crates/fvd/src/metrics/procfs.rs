//! What the sampler reads from `/proc` and `/sys`: parsers over the files' text (pure,
//! unit-tested) and small readers that return `None` for a file that is gone (a process
//! that ended, a tap that was removed).

use std::path::Path;

/// Linux's `USER_HZ`: the unit of the tick counts in `/proc/stat` and `/proc/<pid>/stat`.
/// It is part of the user-space ABI and is 100 on x86-64 whatever the kernel's `HZ`.
pub const USER_HZ: f64 = 100.0;

/// One CPU line of `/proc/stat`, in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuTimes {
    /// Time not idle: user, nice, system, irq, softirq and steal (guest time is already
    /// part of user and nice).
    pub busy: f64,
    /// Everything, busy plus idle and iowait.
    pub total: f64,
}

/// `/proc/stat`: the `cpu` line (all CPUs) and each `cpuN` line, in N order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stat {
    pub all: Option<CpuTimes>,
    pub cpus: Vec<(u32, CpuTimes)>,
}

fn cpu_times(fields: &[u64]) -> Option<CpuTimes> {
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    if fields.len() < 4 {
        return None;
    }
    let at = |i: usize| fields.get(i).copied().unwrap_or(0);
    let idle = at(3).saturating_add(at(4));
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .fold(0u64, |acc, &i| acc.saturating_add(at(i)));
    Some(CpuTimes {
        busy: busy as f64 / USER_HZ,
        total: busy.saturating_add(idle) as f64 / USER_HZ,
    })
}

/// Parses `/proc/stat`; lines it does not know are skipped.
pub fn parse_stat(text: &str) -> Stat {
    let mut stat = Stat::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(name) = words.next() else { continue };
        let Some(index) = name.strip_prefix("cpu") else {
            continue;
        };
        let fields: Vec<u64> = words.map_while(|w| w.parse().ok()).collect();
        let Some(times) = cpu_times(&fields) else {
            continue;
        };
        if index.is_empty() {
            stat.all = Some(times);
        } else if let Ok(i) = index.parse::<u32>() {
            stat.cpus.push((i, times));
        }
    }
    stat.cpus.sort_by_key(|(i, _)| *i);
    stat
}

/// `/proc/meminfo`'s `key` (e.g. `MemAvailable`), in KiB.
pub fn parse_meminfo_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// The 1-minute load average, the first field of `/proc/loadavg`.
pub fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace()
        .next()?
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
}

/// What the sampler uses of `/proc/<pid>/stat` or `/proc/<pid>/task/<tid>/stat`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcStat {
    /// utime + stime, in seconds (a vCPU thread's guest time is part of its utime).
    pub cpu_seconds: f64,
    /// Field 22: clock ticks after boot when the process started (with the pid, it names
    /// one process: a recycled pid has another start time).
    pub start_time: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) may hold spaces and
/// parentheses, so the fields are counted after its last `)`.
pub fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let rest = text.rsplit_once(')')?.1;
    // rest starts at field 3 (state); utime, stime and starttime are fields 14, 15, 22.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let ticks = field(14)?.saturating_add(field(15)?);
    Some(ProcStat {
        cpu_seconds: ticks as f64 / USER_HZ,
        start_time: field(22)?,
    })
}

/// The time a task has run on a CPU, in seconds: the first field of
/// `/proc/<pid>/task/<tid>/schedstat` (nanoseconds; finer than the ticks of `stat`).
pub fn parse_schedstat(text: &str) -> Option<f64> {
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

/// `/proc/<pid>/io`: bytes the process made the storage layer read and write
/// (`read_bytes`, `write_bytes`; page-cache hits are not reads, and writes count when
/// pages are dirtied).
pub fn parse_proc_io(text: &str) -> Option<(u64, u64)> {
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some((get("read_bytes")?, get("write_bytes")?))
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes.
pub fn parse_rss_bytes(status: &str) -> Option<u64> {
    parse_meminfo_kib(status, "VmRSS").map(|kib| kib.saturating_mul(1024))
}

/// The vCPU index of an fv-vmm thread named `fv-vcpu<N>` (`crates/vmm/src/vstate/vcpu.rs`).
pub fn vcpu_index(comm: &str) -> Option<u32> {
    let digits = comm.trim_end().strip_prefix("fv-vcpu")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

pub fn host_stat() -> Option<Stat> {
    read("/proc/stat").map(|t| parse_stat(&t))
}

pub fn meminfo() -> Option<String> {
    read("/proc/meminfo")
}

pub fn loadavg() -> Option<f64> {
    parse_loadavg(&read("/proc/loadavg")?)
}

pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    parse_proc_stat(&read(format!("/proc/{pid}/stat"))?)
}

pub fn proc_io(pid: i32) -> Option<(u64, u64)> {
    parse_proc_io(&read(format!("/proc/{pid}/io"))?)
}

pub fn rss_bytes(pid: i32) -> Option<u64> {
    parse_rss_bytes(&read(format!("/proc/{pid}/status"))?)
}

/// Cumulative run time of each `fv-vcpu<N>` thread of process `pid`, in seconds, by N.
pub fn vcpu_seconds(pid: i32) -> Vec<(u32, f64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let dir = task.path();
        let Some(index) = read(dir.join("comm")).as_deref().and_then(vcpu_index) else {
            continue;
        };
        let seconds = read(dir.join("schedstat"))
            .as_deref()
            .and_then(parse_schedstat)
            .or_else(|| {
                read(dir.join("stat"))
                    .as_deref()
                    .and_then(parse_proc_stat)
                    .map(|s| s.cpu_seconds)
            });
        if let Some(s) = seconds {
            out.push((index, s));
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out.dedup_by_key(|(i, _)| *i);
    out
}

/// A network interface's byte counters (`/proc/net/dev`), as the host
/// sees them: (rx_bytes, tx_bytes).
pub fn net_bytes(dev: &str) -> Option<(u64, u64)> {
    // A device name never holds '/' or is "." or ".."; refuse anything else.
    if dev.is_empty() || dev.len() > 15 || dev.contains('/') || dev.starts_with('.') {
        return None;
    }
    // /proc/net/dev shows the reader's network namespace, where fvd made the tap;
    // /sys/class/net shows the namespace of whoever mounted sysfs, which for an fvd in a
    // namespace of its own (a container, the tests) is another one: its taps are not
    // there, and a device of the same name there would be measured instead.
    parse_net_dev(&read("/proc/net/dev")?, dev)
}

/// The received and transmitted bytes of `dev` in `/proc/net/dev`'s text: after the two
/// header lines, `name: rx_bytes rx_packets ... (8 receive fields) tx_bytes ...`.
pub fn parse_net_dev(text: &str, dev: &str) -> Option<(u64, u64)> {
    text.lines().skip(2).find_map(|line| {
        let (name, counters) = line.split_once(':')?;
        if name.trim() != dev {
            return None;
        }
        let fields: Vec<u64> = counters
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        Some((*fields.first()?, *fields.get(8)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_become_seconds() {
        let text = "cpu  100 20 30 400 50 6 7 8 9 10\n\
                    cpu0 60 10 20 200 25 3 4 4 9 10\n\
                    cpu1 40 10 10 200 25 3 3 4 0 0\n\
                    intr 12345 1 2\nctxt 999\nbtime 1700000000\n\
                    cpufreq 1 2 3\n";
        let s = parse_stat(text);
        let all = s.all.unwrap();
        // busy = user+nice+system+irq+softirq+steal = 100+20+30+6+7+8
        assert!((all.busy - 1.71).abs() < 1e-9, "{all:?}");
        assert!((all.total - (1.71 + 4.5)).abs() < 1e-9, "{all:?}");
        assert_eq!(s.cpus.len(), 2);
        assert_eq!(s.cpus[1].0, 1);
        assert!((s.cpus[0].1.busy - 1.01).abs() < 1e-9);
        // Old kernels print fewer fields; garbage gives nothing.
        let s = parse_stat("cpu 1 2 3 4\ncpu0 x y\n");
        assert!((s.all.unwrap().busy - 0.06).abs() < 1e-9);
        assert!(s.cpus.is_empty());
        assert_eq!(parse_stat(""), Stat::default());
    }

    #[test]
    fn net_dev_counters_by_name() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
                    face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                    lo:    1234      10    0    0    0     0          0         0     1234      10    0    0    0     0       0          0\n\
                    vif0c899d3a.0: 5000 40 0 0 0 0 0 0 700 6 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(text, "vif0c899d3a.0"), Some((5000, 700)));
        assert_eq!(parse_net_dev(text, "lo"), Some((1234, 1234)));
        // Not there, a prefix of a name, a short or garbled line: nothing.
        assert_eq!(parse_net_dev(text, "vif0c899d3a"), None);
        assert_eq!(parse_net_dev(text, "eth0"), None);
        assert_eq!(parse_net_dev("h\nh\n  x: 1 2 3\n", "x"), None);
        assert_eq!(parse_net_dev("h\nh\n  x: 1 2 3 4 5 6 7 8 y\n", "x"), None);
    }

    #[test]
    fn meminfo_and_loadavg() {
        let text = "MemTotal:       16318412 kB\nMemFree:         1234 kB\n\
                    MemAvailable:   8000000 kB\n";
        assert_eq!(parse_meminfo_kib(text, "MemTotal"), Some(16318412));
        assert_eq!(parse_meminfo_kib(text, "MemAvailable"), Some(8000000));
        assert_eq!(parse_meminfo_kib(text, "Mem"), None);
        assert_eq!(parse_meminfo_kib(text, "SwapTotal"), None);
        assert_eq!(parse_loadavg("0.52 0.58 0.59 2/345 12345\n"), Some(0.52));
        assert_eq!(parse_loadavg(""), None);
        assert_eq!(parse_loadavg("nan 1 1"), None);
    }

    #[test]
    fn proc_stat_survives_odd_names() {
        let text = "4242 (fv-vmm (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 50 0 0 20 0 5 0 987654 1000000 100 18446744073709551615\n";
        let s = parse_proc_stat(text).unwrap();
        assert!((s.cpu_seconds - 3.0).abs() < 1e-9, "{s:?}");
        assert_eq!(s.start_time, 987654);
        assert_eq!(parse_proc_stat("4242 (cut"), None);
        assert_eq!(parse_proc_stat("4242 (x) S 1 2"), None);
    }

    #[test]
    fn schedstat_io_and_status() {
        assert_eq!(parse_schedstat("2500000000 1000 7\n"), Some(2.5));
        assert_eq!(parse_schedstat("x"), None);
        let io = "rchar: 10\nwchar: 20\nsyscr: 1\nsyscw: 2\nread_bytes: 4096\n\
                  write_bytes: 8192\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_proc_io(io), Some((4096, 8192)));
        assert_eq!(parse_proc_io("rchar: 1\n"), None);
        let status = "Name:\tfv-vmm\nVmPeak:\t  100 kB\nVmRSS:\t   2048 kB\n";
        assert_eq!(parse_rss_bytes(status), Some(2048 * 1024));
    }

    #[test]
    fn vcpu_thread_names() {
        assert_eq!(vcpu_index("fv-vcpu0\n"), Some(0));
        assert_eq!(vcpu_index("fv-vcpu12"), Some(12));
        for other in ["fv-vcpu", "fv-api", "fv-virtio-net0", "fv-vcpux", "fv-vmm"] {
            assert_eq!(vcpu_index(other), None, "{other}");
        }
    }

    #[test]
    fn readers_handle_what_is_gone() {
        assert!(proc_stat(i32::MAX).is_none());
        assert!(vcpu_seconds(i32::MAX).is_empty());
        assert!(net_bytes("../etc").is_none());
        assert!(net_bytes("no-such-dev0").is_none());
        assert!(net_bytes("lo").is_some());
        let me = i32::try_from(std::process::id()).unwrap();
        assert!(proc_stat(me).unwrap().start_time > 0);
        assert!(rss_bytes(me).unwrap() > 0);
        assert!(host_stat().unwrap().all.is_some());
        assert!(loadavg().is_some());
    }
}
