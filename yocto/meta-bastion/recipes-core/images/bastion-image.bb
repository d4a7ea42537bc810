# nooelint: oelint.var.suggestedvar.CVE_PRODUCT
# (an image: cve-check follows its packages)
SUMMARY = "bastion appliance image"
DESCRIPTION = "The bastion service on a minimal systemd host: OpenSSH with keys only, no root \
               login and no TCP forwarding, a default-deny nftables firewall that keeps IMDS to \
               root and the bastion, kernel sysctl hardening, an admin account whose shell is \
               the bastion console, and a serial console; the same appliance as the Debian \
               image of image/ (make image), from the same appliance/ files."
HOMEPAGE = "https://github.com/bastion/bastion"
BUGTRACKER = "https://github.com/bastion/bastion/issues"
SECTION = "images"
LICENSE = "MIT"

inherit core-image extrausers features_check

REQUIRED_DISTRO_FEATURES = "systemd"

IMAGE_FEATURES += "ssh-server-openssh"
IMAGE_INSTALL = "packagegroup-core-boot bastion bastion-hardening ${CORE_IMAGE_EXTRA_INSTALL}"
IMAGE_LINGUAS = ""

# A raw GPT disk for `image/publish-ami.sh` (EC2 boot mode uefi), console on ttyS0.
IMAGE_FSTYPES = "wic"
WKS_FILE = "bastion-ec2.wks"

# The admin account, as appliance/admin.conf defines it for both images (image/build.sh sources
# the same file): the bastion console as its shell, member of bastion-admin only, no password
# ("*": not locked, so sshd accepts its key), no sudo. Its SSH key comes from the EC2 key pair at
# first boot (bastion-firstboot.service writes its authorized_keys).
EXTRA_USERS_PARAMS = "${@bastion_admin_params(d)}"

def bastion_admin_account(d):
    """appliance/admin.conf's NAME=value lines; bitbake re-parses when the file changes."""
    import os
    import shlex
    path = os.path.join(d.getVar("BASTION_APPLIANCE_DIR"), "admin.conf")
    bb.parse.mark_dependency(d, path)
    account = {}
    with open(path) as conf:
        for line in conf:
            line = line.strip()
            if line and not line.startswith("#"):
                name, value = line.split("=", 1)
                account[name] = " ".join(shlex.split(value))
    return account

def bastion_admin_params(d):
    import shlex
    a = bastion_admin_account(d)
    return "useradd -m -d %s -s %s -G %s -c %s %s; usermod -p %s %s;" % (
        a["ADMIN_HOME"], a["ADMIN_SHELL"], a["ADMIN_GROUPS"], shlex.quote(a["ADMIN_COMMENT"]),
        a["ADMIN_USER"], shlex.quote(a["ADMIN_PASSWORD"]), a["ADMIN_USER"])

BASTION_ADMIN_SHELL = "${@bastion_admin_account(d)['ADMIN_SHELL']}"

ROOTFS_POSTPROCESS_COMMAND += "bastion_sshd_config; bastion_shells;"

bastion_sshd_config[doc] = "Put the appliance's sshd settings first in sshd_config: sshd keeps the first value it reads for each keyword"
bastion_sshd_config() {
    conf=${IMAGE_ROOTFS}${sysconfdir}/ssh/sshd_config
    cat ${IMAGE_ROOTFS}${datadir}/bastion-hardening/sshd_config - < $conf > $conf.bastion
    mv $conf.bastion $conf
    chmod 0644 $conf
}

bastion_shells[doc] = "List the admin account's shell, the bastion console, in /etc/shells"
bastion_shells() {
    grep -qx ${BASTION_ADMIN_SHELL} ${IMAGE_ROOTFS}${sysconfdir}/shells ||
        echo ${BASTION_ADMIN_SHELL} >> ${IMAGE_ROOTFS}${sysconfdir}/shells
}
