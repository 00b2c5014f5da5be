//! fv-vsock: the test guest's vsock tool (busybox has none). Built by `linux_guests.rs`
//! with `rustc -C target-feature=+crt-static` (std and static glibc only, no crates) and
//! added to the guest initramfs as `/bin/fv-vsock`.
//!
//!   fv-vsock listen PORT            accept one connection on PORT, read a line L, answer
//!                                   `pong-from-guest:L`; prints VSOCK-LISTENING PORT once
//!                                   listening, then VSOCK-GUEST-GOT L
//!   fv-vsock connect CID PORT MSG   send MSG and a newline to CID:PORT, print the line
//!                                   that comes back as VSOCK-GUEST-REPLY <line>
//!
//! Exit status 0 on success, 1 with a message on stderr otherwise.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::FromRawFd;

const AF_VSOCK: i32 = 40;
const SOCK_STREAM: i32 = 1;
const SOCK_CLOEXEC: i32 = 0o2000000;
const VMADDR_CID_ANY: u32 = u32::MAX;

/// `struct sockaddr_vm` (linux/vm_sockets.h), 16 bytes.
#[repr(C)]
struct SockaddrVm {
    family: u16,
    reserved1: u16,
    port: u32,
    cid: u32,
    flags: u8,
    zero: [u8; 3],
}

extern "C" {
    fn socket(domain: i32, ty: i32, protocol: i32) -> i32;
    fn bind(fd: i32, addr: *const SockaddrVm, len: u32) -> i32;
    fn listen(fd: i32, backlog: i32) -> i32;
    fn accept(fd: i32, addr: *mut u8, len: *mut u32) -> i32;
    fn connect(fd: i32, addr: *const SockaddrVm, len: u32) -> i32;
}

fn addr(cid: u32, port: u32) -> SockaddrVm {
    SockaddrVm {
        family: AF_VSOCK as u16,
        reserved1: 0,
        port,
        cid,
        flags: 0,
        zero: [0; 3],
    }
}

fn check(what: &str, ret: i32) -> Result<i32, String> {
    if ret < 0 {
        Err(format!("{what}: {}", std::io::Error::last_os_error()))
    } else {
        Ok(ret)
    }
}

/// A new vsock stream socket, owned as a `File`.
fn vsock() -> Result<File, String> {
    // SAFETY: plain system call with constant arguments; the result is checked.
    let fd = check("socket", unsafe { socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn fd_of(f: &File) -> i32 {
    std::os::fd::AsRawFd::as_raw_fd(f)
}

fn read_line(f: &File) -> Result<String, String> {
    let mut line = String::new();
    BufReader::new(f)
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    Ok(line.trim_end().to_string())
}

fn listen_once(port: u32) -> Result<(), String> {
    let s = vsock()?;
    let a = addr(VMADDR_CID_ANY, port);
    let len = std::mem::size_of::<SockaddrVm>() as u32;
    // SAFETY: `a` is a valid sockaddr_vm of `len` bytes that outlives the call.
    check("bind", unsafe { bind(fd_of(&s), &a, len) })?;
    // SAFETY: plain system call on our socket.
    check("listen", unsafe { listen(fd_of(&s), 1) })?;
    println!("VSOCK-LISTENING {port}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    // SAFETY: null address and length pointers are allowed (the peer is not wanted).
    let conn = check("accept", unsafe {
        accept(fd_of(&s), std::ptr::null_mut(), std::ptr::null_mut())
    })?;
    // SAFETY: `conn` is a fresh descriptor that nothing else owns.
    let mut conn = unsafe { File::from_raw_fd(conn) };
    let line = read_line(&conn)?;
    println!("VSOCK-GUEST-GOT {line}");
    conn.write_all(format!("pong-from-guest:{line}\n").as_bytes())
        .map_err(|e| format!("write: {e}"))
}

fn connect_once(cid: u32, port: u32, message: &str) -> Result<(), String> {
    let mut s = vsock()?;
    let a = addr(cid, port);
    let len = std::mem::size_of::<SockaddrVm>() as u32;
    // SAFETY: `a` is a valid sockaddr_vm of `len` bytes that outlives the call.
    check("connect", unsafe { connect(fd_of(&s), &a, len) })?;
    s.write_all(format!("{message}\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    println!("VSOCK-GUEST-REPLY {}", read_line(&s)?);
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |s: &String| s.parse::<u32>().map_err(|e| format!("{s}: {e}"));
    let result = match args.as_slice() {
        [cmd, port] if cmd == "listen" => num(port).and_then(listen_once),
        [cmd, cid, port, msg] if cmd == "connect" => {
            num(cid).and_then(|c| num(port).and_then(|p| connect_once(c, p, msg)))
        }
        _ => Err("usage: fv-vsock listen PORT | fv-vsock connect CID PORT MESSAGE".into()),
    };
    if let Err(e) = result {
        eprintln!("fv-vsock: {e}");
        std::process::exit(1);
    }
}
