"""The official XenAPI Python SDK (PyPI `xenapi`), unmodified, against a real fvd.

Usage: sdk_lifecycle.py URL ROOT_PASSWORD KERNEL
Logs in, lists VMs, creates one that boots KERNEL (a tiny guest), starts, pauses,
unpauses and shuts it down, following the changes with event.from. Prints what it saw;
exits non-zero (with the reason) if anything is not as XenAPI promises.
"""

import sys
import XenAPI

url, password, kernel = sys.argv[1:4]
# A URL whose host part is a socket path (/ written as _) goes over that Unix socket.
transport = XenAPI.UDSTransport() if url.startswith("http://_") else None
session = XenAPI.Session(url, transport=transport)
session.xenapi.login_with_password("root", password, "1.0", "fvd-sdk-test")
x = session.xenapi


def check(cond, what):
    if not cond:
        raise SystemExit("FAILED: " + what)


before = x.VM.get_all()
vm = x.VM.create({
    "name_label": "sdk-vm", "name_description": "made by the SDK test",
    "user_version": "1", "is_a_template": False, "affinity": "OpaqueRef:NULL",
    "memory_target": "67108864", "memory_static_max": "67108864",
    "memory_dynamic_max": "67108864", "memory_dynamic_min": "67108864",
    "memory_static_min": "67108864", "VCPUs_params": {}, "VCPUs_max": "1",
    "VCPUs_at_startup": "1", "actions_after_shutdown": "destroy",
    "actions_after_reboot": "restart", "actions_after_crash": "destroy",
    "PV_bootloader": "", "PV_kernel": kernel, "PV_ramdisk": "", "PV_args": "",
    "PV_bootloader_args": "", "PV_legacy_args": "", "HVM_boot_policy": "",
    "HVM_boot_params": {}, "platform": {}, "PCI_bus": "", "other_config": {},
    "recommendations": "",
})
check(vm not in before and vm in x.VM.get_all(), "the new VM is listed")
records = x.VM.get_all_records()
check(records[vm]["name_label"] == "sdk-vm", "get_all_records has the VM")
check(records[vm]["power_state"] == "Halted", "a new VM is halted")

# Follow the VM through event.from: after each step, the events since the last token
# must show the state it reached (XenAPI coalesces an object's changes into its latest
# snapshot, so each step is read before the next).
token = x.event_from(["vm"], "", 0.0)["token"]
seen = []


def follow(want):
    global token
    for _ in range(20):
        batch = x.event_from(["vm"], token, 5.0)
        token = batch["token"]
        states = [ev["snapshot"]["power_state"] for ev in batch["events"]
                  if ev["ref"] == vm and ev["operation"] == "mod"]
        if states:
            seen.append(states[-1])
        if seen and seen[-1] == want:
            return
    check(False, "event.from never showed %s (saw %s)" % (want, seen))


x.VM.start(vm, False, False)
check(x.VM.get_power_state(vm) == "Running", "VM.start runs it")
follow("Running")
x.VM.pause(vm)
check(x.VM.get_power_state(vm) == "Paused", "VM.pause pauses it")
follow("Paused")
try:
    x.VM.pause(vm)
    check(False, "pausing a paused VM fails")
except XenAPI.Failure as f:
    check(f.details[0] == "VM_BAD_POWER_STATE", "VM_BAD_POWER_STATE: %s" % f.details)
x.VM.unpause(vm)
check(x.VM.get_power_state(vm) == "Running", "VM.unpause runs it again")
follow("Running")
task = x.Async.VM.hard_shutdown(vm)
while x.task.get_status(task) == "pending":
    x.event_from(["task"], "", 0.1)
check(x.task.get_status(task) == "success", "the shutdown task succeeds")
check(x.VM.get_power_state(vm) == "Halted", "VM.hard_shutdown halts it")
follow("Halted")
print("power states seen through event.from:", seen)

x.VM.destroy(vm)
check(vm not in x.VM.get_all(), "VM.destroy removes it")
session.xenapi.session.logout()
print("SDK-LIFECYCLE-OK")
