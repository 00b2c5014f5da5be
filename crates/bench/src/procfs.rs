//! What /proc says about a running process: CPU time and resident memory.

use std::path::Path;

/// CPU time the process has used so far, summed over all its threads, in nanoseconds.
/// schedstat counts in ns; /proc/PID/stat would give 10 ms ticks, too coarse for a
/// start-up that takes a few ms.
pub fn cpu_ns(pid: u32) -> std::io::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        // A thread that exits between readdir and read simply stops counting.
        if let Ok(text) = std::fs::read_to_string(path) {
            total += text
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total)
}

/// Resident memory of the whole process, and of its guest RAM mapping (the anonymous
/// mapping whose size is within `guest_bytes ..= guest_bytes + slack`), in KiB.
pub struct Resident {
    pub total_kib: u64,
    pub guest_kib: u64,
}

pub fn resident(pid: u32, guest_bytes: u64, slack: u64) -> std::io::Result<Resident> {
    parse_smaps(
        &std::fs::read_to_string(Path::new(&format!("/proc/{pid}/smaps")))?,
        guest_bytes,
        slack,
    )
    .ok_or_else(|| std::io::Error::other(format!("no guest RAM mapping in /proc/{pid}/smaps")))
}

fn parse_smaps(text: &str, guest_bytes: u64, slack: u64) -> Option<Resident> {
    let mut total_kib = 0;
    let mut guest_kib = None;
    let mut in_guest = false;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-') {
            // A mapping header: "start-end perms offset dev inode [path]".
            if let (Ok(start), Ok(end)) =
                (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
            {
                let size = end - start;
                in_guest = guest_kib.is_none()
                    && (guest_bytes..=guest_bytes + slack).contains(&size)
                    && words.nth(3).is_some_and(|inode| inode == "0")
                    && words.next().is_none();
                continue;
            }
        }
        if first == "Rss:" {
            let kib: u64 = words.next()?.parse().ok()?;
            total_kib += kib;
            if in_guest {
                guest_kib = Some(kib);
            }
        }
    }
    Some(Resident {
        total_kib,
        guest_kib: guest_kib?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_guest_mapping() {
        let smaps = "\
55d0c0000000-55d0c0100000 r-xp 00000000 08:01 1234 /usr/bin/fv-vmm
Rss:                 900 kB
7f0000000000-7f0010000000 rw-p 00000000 00:00 0 
Rss:                  64 kB
7f0010000000-7f0010021000 rw-p 00000000 00:00 0 
Rss:                  12 kB
";
        let r = parse_smaps(smaps, 256 << 20, 0).unwrap();
        assert_eq!((r.total_kib, r.guest_kib), (976, 64));
        assert!(parse_smaps(smaps, 512 << 20, 0).is_none());
    }

    #[test]
    fn reads_our_own_cpu_time() {
        assert!(cpu_ns(std::process::id()).unwrap() > 0);
    }
}
