# nooelint: oelint.var.bbclassextend,oelint.var.suggestedvar.CVE_PRODUCT
# (configuration files for the target only; no upstream product to track CVEs for)
SUMMARY = "bastion appliance host hardening: sysctl, nftables, sshd settings"
DESCRIPTION = "Kernel sysctl settings, a default-deny nftables ruleset loaded before the \
               network comes up, and the key-only sshd settings bastion-image writes into \
               sshd_config."
HOMEPAGE = "https://github.com/bastion/bastion"
BUGTRACKER = "https://github.com/bastion/bastion/issues"
SECTION = "base"
LICENSE = "Apache-2.0"
# The files are the repository's own (appliance/), under the project's license.
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

# sysctl, nftables and sshd settings: the repository's appliance/ folder (layer.conf's
# BASTION_APPLIANCE_DIR), the files image/build.sh installs into the Debian image; only the
# unit that loads the ruleset is this layer's own (files/). tests/yocto.rs checks the two
# images install the same files. (FILESEXTRAPATHS, usually a bbappend's, because the files
# live outside the layer, one copy for both images.)
# nooelint: oelint.vars.fileextrapaths,oelint.vars.outofcontext
FILESEXTRAPATHS:prepend := "${BASTION_APPLIANCE_DIR}:"
SRC_URI = "file://sysctl.conf \
           file://nftables.conf \
           file://sshd_config \
           file://bastion-firewall.service \
           "

S = "${WORKDIR}"

inherit systemd allarch features_check

REQUIRED_DISTRO_FEATURES = "systemd"

SYSTEMD_SERVICE:${PN} = "bastion-firewall.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

do_install() {
    install -d ${D}${sysconfdir}/sysctl.d
    install -m 0644 ${S}/sysctl.conf ${D}${sysconfdir}/sysctl.d/90-bastion.conf
    install -d ${D}${sysconfdir}/nftables
    install -m 0600 ${S}/nftables.conf ${D}${sysconfdir}/nftables/bastion.nft
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/bastion-firewall.service ${D}${systemd_system_unitdir}/bastion-firewall.service
    install -d ${D}${datadir}/bastion-hardening
    install -m 0644 ${S}/sshd_config ${D}${datadir}/bastion-hardening/sshd_config
}

CONFFILES:${PN} = "${sysconfdir}/sysctl.d/90-bastion.conf ${sysconfdir}/nftables/bastion.nft"

# The ruleset names the bastion user (`meta skuid`), which the bastion package creates.
RDEPENDS:${PN} = "bastion nftables"
