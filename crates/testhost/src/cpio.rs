//! A minimal writer for the `newc` cpio format the kernel unpacks as an initramfs.
//!
//! Writing the archive ourselves (instead of staging a directory for `cpio`) lets us add
//! device nodes such as `/dev/console` without root, and keeps builds deterministic.

/// An in-memory newc archive.
#[derive(Default)]
pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl Cpio {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn dir(&mut self, path: &str) {
        self.entry(path, S_IFDIR | 0o755, (0, 0), b"");
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        self.entry(path, S_IFREG | mode, (0, 0), data);
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, S_IFLNK | 0o777, (0, 0), target.as_bytes());
    }

    pub fn char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) {
        self.entry(path, S_IFCHR | mode, (major, minor), b"");
    }

    fn entry(&mut self, path: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let name = path.trim_start_matches('/');
        let name_len = name.len() + 1;
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime: fixed, so identical inputs give identical archives
            u32::try_from(data.len()).unwrap_or(u32::MAX),
            0,
            0,
            rdev.0,
            rdev.1,
            u32::try_from(name_len).unwrap_or(u32::MAX),
            0, // check
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    /// Appends the trailer and returns the archive bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), b"");
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn layout_is_aligned_and_has_trailer() {
        let mut c = Cpio::new();
        c.dir("/bin");
        c.file("/bin/x", 0o755, b"hello");
        let out = c.finish();
        assert_eq!(&out[..6], b"070701");
        assert!(out.len().is_multiple_of(4));
        assert!(out.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn gnu_cpio_lists_it() {
        // Cross-check against the real tool when it is installed.
        let Ok(mut child) = Command::new("cpio")
            .args(["-t", "-v"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
        else {
            return;
        };
        let mut c = Cpio::new();
        c.dir("/dev");
        c.char_dev("/dev/console", 0o600, 5, 1);
        c.symlink("/sh", "busybox");
        c.file("/init", 0o755, b"#!/bin/sh\n");
        let bytes = c.finish();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("piped");
            stdin.write_all(&bytes).expect("write cpio");
        }
        let out = child.wait_with_output().expect("cpio runs");
        let list = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success());
        assert!(list.contains("dev/console"), "{list}");
        assert!(list.contains("sh -> busybox"), "{list}");
        assert!(
            list.lines()
                .any(|l| l.starts_with("crw") && l.contains("5,")),
            "{list}"
        );
    }
}
