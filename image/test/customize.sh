#!/bin/sh
# The boot test's additions to the tree ($1): redis-server with an ACL user and a password
# the bastion holds, the check unit, and no first boot (the VM is not on EC2: its IMDS
# lookups would fail and leave the system degraded).
set -eu
root=$1
password=boot-test-password
printf '%s\n' "$password" >"$root/etc/bastion/local.pw"
chroot "$root" chown bastion:bastion /etc/bastion/local.pw
chmod 0600 "$root/etc/bastion/local.pw"
cat >>"$root/etc/redis/redis.conf" <<CONF

# image/test: only the ACL user the bastion authenticates as.
user default off
user app on >$password ~* &* +@all
CONF
mkdir -p "$root/var/lib/bastion-firstboot"
: >"$root/var/lib/bastion-firstboot/done"
chmod 0755 "$root/usr/lib/bastion-test/check" "$root/usr/lib/systemd/system-shutdown/bastion-check-exit"
systemctl --root="$root" enable bastion-check.service redis-server.service >/dev/null
