#!/usr/bin/env bash
# Build the bastion appliance: a bootable UEFI raw disk image from Debian bookworm packages.
#
#   image/build.sh --bastion target/release/bastion --out image/out/bastion.raw
#   image/build.sh --bastion … --out … --overlay image/test      # the boot test's variant
#
# Runs as root on Debian 12, non-interactively; installs its own tools (image/tools.sh).
# No loop mounts: mmdebstrap builds the tree in a directory, mke2fs -d and mkfs.vfat + mtools
# turn directories into file systems, sfdisk writes the GPT and dd places the partitions.
#
# Disk layout (GPT):
#   1 ESP   FAT32  systemd-boot, loader entry, kernel, initrd     (never mounted)
#   2 root  ext4   LABEL=bastion-root, mounted read-only
#   3 var   ext4   LABEL=bastion-var, mounted on /var read-write: all state; /etc/bastion and
#                  /home are bind mounts from it (see image/rootfs/etc/fstab)
#
# An overlay directory (--overlay DIR) may hold `packages` (extra Debian packages, one per line),
# `rootfs/` (files copied over the tree) and `customize.sh` (run with the tree as $1, last).
# --cache DIR keeps mmdebstrap's tree for the package set in DIR and reuses it (the boot test).
set -euo pipefail
# One brace group: bash reads it whole before running it, so editing this file during a
# build does not change the running build.
{

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")

bastion=
out=
overlays=()
cache=
suite=bookworm
mirror=${BASTION_IMAGE_MIRROR:-http://deb.debian.org/debian}
while [ $# -gt 0 ]; do
    case "$1" in
    --bastion) bastion=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --overlay) overlays+=("$(cd "$2" && pwd)"); shift 2 ;;
    --cache) cache=$2; shift 2 ;;
    -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "image/build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "$bastion" ] && [ -n "$out" ] || { echo "image/build.sh: --bastion BIN and --out FILE are required" >&2; exit 2; }
[ -x "$bastion" ] || { echo "image/build.sh: $bastion is not an executable (cargo build --release first)" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "image/build.sh: must run as root (mmdebstrap, file ownership in the image)" >&2; exit 2; }

log() { printf '==> [%4ss] %s\n' "$SECONDS" "$*" >&2; }

"$here/tools.sh"

# What the appliance runs. The cloud kernel (virtio, NVMe and ENA drivers, a third of the
# modules); systemd-boot's EFI binary only (the systemd-boot package would run bootctl).
PACKAGES=(
    systemd systemd-sysv systemd-resolved udev dbus kmod
    linux-image-cloud-amd64 initramfs-tools systemd-boot-efi
    openssh-server nftables iproute2 ca-certificates systemd-timesyncd
)
for o in "${overlays[@]}"; do
    if [ -f "$o/packages" ]; then
        mapfile -t extra < <(grep -v -e '^#' -e '^\s*$' "$o/packages")
        PACKAGES+=("${extra[@]}")
    fi
done

work=$(mktemp -d "${TMPDIR:-/var/tmp}/bastion-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
tree=$work/tree

# --- the tree ------------------------------------------------------------------------------
# Docs, man pages and locales never reach the disk (dpkg path-exclude, kept for later installs).
DPKG_OPTS=(
    'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright'
    'path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/info/*'
    'path-exclude=/usr/share/locale/*' 'path-include=/usr/share/locale/locale.alias'
    'path-exclude=/usr/share/lintian/*'
)
debootstrap_tree() {
    log "mmdebstrap $suite (${PACKAGES[*]})"
    mmdebstrap --mode=root --variant=minbase --quiet \
        --include="$(IFS=,; echo "${PACKAGES[*]}")" \
        "${DPKG_OPTS[@]/#/--dpkgopt=}" \
        "$suite" "$tree" "$mirror" || {
        # 75 (EX_TEMPFAIL): the machine cannot build a tree now (no mirror); the boot test skips.
        echo "image/build.sh: mmdebstrap failed (is $mirror reachable?)" >&2
        exit 75
    }
}
if [ -z "$cache" ]; then
    debootstrap_tree
else
    # The package set's tree, as mmdebstrap left it, kept for the next build (the boot test
    # rebuilds whenever the binary changes). Packages are as fresh as the cached tree.
    key=$(printf '%s\n' "$suite" "$mirror" "${PACKAGES[@]}" "${DPKG_OPTS[@]}" | sha256sum | cut -c1-16)
    cached=$cache/tree-$key.tar
    mkdir -p "$cache" "$tree"
    if [ -f "$cached" ]; then
        log "tree from $cached"
        tar -C "$tree" --numeric-owner --xattrs --xattrs-include='*' -xpf "$cached"
    else
        rmdir "$tree"
        debootstrap_tree
        rm -f "$cache"/tree-*.tar
        tar -C "$tree" --numeric-owner --xattrs --xattrs-include='*' -cf "$cached.tmp" .
        mv "$cached.tmp" "$cached"
    fi
fi

log "installing bastion and the appliance files"
install -D -m 0755 "$bastion" "$tree/usr/bin/bastion"
strip --strip-debug "$tree/usr/bin/bastion"

install -D -m 0644 "$repo/systemd/bastion.service" "$tree/usr/lib/systemd/system/bastion.service"
install -D -m 0644 "$repo/systemd/bastion-firstboot.service" "$tree/usr/lib/systemd/system/bastion-firstboot.service"
install -D -m 0644 "$repo/systemd/bastion.sysusers" "$tree/usr/lib/sysusers.d/bastion.conf"
install -D -m 0644 "$repo/systemd/bastion.toml" "$tree/etc/bastion/bastion.toml"
# The appliance's hardening, from the one source both images install (the Yocto layer's
# bastion-hardening recipe installs the same files; tests/yocto.rs compares the two lists).
install -D -m 0644 "$repo/appliance/sshd_config" "$tree/etc/ssh/sshd_config.d/bastion.conf"
install -D -m 0755 "$repo/appliance/nftables.conf" "$tree/etc/nftables.conf"
install -D -m 0644 "$repo/appliance/sysctl.conf" "$tree/etc/sysctl.d/90-bastion.conf"
cp -a "$here/rootfs/." "$tree/"

# Users exist at build time: the root file system is read-only at run time, so
# systemd-sysusers at boot could not add them.
chroot "$tree" systemd-sysusers
# The admin account, as appliance/admin.conf defines it (ADMIN_*).
# shellcheck source=../appliance/admin.conf
. "$repo/appliance/admin.conf"
# Its login shell: the bastion console (the binary acts as the console when started under
# that name or as a login shell).
ln -sf bastion "$tree$ADMIN_SHELL"
grep -qx "$ADMIN_SHELL" "$tree/etc/shells" || echo "$ADMIN_SHELL" >>"$tree/etc/shells"
chroot "$tree" useradd --create-home --home-dir "$ADMIN_HOME" --shell "$ADMIN_SHELL" \
    --groups "$ADMIN_GROUPS" --comment "$ADMIN_COMMENT" "$ADMIN_USER"
chroot "$tree" usermod --password "$ADMIN_PASSWORD" "$ADMIN_USER"
chroot "$tree" passwd --lock root >/dev/null

# Host keys are per instance: made on first boot into /var/lib/ssh (bastion-ssh-keygen.service).
rm -f "$tree"/etc/ssh/ssh_host_*
# The image has no machine id: each instance makes its own on first boot.
: >"$tree/etc/machine-id"
rm -f "$tree/var/lib/dbus/machine-id"
echo bastion >"$tree/etc/hostname"

systemctl --root="$tree" enable \
    bastion.service bastion-firstboot.service bastion-ssh-keygen.service \
    ssh.service nftables.service systemd-networkd.service systemd-resolved.service \
    systemd-timesyncd.service \
    serial-getty@ttyS0.service >/dev/null
# Nothing to do on an immutable root.
systemctl --root="$tree" mask apt-daily.timer apt-daily-upgrade.timer e2scrub_reap.service \
    e2scrub_all.timer >/dev/null 2>&1 || true

for o in "${overlays[@]}"; do
    log "overlay $o"
    [ -d "$o/rootfs" ] && cp -a "$o/rootfs/." "$tree/"
    [ -x "$o/customize.sh" ] && "$o/customize.sh" "$tree"
done

# --- boot files ----------------------------------------------------------------------------
kernel=$(find "$tree/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -1)
initrd=$(find "$tree/boot" -maxdepth 1 -name 'initrd.img-*' | sort -V | tail -1)
[ -f "$kernel" ] && [ -f "$initrd" ] || { echo "image/build.sh: no kernel/initrd in $tree/boot" >&2; exit 1; }
mkdir -p "$work/esp"
mv "$kernel" "$work/esp/vmlinuz"
mv "$initrd" "$work/esp/initrd.img"
cp "$tree/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$work/esp/BOOTX64.EFI"
rm -rf "$tree"/boot/* "$tree"/vmlinuz* "$tree"/initrd.img*
cmdline="root=LABEL=bastion-root ro rootfstype=ext4 console=ttyS0,115200 systemd.gpt_auto=0 nvme_core.io_timeout=4294967295"

# --- prune ---------------------------------------------------------------------------------
rm -rf "$tree"/var/cache/apt/* "$tree"/var/lib/apt/lists/* "$tree"/var/log/*.log \
    "$tree"/var/cache/debconf/*-old "$tree"/usr/share/doc/*/changelog*

# --- split the tree: root (read-only) and /var (state) --------------------------------------
mv "$tree/var" "$work/var"
mkdir -p "$tree/var"
# /home and /etc/bastion live on /var (writable), bind-mounted at boot (fstab).
mkdir -p "$work/var/home" "$work/var/lib/bastion-etc"
cp -a "$tree/home/." "$work/var/home/" && rm -rf "$tree"/home/*
cp -a "$tree/etc/bastion/." "$work/var/lib/bastion-etc/" && rm -rf "$tree"/etc/bastion/*
chmod 0755 "$work/var/lib/bastion-etc"

# --- file systems --------------------------------------------------------------------------
mib() { echo $(( ($(du -s --block-size=1M "$1" | cut -f1) ) )); }
root_mib=$(( $(mib "$tree") * 115 / 100 + 64 ))
var_mib=$(( $(mib "$work/var") + 256 ))
esp_mib=$(( $(mib "$work/esp") + 32 ))
[ "$esp_mib" -ge 64 ] || esp_mib=64
log "file systems: esp ${esp_mib} MiB, root ${root_mib} MiB, var ${var_mib} MiB"

mke2fs -q -t ext4 -L bastion-root -m 0 -O ^has_journal -d "$tree" "$work/root.img" "${root_mib}M"
mke2fs -q -t ext4 -L bastion-var -m 1 -d "$work/var" "$work/var.img" "${var_mib}M"

mkfs.vfat -F 32 -n ESP -C "$work/esp.img" $(( esp_mib * 1024 )) >/dev/null
export MTOOLS_SKIP_CHECK=1
mmd -i "$work/esp.img" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries
mcopy -i "$work/esp.img" "$work/esp/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$work/esp.img" "$work/esp/vmlinuz" "$work/esp/initrd.img" ::/
printf 'default bastion.conf\ntimeout 0\nconsole-mode keep\neditor no\n' >"$work/loader.conf"
printf 'title bastion\nlinux /vmlinuz\ninitrd /initrd.img\noptions %s\n' "$cmdline" >"$work/bastion.conf"
mcopy -i "$work/esp.img" "$work/loader.conf" ::/loader/loader.conf
mcopy -i "$work/esp.img" "$work/bastion.conf" ::/loader/entries/bastion.conf

# --- the disk ------------------------------------------------------------------------------
# 1 MiB alignment; 1 MiB at the end for the backup GPT.
esp_start=1
root_start=$(( esp_start + esp_mib ))
var_start=$(( root_start + root_mib ))
total=$(( var_start + var_mib + 1 ))
mkdir -p "$(dirname "$out")"
rm -f "$out.tmp"
truncate -s "${total}M" "$out.tmp"
sfdisk --quiet "$out.tmp" <<EOF
label: gpt
unit: sectors
start=${esp_start}MiB, size=${esp_mib}MiB, type=U, name=esp
start=${root_start}MiB, size=${root_mib}MiB, type=4f68bce3-e8cd-4db1-96e7-fbcaf984b709, name=root
start=${var_start}MiB, size=${var_mib}MiB, type=L, name=var
EOF
dd if="$work/esp.img" of="$out.tmp" bs=1M seek="$esp_start" conv=notrunc,sparse status=none
dd if="$work/root.img" of="$out.tmp" bs=1M seek="$root_start" conv=notrunc,sparse status=none
dd if="$work/var.img" of="$out.tmp" bs=1M seek="$var_start" conv=notrunc,sparse status=none
mv "$out.tmp" "$out"
log "built $out: ${total} MiB ($(du -h "$out" | cut -f1) allocated)"
exit 0
}
