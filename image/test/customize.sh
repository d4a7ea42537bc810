#!/bin/sh
# The boot test's additions to the tree ($1): redis-server with an ACL user and a password
# the bastion holds (plaintext on 6379, TLS on 6390 with a certificate from a throw-away CA
# made here, whose key never enters the image), the check unit, and a local account (udcheck) for the bastion user that
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
# benches/appliance_idle.rs holds 3 × 10,000 clients here (direct, and the bastion's upstream
# legs of its Unix and mTLS sessions); the unit's LimitNOFILE is 65535.
maxclients 40000
user default off
user app on >$password ~* &* +@all
CONF
# Redis' TLS port: the bastion's TLS upstream `tlslocal` (kTLS on both legs in the check).
pki=$(mktemp -d)
trap 'rm -rf "$pki"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj /CN=bastion-image-test-ca -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout "$pki/server.key" -out "$pki/server.csr" 2>/dev/null
printf '%s\n' 'subjectAltName=DNS:localhost,IP:127.0.0.1' 'basicConstraints=CA:FALSE' \
    'extendedKeyUsage=serverAuth' >"$pki/ext"
openssl x509 -req -in "$pki/server.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 3650 -extfile "$pki/ext" -out "$pki/server.crt" 2>/dev/null
mkdir -p "$root/etc/redis/tls"
install -m 0644 "$pki/server.crt" "$root/etc/redis/tls/server.crt"
install -m 0600 "$pki/server.key" "$root/etc/redis/tls/server.key"
install -m 0644 "$pki/ca.crt" "$root/etc/redis/tls/ca.crt"
install -m 0644 "$pki/ca.crt" "$root/etc/bastion/redis-ca.crt"
chroot "$root" chown -R redis:redis /etc/redis/tls
cat >>"$root/etc/redis/redis.conf" <<CONF
tls-port 6390
tls-cert-file /etc/redis/tls/server.crt
tls-key-file /etc/redis/tls/server.key
tls-ca-cert-file /etc/redis/tls/ca.crt
tls-auth-clients no
CONF
# The Unix account user-data's bastion user `carol` is bound to (unix_user = "udcheck").
chroot "$root" useradd --system --no-create-home --shell /usr/sbin/nologin udcheck
chmod 0755 "$root/usr/lib/bastion-test/check" "$root/usr/lib/systemd/system-shutdown/bastion-check-exit"
systemctl --root="$root" enable bastion-check.service redis-server.service >/dev/null
