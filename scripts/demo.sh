#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine: install what Ferrovisor needs, build it,
# and boot a stock Debian Linux VM with fv-vmm, showing its console.
#
# On a host with VT-x/AMD-V the VM runs right here with an interactive shell (type
# `poweroff` to end it). On a host without (such as our PVM-based CI machines) it runs
# inside the project's emulated AMD-V host (docs/testhost.md), boots, and powers off.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
echo "==> building"
cargo build --release --quiet -p fv-vmm -p fv-testhost
testhost=target/release/fv-testhost
echo "==> preparing the guest kernel and initramfs (Debian packages, cached in .cache/)"
"$testhost" prepare >/dev/null
kernel=$("$testhost" path guest-bzimage)
initrd=$("$testhost" path guest-initrd)
vmm=(target/release/fv-vmm --kernel "$kernel" --initrd "$initrd" --vcpus 2 --memory 512)
cmdline="console=ttyS0 panic=-1 i8042.noaux i8042.nokbd i8042.nopnp"

if grep -qwE 'vmx|svm' /proc/cpuinfo && [ -w /dev/kvm ]; then
    echo "==> booting Debian Linux with fv-vmm (2 vCPUs, 512 MiB); type 'poweroff' to end"
    exec "${vmm[@]}" --cmdline "$cmdline fv.action=shell"
fi
echo "==> this host's KVM cannot run Linux guests (no VT-x/AMD-V): booting the emulated"
echo "    AMD-V host, and Debian Linux with fv-vmm inside it (2 vCPUs, 512 MiB)"
status=0
"$testhost" run --timeout 600 -- "${vmm[@]}" --cmdline "$cmdline fv.action=poweroff" || status=$?
echo "==> fv-vmm exited with status $status (0: the guest powered off)"
exit "$status"
