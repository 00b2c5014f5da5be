#!/bin/sh
# fv-testhost: init of the emulated host. Loads KVM and 9p, mounts the real host's root
# (read-only) at /host and runs the command from the runner's script file inside it.
export PATH=/bin
mount -t proc proc /proc
fail() {
    echo "fv-testhost: $*"
    echo 0 > /proc/sys/kernel/printk
    poweroff -f
}
script=
nonce=
debug=
net=
for x in $(cat /proc/cmdline); do
    case "$x" in
        fv.script=*) script="${x#fv.script=}" ;;
        fv.nonce=*) nonce="${x#fv.nonce=}" ;;
        fv.debug=1) debug=1 ;;
        fv.net=1) net=1 ;;
    esac
done
# FV_TESTHOST_DEBUG: report each step (these lines then precede the command's output).
step() {
    if [ -n "$debug" ]; then echo "fv-testhost: init: $*"; fi
}
step "started at $(cut -d' ' -f1 /proc/uptime) s uptime"
for m in @MODULES@; do
    insmod "/lib/modules/$m" || echo "fv-testhost: insmod $m failed"
done
step "modules loaded"
# Port forwarding asked for: the runner added a virtio-net device on QEMU user networking,
# whose addresses are fixed (no DHCP client needed, none to wait for).
if [ -n "$net" ]; then
    for m in @NET_MODULES@; do
        insmod "/lib/modules/$m" || echo "fv-testhost: insmod $m failed"
    done
    ip link set lo up
    { ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up &&
        ip route add default via 10.0.2.2; } || fail "cannot configure eth0"
    step "network configured"
fi
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose host /host ||
    fail "cannot mount the host root over 9p"
step "host root mounted over 9p"
cmd="$(cat "/host$script")" || fail "cannot read $script"
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
# One idle VM for the whole run, so that KVM here does not patch its static keys as the
# tests' VMs come and go (kvm-hold.S).
# (A shell's background job reads /dev/null, which the initramfs lacks until now.)
[ -e /dev/null ] || mknod -m 666 /dev/null c 1 3
{ /bin/fv-kvm-hold || echo "fv-testhost: fv-kvm-hold could not make its VM"; } &
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts
mount -t tmpfs tmpfs /host/dev/shm
# /tmp stays the host's (read-only), so that a checkout or build under /tmp can run here;
# scratch files go to TMPDIR, a tmpfs.
mount -t tmpfs tmpfs /host/run
mkdir -p /host/run/tmp
# Modules only some tests need, for them to load (fv_testhost::load_storage_modules).
mkdir -p /host/run/fv-testhost/modules
mount --bind /lib/modules /host/run/fv-testhost/modules
echo "@STORAGE_MODULES@" > /host/run/fv-testhost/storage-modules
# Pass the command's bytes through unchanged (no \n -> \r\n on the console).
stty -opost -echo
step "running the command at $(cut -d' ' -f1 /proc/uptime) s uptime"
# Tells the runner that the host booted: everything before this line is not the command's.
echo "FVTH-$nonce-START"
TMPDIR=/run/tmp chroot /host /bin/sh -c "$cmd" </host/dev/null
rc=$?
# Keep "reboot: Power down" and friends out of the command's output.
echo 0 > /proc/sys/kernel/printk
echo "FVTH-$nonce-EXIT=$rc"
poweroff -f
