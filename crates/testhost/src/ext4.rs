//! ext4 images for storage tests.

use std::path::Path;
use std::process::Command;

use crate::tools::{self, require};
use crate::Error;

/// Builds (or overwrites) `image`, an ext4 filesystem of `size_mib` MiB holding a copy of `dir`.
pub fn mkext4(dir: &Path, image: &Path, size_mib: u64) -> Result<(), Error> {
    let mkfs = require("mkfs.ext4", "e2fsprogs")?;
    if !dir.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    if size_mib == 0 {
        return Err(Error::InvalidArgument(
            "image size must be at least 1 MiB".into(),
        ));
    }
    // mke2fs would otherwise keep a larger old file's size.
    match std::fs::remove_file(image) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::io("removing", image)(e))
        }
        _ => {}
    }
    tools::run(
        Command::new(mkfs)
            .args(["-q", "-F", "-E", "root_owner=0:0", "-d"])
            .arg(dir)
            .arg(image)
            .arg(format!("{size_mib}M")),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_an_image_debugfs_can_read() {
        if tools::find("mkfs.ext4").is_none() || tools::find("debugfs").is_none() {
            return;
        }
        let base = std::env::temp_dir().join(format!("fv-testhost-ext4-{}", std::process::id()));
        let src = base.join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/hello.txt"), b"hi\n").unwrap();
        let image = base.join("fs.img");
        mkext4(&src, &image, 8).unwrap();
        assert_eq!(std::fs::metadata(&image).unwrap().len(), 8 << 20);
        let out = Command::new(tools::find("debugfs").unwrap())
            .args(["-R", "cat /sub/hello.txt"])
            .arg(&image)
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"hi\n");
        assert!(mkext4(&base.join("missing"), &image, 8).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
