#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine: install what Ferrovisor needs, build it,
# start fvd on its embedded defaults (SQLite in a data directory, a local file SR, a
# host-internal network, a ready template with Debian's kernel and a small root), start a
# VM from the template with the fv CLI, and show how to reach the API, the CLI and the
# VM's console. Runs until Ctrl-C.
#
# On a host with VT-x/AMD-V it all runs right here, the API on https://127.0.0.1:8443. On a
# host without (such as our PVM-based CI machines, where KVM cannot boot Linux) it runs
# inside the project's emulated AMD-V host (docs/testhost.md), with the API port forwarded
# to 127.0.0.1:8443 here.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
echo "==> building"
cargo build --release --quiet -p fvd -p fv-vmm -p fv -p fv-testhost
bin=$PWD/target/release
cache=$PWD/.cache/demo
port=${FV_DEMO_PORT:-8443}
export FV_ROOT_PASSWORD=${FV_ROOT_PASSWORD:-ferrovisor}
echo "==> the template: Debian's kernel and initramfs, a busybox root (cached in .cache/)"
"$bin/fv-testhost" template-dir "$cache/template" >/dev/null

if grep -qwE 'vmx|svm' /proc/cpuinfo && [ -w /dev/kvm ]; then
    rm -rf "$cache/fvd"
    exec env BIN="$bin" DATA="$cache/fvd" TEMPLATE="$cache/template" \
        LISTEN="127.0.0.1:$port" SHOWN_URL="https://127.0.0.1:$port" SHOWN_PORT="$port" \
        ./scripts/demo-fvd.sh
fi
echo "==> this host's KVM cannot run Linux guests (no VT-x/AMD-V): running fvd inside the"
echo "    emulated AMD-V host, its API forwarded to https://127.0.0.1:$port here"
exec "$bin/fv-testhost" run --timeout 86400 --memory 3072 --forward "$port:443" \
    --env BIN="$bin" --env TEMPLATE="$cache/template" \
    --env LISTEN=0.0.0.0:443 --env SHOWN_URL="https://127.0.0.1:$port" \
    --env SHOWN_PORT="$port" --env FV_ROOT_PASSWORD="$FV_ROOT_PASSWORD" \
    -- ./scripts/demo-fvd.sh
