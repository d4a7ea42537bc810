#!/bin/sh
# The boot test's additions to the tree ($1): redis-server with an ACL user and a password
# the bastion holds, the check unit, and a local account (udcheck) for the bastion user that
# the test's EC2 user-data declares. First boot runs as on EC2: the host serves the VM an
# instance metadata service (tests/appliance_boot.rs, image/run-qemu.sh --imds).
set -eu
root=$1
password=boot-test-password
# Password files live directly in secrets_dir (default /etc/bastion/secrets), private to bastion.
install -d -m 0700 "$root/etc/bastion/secrets"
printf '%s\n' "$password" >"$root/etc/bastion/secrets/local.pw"
chroot "$root" chown bastion:bastion /etc/bastion/secrets /etc/bastion/secrets/local.pw
chmod 0600 "$root/etc/bastion/secrets/local.pw"
cat >>"$root/etc/redis/redis.conf" <<CONF

# image/test: only the ACL user the bastion authenticates as.
user default off
user app on >$password ~* &* +@all
CONF
# The Unix account user-data's bastion user `carol` is bound to (unix_user = "udcheck").
chroot "$root" useradd --system --no-create-home --shell /usr/sbin/nologin udcheck
chmod 0755 "$root/usr/lib/bastion-test/check" "$root/usr/lib/systemd/system-shutdown/bastion-check-exit"
systemctl --root="$root" enable bastion-check.service redis-server.service >/dev/null
