//! fv-vmm entry point: flags → config → VM → exit status (see `VmExit::status`).

use std::fs::File;
use std::io::{IsTerminal, Write};

use clap::Parser;
use fv_vmm::builder::build_vm;
use fv_vmm::config::{Cli, SerialConfig};
use fv_vmm::exit::VmExit;
use vmm_sys_util::terminal::Terminal;

fn main() {
    let cli = Cli::parse();
    // Created (empty) before anything else, so that a supervisor hears of a bad config
    // too, and opened now because the sandbox lets no file be opened at exit. A reader
    // waits for the process to end; an empty file then means fv-vmm was killed.
    let mut exit_file = match cli.exit_file.as_deref().map(File::create).transpose() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fv-vmm: cannot create the exit file: {e}");
            std::process::exit(VmExit::VmmError(String::new()).status());
        }
    };
    let config = match cli.into_config() {
        Ok(c) => c,
        Err(e) => fail(&e, exit_file.as_mut()),
    };
    let vmm = match build_vm(&config) {
        Ok(v) => v,
        Err(e) => fail(&e, exit_file.as_mut()),
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
    finish(&exit, exit_file.as_mut());
}

/// Records `exit` in the exit file, if any, and exits with its status.
fn finish(exit: &VmExit, exit_file: Option<&mut File>) -> ! {
    if let Some(file) = exit_file {
        if let Err(e) = file.write_all(exit.to_json().as_bytes()) {
            eprintln!("fv-vmm: cannot write the exit file: {e}");
        }
    }
    std::process::exit(exit.status());
}

/// Prints `e` and its causes on one line, then exits with the VMM-error status.
fn fail(e: &dyn std::error::Error, exit_file: Option<&mut File>) -> ! {
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
    finish(&VmExit::VmmError(msg), exit_file);
}
