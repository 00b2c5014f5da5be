//! Network namespaces, for tests that need taps, bridges and addresses of their own.

use crate::{link, sys, HostnetError, Result};

/// Moves the calling thread (only it) into a new, empty network namespace. Interfaces,
/// sockets and taps it creates afterwards live there, and the namespace (with every virtual
/// interface in it) goes away once the thread and all those descriptors are gone. Use a
/// thread made for this: [`run_in_new_netns`].
pub fn unshare_netns() -> Result<()> {
    sys::unshare_netns().map_err(HostnetError::Unshare)
}

/// Runs `f` on a new thread inside a new network namespace whose loopback is up, and
/// returns its result. A panic in `f` is resumed on the caller's thread. Nothing `f` sets up
/// there can touch the host's interfaces, and the namespace is torn down afterwards.
pub fn run_in_new_netns<T, F>(f: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    std::thread::scope(|s| {
        let handle = s.spawn(|| -> Result<T> {
            unshare_netns()?;
            link::set_up("lo")?;
            Ok(f())
        });
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
