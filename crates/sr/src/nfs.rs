//! NFS SRs (`nfs`): the export `server:serverpath` mounted by the host (`mount -t nfs`,
//! Debian `nfs-common`); the SR is then a [`crate::FileSr`] in the subdirectory named by its
//! uuid, as XenServer lays NFS SRs out. Backing files are stored bare, so the mount point
//! does not matter.

use std::path::Path;
use std::process::Command;

use crate::SrError;

/// Mount options: NFS 4.1 by default; `soft` so that a dead server fails I/O (after
/// `timeo` × `retrans`) instead of hanging fvd and its VMs for ever; `retry=0` so that a
/// mount that cannot succeed fails at once rather than after two minutes.
fn options(version: &str) -> String {
    format!("vers={version},soft,timeo=100,retrans=3,retry=0")
}

/// Checks what a client gives as `server`, `serverpath` and `nfsversion`.
pub fn check(server: &str, path: &str, version: &str) -> Result<(), SrError> {
    let bad = |name: &str, reason: &str| SrError::Invalid {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    let host_ok = !server.is_empty()
        && !server.starts_with('-')
        && server
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b));
    if !host_ok {
        return Err(bad(server, "not a server name or address"));
    }
    if !path.starts_with('/') || path.contains(['\0', '\n']) {
        return Err(bad(path, "the server path must be absolute"));
    }
    let version_ok = ["3", "4", "4.0", "4.1", "4.2"].contains(&version);
    if !version_ok {
        return Err(bad(version, "NFS versions are 3, 4, 4.0, 4.1 and 4.2"));
    }
    Ok(())
}

/// Mounts `server:path` on `mountpoint` (an existing directory).
pub fn mount(server: &str, path: &str, version: &str, mountpoint: &Path) -> Result<(), SrError> {
    check(server, path, version)?;
    // An IPv6 address goes in brackets.
    let host = if server.contains(':') && !server.starts_with('[') {
        format!("[{server}]")
    } else {
        server.to_owned()
    };
    let source = format!("{host}:{path}");
    let opts = options(version);
    let mut cmd = Command::new("mount");
    cmd.args(["-t", "nfs", "-o", &opts, &source])
        .arg(mountpoint)
        .env("LC_ALL", "C");
    run(
        &mut cmd,
        format!("mount -t nfs -o {opts} {source} {}", mountpoint.display()),
    )
}

/// Unmounts `mountpoint`.
pub fn unmount(mountpoint: &Path) -> Result<(), SrError> {
    let mut cmd = Command::new("umount");
    cmd.arg(mountpoint).env("LC_ALL", "C");
    run(&mut cmd, format!("umount {}", mountpoint.display()))
}

/// Whether something is mounted on `mountpoint` (as `/proc/self/mountinfo` says).
pub fn is_mounted(mountpoint: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let canonical = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.into());
    let want = canonical.to_string_lossy();
    // Field 5 is the mount point, with spaces and the like escaped as octal.
    let want = want
        .replace('\\', "\\134")
        .replace(' ', "\\040")
        .replace('\t', "\\011")
        .replace('\n', "\\012");
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

fn run(cmd: &mut Command, command: String) -> Result<(), SrError> {
    let out = cmd.output().map_err(|e| SrError::Command {
        command: command.clone(),
        status: "not started".into(),
        stderr: e.to_string(),
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(SrError::Command {
        command,
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_is_refused_before_mount_runs() {
        assert!(check("nfs.example", "/exports/sr", "4.1").is_ok());
        assert!(check("fd00::1", "/x", "3").is_ok());
        assert!(check("-o", "/x", "4").is_err());
        assert!(check("a b", "/x", "4").is_err());
        assert!(check("", "/x", "4").is_err());
        assert!(check("h", "relative", "4").is_err());
        assert!(check("h", "/x", "5").is_err());
        assert!(check("h", "/x", "4.1,rw").is_err());
        assert!(is_mounted(Path::new("/proc")));
        assert!(!is_mounted(Path::new("/proc/self")));
    }
}
