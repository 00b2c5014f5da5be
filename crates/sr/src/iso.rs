//! ISO libraries (`iso` SRs): a directory of `*.iso` files, each a read-only VDI named by its
//! file name. Nothing is ever written there: VDIs come and go with the files.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::io_err;
use crate::{Scan, SrError, VdiInfo};

/// An ISO library in one directory.
#[derive(Debug)]
pub struct IsoSr {
    dir: PathBuf,
}

impl IsoSr {
    /// The library in `dir`, which must be a directory.
    pub fn open(dir: &Path) -> Result<IsoSr, SrError> {
        let meta = fs::metadata(dir).map_err(io_err("open the ISO library", dir))?;
        if !meta.is_dir() {
            return Err(SrError::Io {
                op: "open the ISO library",
                path: dir.to_path_buf(),
                source: std::io::Error::other("not a directory"),
            });
        }
        Ok(IsoSr {
            dir: dir.to_path_buf(),
        })
    }

    /// The library's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every `*.iso` regular file (symlinks followed: libraries are often links to
    /// downloads), as VDIs without a uuid (the caller keeps one per file name); anything else
    /// is ignored, with why, unless its name starts with `.`.
    pub fn scan(&self) -> Result<Scan, SrError> {
        let mut out = Scan::default();
        let rd = fs::read_dir(&self.dir).map_err(io_err("list", &self.dir))?;
        for de in rd {
            let de = de.map_err(io_err("list", &self.dir))?;
            let Some(name) = de.file_name().to_str().map(str::to_owned) else {
                out.ignored.push((
                    de.file_name().to_string_lossy().into_owned(),
                    "not a UTF-8 name".into(),
                ));
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            if !name.to_ascii_lowercase().ends_with(".iso") {
                out.ignored.push((name, "not named *.iso".into()));
                continue;
            }
            match fs::metadata(de.path()) {
                Ok(m) if m.is_file() => out.vdis.push(VdiInfo {
                    name,
                    uuid: String::new(),
                    hidden: false,
                    virtual_size: m.len(),
                    physical_utilisation: m.len(),
                    parent: None,
                    format: "raw",
                }),
                Ok(_) => out.ignored.push((name, "not a regular file".into())),
                Err(e) => out.ignored.push((name, format!("cannot inspect: {e}"))),
            }
        }
        out.vdis.sort_by(|a, b| a.name.cmp(&b.name));
        out.ignored.sort();
        Ok(out)
    }

    /// The path of the ISO `name`, which must be a file name of the library (no `/`, not
    /// `.` or `..`).
    pub fn path(&self, name: &str) -> Result<PathBuf, SrError> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(SrError::BadName {
                name: name.to_owned(),
                reason: "not a file name of the ISO library".into(),
            });
        }
        Ok(self.dir.join(name))
    }

    /// `SR.physical_size` and `physical_utilisation`: the filesystem's size and use.
    pub fn sizes(&self) -> Result<(u64, u64), SrError> {
        let st =
            rustix::fs::statvfs(&self.dir).map_err(|e| io_err("statvfs", &self.dir)(e.into()))?;
        let total = st.f_blocks.saturating_mul(st.f_frsize);
        let used = st
            .f_blocks
            .saturating_sub(st.f_bfree)
            .saturating_mul(st.f_frsize);
        Ok((total, used))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_iso_files_only() {
        let dir = std::env::temp_dir().join(format!("fv-sr-iso-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("sub.iso")).unwrap();
        fs::write(dir.join("b.iso"), vec![1u8; 4096]).unwrap();
        fs::write(dir.join("A.ISO"), b"x").unwrap();
        fs::write(dir.join("notes.txt"), b"x").unwrap();
        fs::write(dir.join(".hidden.iso"), b"x").unwrap();
        let sr = IsoSr::open(&dir).unwrap();
        let scan = sr.scan().unwrap();
        let names: Vec<(&str, u64)> = scan
            .vdis
            .iter()
            .map(|v| (v.name.as_str(), v.virtual_size))
            .collect();
        assert_eq!(names, [("A.ISO", 1), ("b.iso", 4096)]);
        assert_eq!(scan.ignored.len(), 2, "{:?}", scan.ignored);
        assert!(sr.path("../etc/passwd").is_err());
        assert!(sr.path("..").is_err());
        assert_eq!(sr.path("b.iso").unwrap(), dir.join("b.iso"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
