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
#   --imds HOST:PORT
#                   an instance metadata service for the guest: its connections to
#                   169.254.169.254:80 are relayed (socat, per connection) to HOST:PORT on the
#                   host, e.g. an IMDSv2 emulator serving user-data and public-keys
# Extra qemu arguments follow `--`.
#
# The guest's network is qemu user networking with restrict=on: it reaches nothing outside
# (no IMDS, no internet), and the host reaches it on 127.0.0.1:2222 (SSH) and :6380 (mTLS).
# With --imds the virtual network is 169.254.169.0/24 (the guest gets .15 by DHCP): qemu
# forwards only addresses inside it, and IMDS must be reached at its real address.
# Environment: BASTION_QEMU_ACCEL (default tcg), BASTION_QEMU_MEM (MiB, default 1024),
# BASTION_QEMU_SSH_PORT / BASTION_QEMU_TLS_PORT (host ports, default 2222 / 6380),
# BASTION_QEMU_ROOT (an unpacked qemu, see image/tools.sh).
set -euo pipefail

snapshot=()
serial=(-serial mon:stdio)
status_port=()
# Host ports forwarded to the guest (none with --status, i.e. in tests: no fixed ports there).
forwards=",hostfwd=tcp:127.0.0.1:${BASTION_QEMU_SSH_PORT:-2222}-:22,hostfwd=tcp:127.0.0.1:${BASTION_QEMU_TLS_PORT:-6380}-:6380"
imds=
image=
while [ $# -gt 0 ]; do
    case "$1" in
    --snapshot) snapshot=(-snapshot); shift ;;
    --serial) serial=(-serial "file:$2" -monitor none); shift 2 ;;
    --status) status_port=(-serial "file:$2"); forwards=; shift 2 ;;
    --imds) imds=$2; shift 2 ;;
    --) shift; break ;;
    -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
    *) image=$1; shift ;;
    esac
done
image=${image:-$(dirname "$0")/out/bastion.raw}
[ -f "$image" ] || { echo "image/run-qemu.sh: no image at $image (make image)" >&2; exit 2; }

qemu=$(command -v qemu-system-x86_64 || true)
root=${BASTION_QEMU_ROOT:-/opt/bastion-qemu}
roms=()
if [ -z "$qemu" ]; then
    qemu=$root/usr/bin/qemu-system-x86_64
    # The unpacked qemu (image/tools.sh) looks for ROMs only under $root, which has none: point
    # it at the system's (seabios, ipxe-qemu, qemu-system-data), as an installed qemu finds them.
    for d in /usr/share/qemu /usr/share/seabios /usr/lib/ipxe/qemu; do
        [ -d "$d" ] && roms+=(-L "$d")
    done
fi
[ -x "$qemu" ] || { echo "image/run-qemu.sh: no qemu-system-x86_64 (run image/tools.sh)" >&2; exit 2; }

network=
if [ -n "$imds" ]; then
    command -v socat >/dev/null 2>&1 || { echo "image/run-qemu.sh: --imds needs socat (image/tools.sh)" >&2; exit 2; }
    case "$imds" in
    *,* | *' '*) echo "image/run-qemu.sh: --imds takes HOST:PORT, got '$imds'" >&2; exit 2 ;;
    esac
    network=",net=169.254.169.0/24,guestfwd=tcp:169.254.169.254:80-cmd:socat - TCP:$imds"
fi

code=/usr/share/OVMF/OVMF_CODE_4M.fd
vars_template=/usr/share/OVMF/OVMF_VARS_4M.fd
[ -f "$code" ] || { echo "image/run-qemu.sh: no $code (apt-get install ovmf, or image/tools.sh)" >&2; exit 2; }
# The firmware's variable store is per boot and writable.
vars=$(mktemp "${TMPDIR:-/tmp}/bastion-ovmf-vars.XXXXXX")
trap 'rm -f "$vars"' EXIT
cp "$vars_template" "$vars"

"$qemu" "${roms[@]}" \
    -machine q35 -accel "${BASTION_QEMU_ACCEL:-tcg}" -cpu max -smp 2 -m "${BASTION_QEMU_MEM:-1024}" \
    -drive "if=pflash,format=raw,unit=0,readonly=on,file=$code" \
    -drive "if=pflash,format=raw,unit=1,file=$vars" \
    -drive "if=virtio,format=raw,file=$image" "${snapshot[@]}" \
    -nic "user,model=virtio-net-pci,restrict=on$network$forwards" \
    -display none -no-reboot "${serial[@]}" "${status_port[@]}" "$@"
