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
    # qemu-img and qemu-io: fv-disk's tests create and check qcow2 images with them.
    qemu-utils
    # ip: fv-hostnet's tests and the emulated-host network tests set up bridges with it.
    iproute2
)

missing=()
for p in "${packages[@]}"; do
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
