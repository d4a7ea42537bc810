#!/usr/bin/env bash
# Install what building and booting the appliance image needs, on Debian 12, as root (or with
# sudo), non-interactively. Safe to re-run: does nothing when everything is there.
#
#   image/tools.sh          # then: make image, image/run-qemu.sh
#
# qemu: bookworm's qemu-system-x86 cannot be installed next to a newer qemu-utils (backports
# qemu-utils breaks qemu-system-common << 1:8.0, the case on our test machines). Then its
# libraries are installed with apt and the two qemu packages are unpacked (dpkg -x) under
# $BASTION_QEMU_ROOT (default /opt/bastion-qemu); image/run-qemu.sh finds it there. That qemu
# looks for its firmware ROMs (vgabios-stdvga.bin, efi-virtio.rom, …) only next to itself, where
# there are none: the ROM packages below are installed and run-qemu.sh points it at them (-L).
set -euo pipefail

# Build: mmdebstrap (the root tree), mke2fs -d / mkfs.vfat + mtools (file systems without loop
# mounts), sfdisk (the GPT), binutils (strip). Boot: OVMF (UEFI firmware for qemu), socat (the
# relay to an instance metadata service on the host, run-qemu.sh --imds: the boot test's).
BUILD_PACKAGES=(mmdebstrap debian-archive-keyring dosfstools mtools fdisk e2fsprogs binutils ovmf socat)
# The ROMs qemu-system-x86 loads (qemu-system-x86 depends on them; an unpacked qemu does not).
ROM_PACKAGES=(seabios ipxe-qemu qemu-system-data)
QEMU_ROOT=${BASTION_QEMU_ROOT:-/opt/bastion-qemu}

log() { printf '==> %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "image/tools.sh: need root or sudo to run: $*" >&2
        exit 1
    fi
}

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

updated=
apt_install() {
    if [ -z "$updated" ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
        updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2
}

install_missing() {
    local missing=() p
    for p in "$@"; do
        installed "$p" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]}"
        apt_install "${missing[@]}"
    fi
}
install_missing "${BUILD_PACKAGES[@]}"

# --- qemu ----------------------------------------------------------------------------------
if command -v qemu-system-x86_64 >/dev/null 2>&1; then
    exit 0
fi
if [ -x "$QEMU_ROOT/usr/bin/qemu-system-x86_64" ]; then
    # Unpacked by an earlier run (perhaps one that did not install the ROMs yet).
    install_missing "${ROM_PACKAGES[@]}"
    exit 0
fi
log "installing qemu-system-x86"
# --no-remove: never take a newer qemu-utils away from the machine to make room.
if apt_install --no-remove qemu-system-x86; then
    exit 0
fi
log "apt cannot install qemu-system-x86 here (qemu-utils conflict?): unpacking it into $QEMU_ROOT"
# Its run-time dependencies, minus the qemu packages that conflict.
deps=$(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances qemu-system-x86 |
    awk '$1 == "Depends:" { print $2 }' | grep -v -e '^qemu-system-common$' -e '^<' | sort -u)
# shellcheck disable=SC2086 # one package per word
apt_install $deps
install_missing "${ROM_PACKAGES[@]}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download qemu-system-x86 qemu-system-common >&2)
as_root mkdir -p "$QEMU_ROOT"
for deb in "$tmp"/*.deb; do
    as_root dpkg -x "$deb" "$QEMU_ROOT"
done
"$QEMU_ROOT/usr/bin/qemu-system-x86_64" --version >&2
