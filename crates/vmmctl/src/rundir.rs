//! A VM's run directory: the files that let fvd find a running VMM again.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::process::Exit;
use crate::Error;

/// `<dir>/config.json`, `api.sock`, `serial.sock`, `exit.json`, `pid` and `stderr.log`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDir(PathBuf);

/// A process as the pid file names it: its pid, and its start time (in clock ticks after
/// boot, `/proc/<pid>/stat` field 22), which a recycled pid does not share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcessId {
    pub pid: i32,
    pub start_time: u64,
}

fn io_err<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> Error + 'p {
    move |source| Error::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

impl RunDir {
    /// The run directory at `path` (nothing is created).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RunDir(path.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn config(&self) -> PathBuf {
        self.0.join("config.json")
    }

    /// fv-vmm's API socket.
    pub fn api_socket(&self) -> PathBuf {
        self.0.join("api.sock")
    }

    /// The guest's serial console (ttyS0), one client at a time.
    pub fn serial_socket(&self) -> PathBuf {
        self.0.join("serial.sock")
    }

    pub fn exit_file(&self) -> PathBuf {
        self.0.join("exit.json")
    }

    pub fn stderr_log(&self) -> PathBuf {
        self.0.join("stderr.log")
    }

    fn pid_file(&self) -> PathBuf {
        self.0.join("pid")
    }

    /// Creates the directory (mode 0700: it holds the VM's sockets) and clears what a
    /// previous run left, but the log.
    pub(crate) fn prepare(&self) -> Result<(), Error> {
        fs::create_dir_all(&self.0).map_err(io_err("creating", &self.0))?;
        fs::set_permissions(&self.0, fs::Permissions::from_mode(0o700))
            .map_err(io_err("setting the mode of", &self.0))?;
        for path in [
            self.pid_file(),
            self.exit_file(),
            self.api_socket(),
            self.serial_socket(),
        ] {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != ErrorKind::NotFound => {
                    return Err(io_err("removing", &path)(e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Records the process, atomically (a reader sees the old file or the new one).
    pub(crate) fn write_pid(&self, id: ProcessId) -> Result<(), Error> {
        let path = self.pid_file();
        let tmp = self.0.join("pid.tmp");
        fs::write(&tmp, format!("{} {}\n", id.pid, id.start_time))
            .map_err(io_err("writing", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("renaming to", &path))
    }

    /// The recorded process, or `None` if there is no (readable) pid file.
    pub(crate) fn read_pid(&self) -> Option<ProcessId> {
        let text = fs::read_to_string(self.pid_file()).ok()?;
        let mut words = text.split_whitespace();
        let pid = words.next()?.parse().ok()?;
        let start_time = words.next()?.parse().ok()?;
        Some(ProcessId { pid, start_time })
    }

    /// Why the VMM that ran here ended, once it has ended. A missing or empty exit file
    /// means it was killed before it could write one.
    pub fn last_exit(&self) -> Exit {
        let text = fs::read_to_string(self.exit_file()).unwrap_or_default();
        Exit::from_exit_file(&text)
    }

    /// The last lines fv-vmm wrote to stderr, for an error message.
    pub fn stderr_tail(&self) -> String {
        let text = fs::read_to_string(self.stderr_log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("; ")
    }
}

/// `pid`'s start time, if such a process exists and has not ended (a zombie has).
pub(crate) fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    // Fields from 3 on: the state is field 3, the start time field 22.
    if matches!(fields.next()?, "Z" | "X") {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> RunDir {
        let dir = std::env::temp_dir().join(format!("fv-vmmctl-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        RunDir::new(dir)
    }

    #[test]
    fn pid_files_round_trip_and_garbage_is_no_process() {
        let dir = temp_dir("pid");
        dir.prepare().unwrap();
        assert_eq!(dir.read_pid(), None);
        let me = ProcessId {
            pid: std::process::id() as i32,
            start_time: start_time(std::process::id() as i32).unwrap(),
        };
        dir.write_pid(me).unwrap();
        assert_eq!(dir.read_pid(), Some(me));
        fs::write(dir.path().join("pid"), "12x 7\n").unwrap();
        assert_eq!(dir.read_pid(), None);
        // prepare() clears a previous run's files.
        dir.write_pid(me).unwrap();
        fs::write(dir.exit_file(), "{}").unwrap();
        dir.prepare().unwrap();
        assert_eq!(dir.read_pid(), None);
        assert!(!dir.exit_file().exists());
        let mode = fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        fs::remove_dir_all(dir.path()).unwrap();
    }

    #[test]
    fn start_times_tell_processes_apart() {
        let me = std::process::id() as i32;
        let mine = start_time(me).unwrap();
        assert!(mine > 0);
        assert_eq!(start_time(me), Some(mine), "stable");
        assert_eq!(
            start_time(1).map(|t| t <= mine),
            Some(true),
            "init started first"
        );
        assert_eq!(start_time(i32::MAX), None);
    }
}
