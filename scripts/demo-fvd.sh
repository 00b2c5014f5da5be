#!/usr/bin/env bash
# The part of the demo that runs where KVM can run Linux guests (this host, or the
# emulated host): start fvd on its embedded defaults with the ready template, install and
# start a VM from it with the fv CLI, show its console, and keep running.
#
# Environment: BIN (fvd, fv-vmm, fv), DATA (fvd's data directory; default a new one in
# $TMPDIR, which is the emulated host's writable place), TEMPLATE (from
# `fv-testhost template-dir`), LISTEN (fvd's --listen), SHOWN_URL and SHOWN_PORT (how the
# user reaches the API from their shell), FV_ROOT_PASSWORD.
set -euo pipefail
: "${BIN:?}" "${TEMPLATE:?}" "${LISTEN:?}" "${SHOWN_URL:?}" "${SHOWN_PORT:?}"
DATA=${DATA:-$(mktemp -d)/fvd}
: "${FV_ROOT_PASSWORD:?}"
export FV_ROOT_PASSWORD

mkdir -p "$DATA"
"$BIN/fvd" --data-dir "$DATA" --listen "$LISTEN" --template-dir "$TEMPLATE" \
    --fv-vmm "$BIN/fv-vmm" 2>"$DATA/fvd.log" &
fvd=$!
stop() {
    kill "$fvd" 2>/dev/null || true
}
trap stop EXIT
for _ in $(seq 100); do
    grep -q "fvd ready" "$DATA/fvd.log" 2>/dev/null && break
    kill -0 "$fvd" 2>/dev/null || { cat "$DATA/fvd.log"; exit 1; }
    sleep 0.1
done
fv=("$BIN/fv" --socket "$DATA/fvd.sock" -pw "$FV_ROOT_PASSWORD")

echo "==> fvd is up: $(grep -o 'fvd ready.*' "$DATA/fvd.log")"
echo "==> templates:"
"${fv[@]}" vm-list is-a-template=true params=name-label
vm=$("${fv[@]}" vm-install template="Debian 12 (busybox root)" new-name-label=demo)
echo "==> installed VM 'demo' ($vm) from the template; starting it"
"${fv[@]}" vm-start uuid="$vm" --start-paused
# The serial console, from its first byte: connected before the VM runs.
serial="$DATA/vms/$vm/serial.sock"
python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
print("==> the serial console of the VM:", flush=True)
while True:
    data = s.recv(4096)
    if not data:
        break
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
' "$serial" 2>"$DATA/console.err" &
console=$!
sleep 1
"${fv[@]}" vm-unpause uuid="$vm"
for _ in $(seq 600); do
    "${fv[@]}" vm-param-get uuid="$vm" param-name=power-state | grep -qi running && break
    sleep 0.1
done
sleep 8
cat <<INFO

==> The VM 'demo' runs (its console is above). From another shell on this machine:
    API (XenAPI, XML-RPC and JSON-RPC):  $SHOWN_URL   user root, password in \$FV_ROOT_PASSWORD
    Web console: $SHOWN_URL/ in a browser (a self-signed certificate), user root
    Python SDK:  XenAPI.Session("$SHOWN_URL", ignore_ssl=True).xenapi.login_with_password("root", "$FV_ROOT_PASSWORD")
    CLI:         target/release/fv -s 127.0.0.1 -p $SHOWN_PORT --no-verify -pw '$FV_ROOT_PASSWORD' vm-list
                 target/release/fv -s 127.0.0.1 -p $SHOWN_PORT --no-verify -pw '$FV_ROOT_PASSWORD' vm-shutdown uuid=$vm
    Console:     above; fvd keeps the VM's serial console on $serial
    Metrics:     curl -k -u root:'$FV_ROOT_PASSWORD' "$SHOWN_URL/rrd_updates?start=-60&host=true"
fvd runs until this script is stopped (Ctrl-C).
INFO
wait "$fvd"
kill "$console" 2>/dev/null || true
