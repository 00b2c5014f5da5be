#!/bin/sh
# fv-testhost: init of the test guest. Reports readiness on the console, loads its modules
# (unless fv.modules=0), then acts on fv.action= (poweroff, reboot, panic, run, shell;
# default shell). `run` runs the shell script given base64-encoded in fv.run= (the kernel
# command line splits on spaces), prints `FV-RUN-EXIT <status>`, then powers off. Whatever the action, the ACPI power button
# (fv-vmm's `PUT /vm/power-button`) prints `FV-POWER-BUTTON` and powers off.
# fv.root=DEV instead mounts DEV (ext4) and switches root to it, running its /sbin/init,
# as a distribution's initramfs does.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
cpus=0
while read -r k _; do
    [ "$k" = processor ] && cpus=$((cpus + 1))
done </proc/cpuinfo
mem=0
while read -r k v _; do
    [ "$k" = MemTotal: ] && { mem=$v; break; }
done </proc/meminfo
echo "FV-GUEST-READY cpus=$cpus mem_kib=$mem"
action=shell
run=
root=
modules=1
for x in $(cat /proc/cmdline); do
    case "$x" in
        fv.action=*) action="${x#fv.action=}" ;;
        fv.run=*) run="${x#fv.run=}" ;;
        fv.root=*) root="${x#fv.root=}" ;;
        fv.modules=0) modules=0 ;;
    esac
done
# fv.modules=0, for a guest that needs no device: loading modules patches kernel text
# (int3 and IPIs to every CPU), which QEMU TCG's nested AMD-V now and then stalls on
# (docs/testhost.md, "Guest kernels at fixed addresses").
if [ "$modules" = 1 ]; then
    for m in @MODULES@; do
        insmod "/lib/modules/$m" 2>/dev/null
    done
fi
if [ -n "$root" ]; then
    mkdir -p /newroot
    mount -t ext4 "$root" /newroot && exec switch_root /newroot /sbin/init
    echo "FV-ROOT-FAILED $root"
    poweroff -f
fi
# (A root switched to starts its own: this one's files are gone with the initramfs.)
# busybox acpid runs /etc/acpi/PWRF/00000080 when the power button's input device (the
# ACPI button driver's, through evdev) reports KEY_POWER.
if [ -e /dev/input/event0 ]; then
    mkdir -p /etc/acpi/PWRF
    printf '#!/bin/sh\necho "FV-POWER-BUTTON shutting down"\nsync\npoweroff -f\n' \
        >/etc/acpi/PWRF/00000080
    chmod 755 /etc/acpi/PWRF/00000080
    acpid -l /dev/console
fi
case "$action" in
    poweroff) poweroff -f ;;
    reboot) reboot -f ;;
    panic)
        echo 1 >/proc/sys/kernel/sysrq
        echo c >/proc/sysrq-trigger
        ;;
    run)
        echo "$run" | base64 -d >/tmp/fv-run.sh
        sh /tmp/fv-run.sh
        echo "FV-RUN-EXIT $?"
        poweroff -f
        ;;
esac
# shell, or anything unknown: a job-control shell on the real console tty.
setsid cttyhack sh
poweroff -f
