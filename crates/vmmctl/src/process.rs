//! One fv-vmm process: started here or found again, watched through a pidfd.

use std::fs::{self, OpenOptions};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

use crate::rundir::{start_time, ProcessId, RunDir};
use crate::{http_request, Error};

/// How long fv-vmm may take to build the VM and open its API socket.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How often a starting VMM's API socket is tried.
const START_POLL: Duration = Duration::from_millis(10);

/// Why a VMM ended (fv-vmm's exit status and exit file, see its docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The guest powered off, or the VM was stopped through the API.
    PowerOff,
    /// The guest asked for a reboot.
    Reboot,
    /// The guest crashed; why.
    Crash(String),
    /// fv-vmm failed; why.
    VmmError(String),
    /// fv-vmm was killed before it could say why (a signal, or no exit file).
    Killed(String),
}

impl Exit {
    /// Reads fv-vmm's exit file: `{"status", "reason", "detail"}`; empty means killed.
    pub(crate) fn from_exit_file(text: &str) -> Exit {
        let Ok(json) = serde_json::from_str::<serde_json::Value>(text) else {
            return Exit::Killed("fv-vmm ended without saying why".into());
        };
        let detail = json["detail"].as_str().unwrap_or_default().to_owned();
        match json["reason"].as_str() {
            Some("poweroff") => Exit::PowerOff,
            Some("reboot") => Exit::Reboot,
            Some("crash") => Exit::Crash(detail),
            Some("vmm_error") => Exit::VmmError(detail),
            _ => Exit::Killed(format!("fv-vmm's exit file is not understood: {text}")),
        }
    }
}

/// A running (or just ended) fv-vmm.
#[derive(Debug)]
pub struct Vmm {
    dir: RunDir,
    pid: i32,
    pidfd: OwnedFd,
    /// Set when this process started it: it must then be reaped.
    child: Option<Child>,
    exit: Option<Exit>,
}

impl Vmm {
    /// Starts `fv_vmm` in `dir` with `config` (fv-vmm's JSON config file; the API, serial
    /// and exit files are the run directory's), paused if `paused`, and waits until its
    /// API answers. fv-vmm runs in its own process group, so that it outlives us.
    pub fn launch(
        dir: RunDir,
        fv_vmm: &Path,
        config: &serde_json::Value,
        paused: bool,
    ) -> Result<Vmm, Error> {
        dir.prepare()?;
        let config_path = dir.config();
        fs::write(&config_path, config.to_string()).map_err(|source| Error::Io {
            what: "writing",
            path: config_path.clone(),
            source,
        })?;
        let log_path = dir.stderr_log();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| Error::Io {
                what: "opening",
                path: log_path,
                source,
            })?;
        let mut cmd = Command::new(fv_vmm);
        cmd.arg("--config")
            .arg(&config_path)
            .arg("--api-socket")
            .arg(dir.api_socket())
            .arg("--exit-file")
            .arg(dir.exit_file())
            .arg("--serial")
            .arg(format!("socket={}", dir.serial_socket().display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0);
        if paused {
            cmd.arg("--paused");
        }
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            binary: fv_vmm.to_path_buf(),
            source,
        })?;
        // A child that has not been reaped keeps its pid and /proc entry, even if it ended.
        let pid = child.id() as i32;
        let pidfd = open_pidfd(pid)?;
        let start_time = start_time(pid).unwrap_or_default();
        let mut vmm = Vmm {
            dir,
            pid,
            pidfd,
            child: Some(child),
            exit: None,
        };
        vmm.dir.write_pid(ProcessId { pid, start_time })?;
        vmm.wait_for_api()?;
        Ok(vmm)
    }

    /// Waits until the API socket accepts a connection, or the guest has already ended;
    /// fails if fv-vmm does.
    fn wait_for_api(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if UnixStream::connect(self.dir.api_socket()).is_ok() {
                return Ok(());
            }
            match self.wait(Some(START_POLL))? {
                None => {}
                // The guest ran and ended (it may do so at once): the caller hears of it
                // from `wait` like any other end.
                Some(Exit::PowerOff | Exit::Reboot | Exit::Crash(_)) => return Ok(()),
                Some(Exit::VmmError(why) | Exit::Killed(why)) => {
                    let tail = self.dir.stderr_tail();
                    return Err(Error::StartFailed(
                        if tail.is_empty() || tail.contains(&why) {
                            why
                        } else {
                            format!("{why} (stderr: {tail})")
                        },
                    ));
                }
            }
            if Instant::now() >= deadline {
                let _ = self.kill();
                let _ = self.wait(Some(Duration::from_secs(5)));
                return Err(Error::StartTimeout {
                    pid: self.pid,
                    secs: START_TIMEOUT.as_secs(),
                });
            }
        }
    }

    /// Finds the VMM of `dir` again (after fvd restarted). `None` when it is no longer
    /// running: then [`RunDir::last_exit`] says why it ended.
    ///
    /// The pid file names it; if there is none (the supervisor died between starting
    /// fv-vmm and writing it), the processes are searched for the one serving this
    /// directory's API socket, so that no VMM is left running unknown.
    pub fn adopt(dir: RunDir) -> Result<Option<Vmm>, Error> {
        let id = match dir.read_pid() {
            Some(id) => id,
            None => match find_by_socket(&dir) {
                Some(id) => {
                    dir.write_pid(id)?;
                    id
                }
                None => return Ok(None),
            },
        };
        if start_time(id.pid) != Some(id.start_time) {
            return Ok(None);
        }
        let pidfd = match pidfd_open(pid_of(id.pid)?, PidfdFlags::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::SRCH) => return Ok(None),
            Err(e) => {
                return Err(Error::Pidfd {
                    pid: id.pid,
                    source: e.into(),
                })
            }
        };
        // The pid may have been recycled between the check and the open: check again, now
        // that the pidfd pins whichever process it is.
        if start_time(id.pid) != Some(id.start_time) {
            return Ok(None);
        }
        Ok(Some(Vmm {
            dir,
            pid: id.pid,
            pidfd,
            child: None,
            exit: None,
        }))
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn dir(&self) -> &RunDir {
        &self.dir
    }

    /// Readable once the process has ended (for an event loop to wait on).
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Waits up to `timeout` (forever if `None`) for the VMM to end; `None` if it still
    /// runs. Once it has ended, every call returns the same answer.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<Option<Exit>, Error> {
        if let Some(exit) = &self.exit {
            return Ok(Some(exit.clone()));
        }
        let timeout = timeout.map(|t| Timespec {
            tv_sec: t.as_secs().try_into().unwrap_or(i64::MAX),
            tv_nsec: t.subsec_nanos().into(),
        });
        let mut fds = [PollFd::new(&self.pidfd, PollFlags::IN)];
        loop {
            match poll(&mut fds, timeout.as_ref()) {
                Ok(0) => return Ok(None),
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    return Err(Error::Pidfd {
                        pid: self.pid,
                        source: e.into(),
                    })
                }
            }
        }
        // Ours to reap; its status tells a signal apart from an exit.
        let signal = match self.child.as_mut().map(Child::wait) {
            Some(Ok(status)) => status.signal(),
            _ => None,
        };
        let exit = match (self.dir.last_exit(), signal) {
            (Exit::Killed(_), Some(sig)) => {
                Exit::Killed(format!("fv-vmm was killed by signal {sig}"))
            }
            (exit, _) => exit,
        };
        self.exit = Some(exit.clone());
        Ok(Some(exit))
    }

    /// Kills the VMM at once (SIGKILL): the last resort when it does not answer.
    pub fn kill(&self) -> Result<(), Error> {
        match pidfd_send_signal(&self.pidfd, Signal::KILL) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(Error::Pidfd {
                pid: self.pid,
                source: e.into(),
            }),
        }
    }

    /// Sends one API request; a 2xx answer's JSON body (`Null` when empty), else an error
    /// with fv-vmm's `fault_message`.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, Error> {
        let body = body.map(|b| b.to_string());
        let (status, text) = http_request(&self.dir.api_socket(), method, path, body.as_deref())
            .map_err(Error::Api)?;
        let json = if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        };
        if (200..300).contains(&status) {
            return Ok(json);
        }
        Err(Error::Refused {
            method: method.to_owned(),
            path: path.to_owned(),
            status,
            message: json["fault_message"]
                .as_str()
                .map_or_else(|| json.to_string(), str::to_owned),
        })
    }

    /// `GET /vm`: state, uptime, vCPUs, memory, devices, exit counters.
    pub fn info(&self) -> Result<serde_json::Value, Error> {
        self.request("GET", "/vm", None)
    }

    pub fn pause(&self) -> Result<(), Error> {
        self.request("PUT", "/vm/pause", None).map(drop)
    }

    pub fn resume(&self) -> Result<(), Error> {
        self.request("PUT", "/vm/resume", None).map(drop)
    }

    /// A hard stop: the VMM exits with "poweroff" at once.
    pub fn stop(&self) -> Result<(), Error> {
        self.request("PUT", "/vm/stop", None).map(drop)
    }

    /// A hard reset in place: the guest boots again in the same process.
    pub fn reset(&self) -> Result<(), Error> {
        self.request("PUT", "/vm/reset", None).map(drop)
    }

    /// Presses the ACPI power button: a guest that listens shuts itself down.
    pub fn power_button(&self) -> Result<(), Error> {
        self.request("PUT", "/vm/power-button", None).map(drop)
    }
}

/// The live process whose command line gives `--api-socket` as `dir`'s socket.
fn find_by_socket(dir: &RunDir) -> Option<ProcessId> {
    let socket = dir.api_socket();
    let want = socket.as_os_str().as_encoded_bytes();
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let mut args = cmdline.split(|b| *b == 0);
        let serves_it = args
            .by_ref()
            .skip_while(|a| *a != b"--api-socket")
            .nth(1)
            .is_some_and(|a| a == want);
        if serves_it {
            if let Some(start_time) = start_time(pid) {
                return Some(ProcessId { pid, start_time });
            }
        }
    }
    None
}

fn pid_of(pid: i32) -> Result<Pid, Error> {
    Pid::from_raw(pid).ok_or_else(|| Error::Pidfd {
        pid,
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })
}

fn open_pidfd(pid: i32) -> Result<OwnedFd, Error> {
    pidfd_open(pid_of(pid)?, PidfdFlags::empty()).map_err(|e| Error::Pidfd {
        pid,
        source: e.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_files_are_read_as_fv_vmm_writes_them() {
        let read = Exit::from_exit_file;
        assert_eq!(
            read(r#"{"status":0,"reason":"poweroff","detail":""}"#),
            Exit::PowerOff
        );
        assert_eq!(
            read(r#"{"status":10,"reason":"reboot","detail":""}"#),
            Exit::Reboot
        );
        assert_eq!(
            read(r#"{"status":11,"reason":"crash","detail":"triple fault"}"#),
            Exit::Crash("triple fault".into())
        );
        assert_eq!(
            read(r#"{"status":1,"reason":"vmm_error","detail":"no kvm"}"#),
            Exit::VmmError("no kvm".into())
        );
        assert!(matches!(read(""), Exit::Killed(_)));
        assert!(matches!(read("{\"reason\": 3}"), Exit::Killed(_)));
        assert!(matches!(read("\u{0}garbage"), Exit::Killed(_)));
    }
}
