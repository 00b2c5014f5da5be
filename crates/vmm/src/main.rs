//! fv-vmm entry point: flags → config → VM → exit status (see `VmExit::status`).

use std::io::IsTerminal;

use clap::Parser;
use fv_vmm::builder::build_vm;
use fv_vmm::config::{Cli, SerialConfig};
use fv_vmm::exit::VmExit;
use vmm_sys_util::terminal::Terminal;

fn main() {
    let cli = Cli::parse();
    let config = match cli.into_config() {
        Ok(c) => c,
        Err(e) => fail(&e),
    };
    let vmm = match build_vm(&config) {
        Ok(v) => v,
        Err(e) => fail(&e),
    };

    // Raw mode so keystrokes (Ctrl-C included) reach the guest, as with a real console.
    let stdin = std::io::stdin();
    let raw = config.serial == SerialConfig::Stdio
        && stdin.is_terminal()
        && stdin.lock().set_raw_mode().is_ok();

    let exit = vmm.run();
    if raw {
        let _ = stdin.lock().set_canon_mode();
    }
    match &exit {
        VmExit::Crash(why) => eprintln!("fv-vmm: guest crashed: {why}"),
        VmExit::VmmError(why) => eprintln!("fv-vmm: {why}"),
        VmExit::PowerOff | VmExit::Reboot => {}
    }
    std::process::exit(exit.status());
}

/// Prints `e` and its causes on one line, then exits with the VMM-error status.
fn fail(e: &dyn std::error::Error) -> ! {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        // Some libraries (linux-loader) repeat their cause in their own message.
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    eprintln!("fv-vmm: {msg}");
    std::process::exit(VmExit::VmmError(String::new()).status());
}
