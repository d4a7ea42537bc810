# nooelint: oelint.var.suggestedvar.CVE_PRODUCT
# (an image: cve-check follows its packages)
SUMMARY = "bastion appliance image"
DESCRIPTION = "The bastion service on a minimal systemd host: OpenSSH with keys only and no \
               root login, a default-deny nftables firewall, kernel sysctl hardening and a \
               serial console; the same appliance as the Debian image of image/ (make image)."
HOMEPAGE = "https://github.com/bastion/bastion"
BUGTRACKER = "https://github.com/bastion/bastion/issues"
SECTION = "images"
LICENSE = "MIT"

inherit core-image extrausers features_check

REQUIRED_DISTRO_FEATURES = "systemd"

IMAGE_FEATURES += "ssh-server-openssh"
IMAGE_INSTALL = "packagegroup-core-boot bastion bastion-hardening sudo ${CORE_IMAGE_EXTRA_INSTALL}"
IMAGE_LINGUAS = ""

# A raw GPT disk for `image/publish-ami.sh` (EC2 boot mode uefi), console on ttyS0.
IMAGE_FSTYPES = "wic"
WKS_FILE = "bastion-ec2.wks"

# The admin account: its SSH key comes from the EC2 key pair at first boot
# (bastion-firstboot.service writes /home/admin/.ssh/authorized_keys). Password "*": no
# password login is possible, yet the account is not locked, so sshd accepts its key. sudo
# without a password, as on EC2's stock images: the key is the credential.
EXTRA_USERS_PARAMS = "useradd -m -s /bin/sh admin; usermod -p '*' admin;"

ROOTFS_POSTPROCESS_COMMAND += "bastion_sshd_config; bastion_sudoers;"

bastion_sshd_config[doc] = "Put the appliance's sshd settings first in sshd_config: sshd keeps the first value it reads for each keyword"
bastion_sshd_config() {
    conf=${IMAGE_ROOTFS}${sysconfdir}/ssh/sshd_config
    cat ${IMAGE_ROOTFS}${datadir}/bastion-hardening/sshd_config - < $conf > $conf.bastion
    mv $conf.bastion $conf
    chmod 0644 $conf
}

bastion_sudoers[doc] = "Let admin (SSH key only, no password) use sudo without a password"
bastion_sudoers() {
    install -d -m 0750 ${IMAGE_ROOTFS}${sysconfdir}/sudoers.d
    echo "admin ALL=(ALL) NOPASSWD: ALL" > ${IMAGE_ROOTFS}${sysconfdir}/sudoers.d/admin
    chmod 0440 ${IMAGE_ROOTFS}${sysconfdir}/sudoers.d/admin
}
