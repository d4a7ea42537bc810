#!/usr/bin/env bash
# Boot the appliance image in qemu under UEFI (OVMF firmware), without KVM (TCG).
#
#   image/run-qemu.sh [image/out/bastion.raw]      # serial console here; Ctrl-A X quits
#   ssh -p 2222 admin@127.0.0.1                      # the bastion console (needs your key in
#                                                    # /home/admin/.ssh/authorized_keys)
#
# Options (before the image):
#   --snapshot      writes go to a temporary overlay; the image stays as built
#   --serial FILE   serial console to FILE instead of this terminal (no monitor)
#   --status FILE   a second serial port (ttyS1) to FILE: the boot test's result channel
# Extra qemu arguments follow `--`.
#
# The guest's network is qemu user networking with restrict=on: it reaches nothing outside
# (no IMDS, no internet), and the host reaches it on 127.0.0.1:2222 (SSH) and :6380 (mTLS).
# Environment: BASTION_QEMU_ACCEL (default tcg), BASTION_QEMU_MEM (MiB, default 1024),
# BASTION_QEMU_SSH_PORT / BASTION_QEMU_TLS_PORT (host ports, default 2222 / 6380),
# BASTION_QEMU_ROOT (an unpacked qemu, see image/tools.sh).
set -euo pipefail

snapshot=()
serial=(-serial mon:stdio)
status_port=()
# Host ports forwarded to the guest (none with --status, i.e. in tests: no fixed ports there).
forwards=",hostfwd=tcp:127.0.0.1:${BASTION_QEMU_SSH_PORT:-2222}-:22,hostfwd=tcp:127.0.0.1:${BASTION_QEMU_TLS_PORT:-6380}-:6380"
image=
while [ $# -gt 0 ]; do
    case "$1" in
    --snapshot) snapshot=(-snapshot); shift ;;
    --serial) serial=(-serial "file:$2" -monitor none); shift 2 ;;
    --status) status_port=(-serial "file:$2"); forwards=; shift 2 ;;
    --) shift; break ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    *) image=$1; shift ;;
    esac
done
image=${image:-$(dirname "$0")/out/bastion.raw}
[ -f "$image" ] || { echo "image/run-qemu.sh: no image at $image (make image)" >&2; exit 2; }

qemu=$(command -v qemu-system-x86_64 || true)
root=${BASTION_QEMU_ROOT:-/opt/bastion-qemu}
[ -n "$qemu" ] || qemu=$root/usr/bin/qemu-system-x86_64
[ -x "$qemu" ] || { echo "image/run-qemu.sh: no qemu-system-x86_64 (run image/tools.sh)" >&2; exit 2; }

code=/usr/share/OVMF/OVMF_CODE_4M.fd
vars_template=/usr/share/OVMF/OVMF_VARS_4M.fd
[ -f "$code" ] || { echo "image/run-qemu.sh: no $code (apt-get install ovmf, or image/tools.sh)" >&2; exit 2; }
# The firmware's variable store is per boot and writable.
vars=$(mktemp "${TMPDIR:-/tmp}/bastion-ovmf-vars.XXXXXX")
trap 'rm -f "$vars"' EXIT
cp "$vars_template" "$vars"

"$qemu" \
    -machine q35 -accel "${BASTION_QEMU_ACCEL:-tcg}" -cpu max -smp 2 -m "${BASTION_QEMU_MEM:-1024}" \
    -drive "if=pflash,format=raw,unit=0,readonly=on,file=$code" \
    -drive "if=pflash,format=raw,unit=1,file=$vars" \
    -drive "if=virtio,format=raw,file=$image" "${snapshot[@]}" \
    -nic "user,model=virtio-net-pci,restrict=on$forwards" \
    -display none -no-reboot "${serial[@]}" "${status_port[@]}" "$@"
