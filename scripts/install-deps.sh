#!/usr/bin/env bash
# Installs everything Ferrovisor needs on a fresh Debian 12 machine.
# Safe to run again: it installs only what is missing.
set -euo pipefail
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)

packages=(
    # The emulated AMD-V host and the guest images it boots (crates/testhost).
    qemu-system-x86 busybox-static cpio kmod lz4 xz-utils e2fsprogs
    # Assembling the tiny test guests (tests/guests).
    binutils
    # Reading the API socket by hand in docs/ examples.
    curl
    # qemu-img: fvd mends the qcow2 disks of a killed fv-vmm with it (check -r all);
    # fv-disk's tests create and check qcow2 images with it and qemu-io.
    qemu-utils
    # ip: fv-hostnet's tests and the emulated-host network tests set up bridges with it.
    iproute2
    # lvm: fvd's lvm SRs run it (pvcreate, vgcreate, lvcreate...); their tests need it too.
    lvm2
    # mount.nfs: fvd mounts the exports of nfs SRs with it. The kernel NFS server (with
    # exportfs, rpc.nfsd, rpc.mountd) serves them in the emulated host for the nfs SR test.
    nfs-common nfs-kernel-server
    # nft: fvd enforces VIF locking (VIF.locking_mode) with nftables rules.
    nftables
    # dnsmasq: fvd's DHCP server on managed networks (other_config:ip_begin/ip_end/netmask).
    dnsmasq-base
    # python3 and its venv module: fv-rpc's tests run the XenAPI Python SDK (below).
    python3 python3-venv
    # The web console (web/): Node.js and npm build it (scripts/build-web.sh), and its
    # browser tests drive Debian's Chromium with Playwright (crates/fvd/tests/web.rs).
    nodejs npm chromium
)

missing=()
for p in "${packages[@]}"; do
    # Node.js and npm installed otherwise (nodesource, nvm) do as well as Debian's.
    if [[ $p == nodejs || $p == npm ]] && command -v "${p/nodejs/node}" >/dev/null; then
        continue
    fi
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "==> installing Debian packages: ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    echo "error: cargo not found: install Rust 1.85 or newer (rustup), then run this again" >&2
    exit 1
fi
for c in clippy rustfmt; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c" 2>/dev/null || true
done

# The official XenAPI Python SDK (PyPI `xenapi`): fv-rpc's tests drive our XML-RPC and JSON-RPC
# codecs with it (crates/rpc/tests/python_sdk.rs), and fail without it. It goes into a venv at a
# fixed path rather than `pip install --break-system-packages`: that works the same whichever
# python3 comes first on PATH (Debian's, which refuses plain pip installs, or another), needs no
# root, leaves the system's packages alone, and pins the version. The tests look in the same
# place ($FV_VENV, by default ~/.local/share/ferrovisor/venv).
xenapi_version=26.21.1
venv="${FV_VENV:-$HOME/.local/share/ferrovisor/venv}"
if ! "$venv/bin/python3" -c "import importlib.metadata as m, XenAPI; assert m.version('XenAPI') == '$xenapi_version'" 2>/dev/null; then
    echo "==> installing the XenAPI Python SDK $xenapi_version into $venv"
    python3 -m venv "$venv"
    "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check "xenapi==$xenapi_version"
fi

# Vite and Playwright need Node.js 20.19 or newer (the machine images ship it; Debian 12's
# own nodejs is 18).
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)'; then
    echo "error: Node.js $(node --version) is too old for the web console: it needs 20.19 or newer" >&2
    exit 1
fi

# The web console, built before anything builds fvd: fvd's build.rs embeds web/dist, so the
# README's commands give an fvd that serves a working console.
"$(dirname "$0")/build-web.sh"
