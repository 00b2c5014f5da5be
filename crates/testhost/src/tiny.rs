//! The tiny hand-written guests of `tests/guests`, assembled and linked with the system
//! `as` and `ld` into ELF64 images that fv-vmm enters in long mode (no PVH note).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tools::{require, run};
use crate::Error;

/// `tests/guests` at the workspace root.
pub fn tiny_guest_sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/guests")
}

/// Builds `tests/guests/<name>.S` into `<out_dir>/<name>.elf` and returns its path.
/// Safe when several processes build the same guest at once: each links under its own
/// name and renames the result into place.
pub fn build_tiny_guest(name: &str, out_dir: &Path) -> Result<PathBuf, Error> {
    let as_ = require("as", "binutils")?;
    let ld = require("ld", "binutils")?;
    let src_dir = tiny_guest_sources();
    let src = src_dir.join(format!("{name}.S"));
    if !src.is_file() {
        return Err(Error::InvalidArgument(format!(
            "no tiny guest {name}: {} does not exist",
            src.display()
        )));
    }
    std::fs::create_dir_all(out_dir).map_err(Error::io("creating", out_dir))?;
    let pid = std::process::id();
    let obj = out_dir.join(format!("{name}.{pid}.o"));
    let tmp = out_dir.join(format!("{name}.{pid}.elf"));
    let elf = out_dir.join(format!("{name}.elf"));
    run(Command::new(as_)
        .arg("--64")
        .arg("-I")
        .arg(&src_dir)
        .arg("-o")
        .arg(&obj)
        .arg(&src))?;
    let linked = run(Command::new(ld)
        .args(["-static", "-nostdlib", "--no-warn-rwx-segments", "-T"])
        .arg(src_dir.join("guest.ld"))
        .arg("-o")
        .arg(&tmp)
        .arg(&obj));
    let _ = std::fs::remove_file(&obj);
    linked?;
    std::fs::rename(&tmp, &elf).map_err(Error::io("renaming into place", &elf))?;
    Ok(elf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_an_elf64_and_names_a_missing_guest() {
        let dir = std::env::temp_dir().join(format!("fv-tiny-{}", std::process::id()));
        let elf = build_tiny_guest("hello", &dir).unwrap();
        let bytes = std::fs::read(&elf).unwrap();
        assert_eq!(&bytes[..5], b"\x7fELF\x02");
        let err = build_tiny_guest("no-such-guest", &dir).unwrap_err();
        assert!(err.to_string().contains("no-such-guest"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
