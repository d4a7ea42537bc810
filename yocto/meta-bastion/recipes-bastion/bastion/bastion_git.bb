# nooelint: oelint.var.bbclassextend,oelint.var.suggestedvar.CVE_PRODUCT
# (no native/SDK variant makes sense for a service; no NVD product name: "bastion" alone would
# match other projects' CVEs)
SUMMARY = "Hardened access point for managed Redis"
DESCRIPTION = "bastion lets people reach ElastiCache, MemoryDB and self-hosted Redis/Valkey \
               only through itself: mTLS or Unix-socket identity, roles, audit, and IAM-token \
               or password authentication towards the upstream on the client's behalf."
HOMEPAGE = "https://github.com/bastion/bastion"
BUGTRACKER = "https://github.com/bastion/bastion/issues"
SECTION = "net"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"

# The layer lives in the bastion repository (yocto/meta-bastion) and bastion-crates.inc is
# generated from that repository's Cargo.lock: SRCREV must name a commit whose Cargo.lock the
# .inc was generated from (yocto/scripts/update-crates-inc; tests/yocto.rs checks the pair).
# To build a local checkout instead: INHERIT += "externalsrc" and
# EXTERNALSRC:pn-bastion = "/path/to/bastion" in local.conf.
PV = "0.1.0+git"
SRC_URI = "git://github.com/bastion/bastion.git;protocol=https;branch=main"
SRCREV = "b2fd4bb30f05180d127b4d19f49dfcbc9d6392be"
S = "${WORKDIR}/git"

inherit cargo cargo-update-recipe-crates systemd features_check useradd

require ${BPN}-crates.inc

REQUIRED_DISTRO_FEATURES = "systemd"

# The users of systemd/bastion.sysusers, made when the package is installed into the image (the
# Debian image runs systemd-sysusers at build time): the admin account's group and the
# firewall's `meta skuid` name must exist before the first boot.
USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system bastion-admin"
USERADD_PARAM:${PN} = "--system --user-group --groups bastion-admin --home-dir ${localstatedir}/lib/bastion --no-create-home --shell /sbin/nologin bastion"

SYSTEMD_SERVICE:${PN} = "bastion.service bastion-firstboot.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

# The cargo class installs target/<triple>/release/bastion as ${bindir}/bastion, the path
# the units' ExecStart= name. Units, the sysusers.d entry and the example configuration come
# from the repository's systemd/ folder, exactly as the Debian image ships them.
do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/systemd/bastion.service ${D}${systemd_system_unitdir}/bastion.service
    install -m 0644 ${S}/systemd/bastion-firstboot.service ${D}${systemd_system_unitdir}/bastion-firstboot.service
    install -d ${D}${nonarch_libdir}/sysusers.d
    install -m 0644 ${S}/systemd/bastion.sysusers ${D}${nonarch_libdir}/sysusers.d/bastion.conf
    install -d ${D}${sysconfdir}/bastion
    install -m 0644 ${S}/systemd/bastion.toml ${D}${sysconfdir}/bastion/bastion.toml
    # The admin account's login shell (appliance/admin.conf ADMIN_SHELL): the binary acts as
    # the bastion console when started under this name.
    ln -sf bastion ${D}${bindir}/bastion-console
}

FILES:${PN} += "${nonarch_libdir}/sysusers.d/bastion.conf"
CONFFILES:${PN} = "${sysconfdir}/bastion/bastion.toml"

# TLS to upstreams and AWS APIs trusts the system certificate store.
RDEPENDS:${PN} = "ca-certificates"
