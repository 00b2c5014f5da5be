//! vCPUs: creation, boot state, and the thread that runs each one.
//!
//! A vCPU thread runs `KVM_RUN` in a loop and serves port/MMIO exits from the buses.
//! The main thread steers it through `VcpuControl` (run, pause, reset) and kicks it
//! out of `KVM_RUN` with a signal whose handler sets `kvm_run.immediate_exit`, so a
//! kick that lands just before `KVM_RUN` is never lost.

use std::cell::Cell;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use kvm_bindings::{
    kvm_lapic_state, kvm_mp_state, kvm_run, kvm_sregs, kvm_vcpu_events, CpuId, Msrs,
    KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_UNINITIALIZED, KVM_SYSTEM_EVENT_CRASH,
    KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN, KVM_VCPUEVENT_VALID_NMI_PENDING,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use super::regs::{self, BootEntry};
use super::vm::Vm;
use super::KvmContext;
use crate::devices::Bus;
use crate::exit::{ExitEvent, VmExit};
use crate::metrics::ExitCounters;

#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("cannot create vCPU {index}")]
    Create {
        index: u8,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot set vCPU {index}'s {what}")]
    Configure {
        index: u8,
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("KVM accepted only {set} of {wanted} boot MSRs on vCPU {index}")]
    PartialMsrs {
        index: u8,
        set: usize,
        wanted: usize,
    },
    #[error("cannot install the vCPU kick signal handler")]
    SignalHandler(#[source] vmm_sys_util::errno::Error),
    #[error("cannot spawn vCPU thread {index}")]
    Spawn {
        index: u8,
        #[source]
        source: std::io::Error,
    },
}

/// The signal that kicks a vCPU thread out of `KVM_RUN`.
pub fn kick_signal() -> i32 {
    SIGRTMIN()
}

thread_local! {
    /// This thread's `kvm_run` page, for the kick signal handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = KVM_RUN.with(Cell::get);
    if !run.is_null() {
        // SAFETY: `run` was set by this very thread from its VcpuFd's kvm_run mapping,
        // which lives as long as the thread; it is reset to null before the VcpuFd is
        // dropped. Writing one byte is async-signal-safe.
        unsafe { (*run).immediate_exit = 1 };
    }
}

/// Installs the kick handler; call once before starting vCPU threads.
pub fn install_kick_handler() -> Result<(), VcpuError> {
    register_signal_handler(kick_signal(), handle_kick).map_err(VcpuError::SignalHandler)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Run,
    Pause,
}

struct ControlState {
    request: Request,
    /// Bumped on every reset in place; a vCPU that sees a new value reloads its boot state.
    generation: u64,
    /// vCPU threads currently parked (paused, or waiting after reporting a VM exit).
    parked: usize,
}

/// What the main thread tells the vCPU threads, and how it learns they obeyed.
pub struct VcpuControl {
    state: Mutex<ControlState>,
    changed: Condvar,
}

impl VcpuControl {
    pub fn new() -> Self {
        Self::starting(false)
    }

    /// With `paused`, vCPU threads park before running any guest code, until `resume_all`.
    pub fn starting(paused: bool) -> Self {
        VcpuControl {
            state: Mutex::new(ControlState {
                request: if paused { Request::Pause } else { Request::Run },
                generation: 0,
                parked: 0,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the next change of the control state.
    fn wait<'a>(&self, st: MutexGuard<'a, ControlState>) -> MutexGuard<'a, ControlState> {
        self.changed.wait(st).unwrap_or_else(|e| e.into_inner())
    }

    /// Counts the calling vCPU as parked while `keep_waiting` holds.
    fn park_while(&self, keep_waiting: impl Fn(&ControlState) -> bool) {
        let mut st = self.lock();
        if !keep_waiting(&st) {
            return;
        }
        st.parked += 1;
        self.changed.notify_all();
        while keep_waiting(&st) {
            st = self.wait(st);
        }
        st.parked -= 1;
    }

    /// Asks every vCPU to park; returns once `count` threads are parked.
    pub fn pause_all(&self, threads: &[JoinHandle<()>]) {
        self.lock().request = Request::Pause;
        kick_all(threads);
        let mut st = self.lock();
        while st.parked < threads.len() {
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Has the main thread asked the vCPUs to park?
    fn pause_requested(&self) -> bool {
        self.lock().request == Request::Pause
    }

    pub fn resume_all(&self) {
        self.lock().request = Request::Run;
        self.changed.notify_all();
    }

    /// Marks a reset in place: parked vCPUs reload their boot state when resumed.
    pub fn bump_generation(&self) {
        self.lock().generation += 1;
    }
}

impl Default for VcpuControl {
    fn default() -> Self {
        Self::new()
    }
}

fn kick_all(threads: &[JoinHandle<()>]) {
    for t in threads {
        // A thread that already ended cannot be running guest code; nothing to kick.
        let _ = t.kill(kick_signal());
    }
}

/// Everything a vCPU thread shares with the rest of the VMM.
#[derive(Clone)]
pub struct VcpuContext {
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub exit: Arc<ExitEvent>,
    pub counters: Arc<ExitCounters>,
    pub control: Arc<VcpuControl>,
}

pub struct Vcpu {
    pub index: u8,
    fd: VcpuFd,
    cpuid: CpuId,
    initial_sregs: kvm_sregs,
    /// The LAPIC as KVM made it with the vCPU: power-on state.
    initial_lapic: kvm_lapic_state,
    boot: BootEntry,
    /// The last exit was a port or MMIO access, which KVM finishes (result into the
    /// guest's registers, RIP past the instruction) only on the next `KVM_RUN`.
    io_pending: bool,
}

impl Vcpu {
    pub fn new(
        kvm: &KvmContext,
        vm: &Vm,
        index: u8,
        vcpus: u8,
        boot: BootEntry,
    ) -> Result<Self, VcpuError> {
        let fd = vm
            .fd
            .create_vcpu(u64::from(index))
            .map_err(|source| VcpuError::Create { index, source })?;
        let cpuid = super::cpuid::vcpu_cpuid(&kvm.supported_cpuid, index, vcpus);
        let initial_sregs = fd
            .get_sregs()
            .map_err(configure(index, "segment registers"))?;
        let initial_lapic = fd.get_lapic().map_err(configure(index, "LAPIC"))?;
        let vcpu = Vcpu {
            index,
            fd,
            cpuid,
            initial_sregs,
            initial_lapic,
            boot,
            io_pending: false,
        };
        vcpu.fd
            .set_cpuid2(&vcpu.cpuid)
            .map_err(configure(index, "CPUID"))?;
        vcpu.load_boot_state()?;
        Ok(vcpu)
    }

    /// Registers, MSRs, FPU, LAPIC and pending events as at power-on with the kernel
    /// entry loaded. APs are left waiting for INIT/SIPI, as on real hardware. After a
    /// reset in place nothing of the previous kernel's vCPU state is left: no queued
    /// exception or interrupt, no in-service vector or armed timer in the LAPIC, no x2APIC.
    fn load_boot_state(&self) -> Result<(), VcpuError> {
        let index = self.index;
        let msrs = regs::boot_msrs(index == 0);
        let wanted = msrs.len();
        let msrs = Msrs::from_entries(&msrs).map_err(|_| VcpuError::PartialMsrs {
            index,
            set: 0,
            wanted,
        })?;
        let set = self.fd.set_msrs(&msrs).map_err(configure(index, "MSRs"))?;
        if set != wanted {
            return Err(VcpuError::PartialMsrs { index, set, wanted });
        }
        self.fd
            .set_sregs(&regs::boot_sregs(self.initial_sregs, self.boot.protocol))
            .map_err(configure(index, "segment registers"))?;
        self.fd
            .set_regs(&regs::boot_regs(self.boot))
            .map_err(configure(index, "registers"))?;
        self.fd
            .set_fpu(&regs::boot_fpu())
            .map_err(configure(index, "FPU"))?;
        // Nothing injected or pending; `flags` makes KVM clear a pending NMI too.
        let events = kvm_vcpu_events {
            flags: KVM_VCPUEVENT_VALID_NMI_PENDING,
            ..Default::default()
        };
        self.fd
            .set_vcpu_events(&events)
            .map_err(configure(index, "pending events"))?;
        let mut lapic = self.initial_lapic;
        regs::set_lint(&mut lapic);
        self.fd
            .set_lapic(&lapic)
            .map_err(configure(index, "LAPIC"))?;
        let mp_state = if index == 0 {
            KVM_MP_STATE_RUNNABLE
        } else {
            KVM_MP_STATE_UNINITIALIZED
        };
        self.fd
            .set_mp_state(kvm_mp_state { mp_state })
            .map_err(configure(index, "MP state"))
    }

    /// Starts the vCPU thread. `on_start` runs first in the new thread (seccomp filter);
    /// if it fails the VM ends with a VMM error.
    pub fn start(
        self,
        ctx: VcpuContext,
        on_start: Box<dyn FnOnce() -> Result<(), String> + Send>,
    ) -> Result<JoinHandle<()>, VcpuError> {
        let index = self.index;
        std::thread::Builder::new()
            .name(format!("fv-vcpu{index}"))
            .spawn(move || {
                if let Err(e) = on_start() {
                    ctx.exit
                        .request(VmExit::VmmError(format!("vCPU {index}: {e}")));
                    return;
                }
                self.run_loop(&ctx);
            })
            .map_err(|source| VcpuError::Spawn { index, source })
    }

    fn run_loop(mut self, ctx: &VcpuContext) {
        KVM_RUN.with(|c| c.set(self.fd.get_kvm_run()));
        let mut generation = 0;
        loop {
            // Park while paused; reload boot state after a reset in place. A pause asked
            // for after this check reaches `KVM_RUN`, which then finishes a pending access
            // itself before it returns.
            if ctx.control.pause_requested() {
                self.finish_pending_io(ctx);
                ctx.control.park_while(|st| st.request == Request::Pause);
            }
            let current = ctx.control.lock().generation;
            if current != generation {
                generation = current;
                if let Err(e) = self.load_boot_state() {
                    ctx.exit.request(VmExit::VmmError(e.to_string()));
                    Self::park_until_reset(ctx);
                }
            }
            if let Some(exit) = self.run_once(ctx) {
                ctx.exit.request(exit);
            }
            if ctx.exit.is_requested() {
                // This vCPU or a device (ACPI power-off, reset line) ended the VM. The
                // main thread ends the process; until then, or until a reset in place,
                // stay out of the guest, which would run on past its own power-off.
                self.finish_pending_io(ctx);
                Self::park_until_reset(ctx);
            }
        }
    }

    /// Where the vCPU was when the guest crashed, for the crash report: the registers one
    /// needs to find the faulting code in the guest kernel's symbol map (Intel and PVM
    /// keep them; AMD does not).
    fn crash_state(&self) -> String {
        let (Ok(regs), Ok(sregs)) = (self.fd.get_regs(), self.fd.get_sregs()) else {
            return String::new();
        };
        // KVM on AMD resets the vCPU on a shutdown intercept (the VMCB is undefined after
        // one): the registers are then the reset vector's, not the crash's.
        if regs.rip == 0xfff0 && sregs.cs.base == 0xffff_0000 {
            return ": the vCPU's registers were already reset by KVM".into();
        }
        format!(
            ": RIP {:#x} RSP {:#x} CR0 {:#x} CR2 {:#x} CR3 {:#x} CR4 {:#x} EFER {:#x} \
             IDT {:#x}/{:#x}",
            regs.rip,
            regs.rsp,
            sregs.cr0,
            sregs.cr2,
            sregs.cr3,
            sregs.cr4,
            sregs.efer,
            sregs.idt.base,
            sregs.idt.limit
        )
    }

    /// Lets KVM finish the instruction of a port or MMIO exit without running any further
    /// guest code (`immediate_exit`; the KVM API's advice before guest state is read or
    /// replaced). Otherwise the next `KVM_RUN` after a reset in place would complete the
    /// old kernel's access on the new boot state: a register written, RIP moved on.
    fn finish_pending_io(&mut self, ctx: &VcpuContext) {
        while self.io_pending {
            self.fd.set_kvm_immediate_exit(1);
            // A string instruction may need another access before it is done: that exit
            // is served like any other and the loop goes round again.
            if let Some(exit) = self.run_once(ctx) {
                ctx.exit.request(exit);
            }
        }
        self.fd.set_kvm_immediate_exit(0);
    }

    /// Parks until a reset in place has happened and the VM runs again.
    fn park_until_reset(ctx: &VcpuContext) {
        let generation = ctx.control.lock().generation;
        ctx.control
            .park_while(|st| st.generation == generation || st.request == Request::Pause);
    }

    /// Runs the guest until one exit; returns why the VM must end, if it must.
    fn run_once(&mut self, ctx: &VcpuContext) -> Option<VmExit> {
        let c = &ctx.counters;
        let index = self.index;
        let result = self.fd.run();
        self.io_pending = matches!(
            result,
            Ok(VcpuExit::IoIn(..)
                | VcpuExit::IoOut(..)
                | VcpuExit::MmioRead(..)
                | VcpuExit::MmioWrite(..))
        );
        match result {
            Ok(VcpuExit::IoIn(port, data)) => {
                ExitCounters::bump(&c.io_in);
                if !ctx.pio.read(u64::from(port), data) {
                    ExitCounters::bump(&c.unhandled);
                }
                None
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                ExitCounters::bump(&c.io_out);
                if !ctx.pio.write(u64::from(port), data) {
                    ExitCounters::bump(&c.unhandled);
                }
                None
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                ExitCounters::bump(&c.mmio_read);
                if !ctx.mmio.read(addr, data) {
                    ExitCounters::bump(&c.unhandled);
                }
                None
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                ExitCounters::bump(&c.mmio_write);
                if !ctx.mmio.write(addr, data) {
                    ExitCounters::bump(&c.unhandled);
                }
                None
            }
            Ok(VcpuExit::Hlt) => {
                // Only seen without an in-kernel LAPIC halt; nothing to do but run again.
                ExitCounters::bump(&c.hlt);
                None
            }
            Ok(VcpuExit::Shutdown) => Some(VmExit::Crash(format!(
                "triple fault on vCPU {index} (KVM_EXIT_SHUTDOWN){}",
                self.crash_state()
            ))),
            Ok(VcpuExit::FailEntry(reason, cpu)) => Some(VmExit::Crash(format!(
                "VM entry failed on vCPU {index}: hardware reason {reason:#x} (host CPU {cpu})"
            ))),
            Ok(VcpuExit::InternalError) => {
                let run = self.fd.get_kvm_run();
                // SAFETY: KVM filled the `internal` member of the exit union, since the
                // exit reason is KVM_EXIT_INTERNAL_ERROR.
                let suberror = unsafe { run.__bindgen_anon_1.internal.suberror };
                Some(VmExit::Crash(format!(
                    "KVM internal error on vCPU {index} (suberror {suberror}{})",
                    if suberror == 1 {
                        ": emulation failure"
                    } else {
                        ""
                    }
                )))
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                KVM_SYSTEM_EVENT_SHUTDOWN => Some(VmExit::PowerOff),
                KVM_SYSTEM_EVENT_RESET => Some(VmExit::Reboot),
                KVM_SYSTEM_EVENT_CRASH => Some(VmExit::Crash(format!(
                    "guest reported a crash on vCPU {index}"
                ))),
                _ => {
                    ExitCounters::bump(&c.other);
                    None
                }
            },
            Ok(other) => {
                ExitCounters::bump(&c.other);
                match other {
                    VcpuExit::Unknown | VcpuExit::Exception => Some(VmExit::Crash(format!(
                        "vCPU {index} stopped with an unhandled {other:?} exit"
                    ))),
                    _ => None,
                }
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                // Kicked: clear the flag, then the loop re-reads what the main thread wants.
                self.fd.set_kvm_immediate_exit(0);
                None
            }
            Err(e) => Some(VmExit::VmmError(format!(
                "KVM_RUN failed on vCPU {index}: {e}"
            ))),
        }
    }
}

impl Drop for Vcpu {
    fn drop(&mut self) {
        KVM_RUN.with(|c| c.set(std::ptr::null_mut()));
    }
}

fn configure(index: u8, what: &'static str) -> impl Fn(kvm_ioctls::Error) -> VcpuError {
    move |source| VcpuError::Configure {
        index,
        what,
        source,
    }
}
