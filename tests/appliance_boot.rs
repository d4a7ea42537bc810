//! The appliance boots and serves: builds the boot test's variant of the UEFI disk image
//! (`make image` with `BUILD_FLAGS=--overlay image/test`: the product image plus redis-server,
//! a config pointing the bastion at it, and `bastion-check.service`), or reuses it when no input
//! changed, then boots it in qemu (TCG, OVMF, `-no-reboot`, serial console to a file).
//!
//! The VM boots as an EC2 instance would: the host runs the IMDSv2 emulator (tests/support/imds.rs)
//! and qemu relays the guest's 169.254.169.254:80 to it (`image/run-qemu.sh --imds`). Its
//! user-data is a settings document ([`USER_DATA`]: a database on the VM's redis-server, a role,
//! a user bound to the VM's `udcheck` account) and `public-keys` has the launch key, so
//! `bastion-firstboot.service` runs for real and `bastion.service` imports the document at start.
//!
//! Inside the VM the check unit waits for bastion READY, runs real sessions through the bastion
//! (redis-cli over the Unix socket as the mapped `admin` account, and over mTLS with a
//! certificate from `bastion cert issue`; and over mTLS to the VM's TLS redis-server with both
//! legs in kernel TLS: a 2 MB value byte-exact, `sessions ls`, /proc/net/tls_stat, the audit's
//! `tls_*` fields, a client's close_notify and KeyUpdate), finds their `BASTION_EVENT=session.start` audit
//! fields in `journalctl _SYSTEMD_UNIT=bastion.service`, checks that user-data's database, role and user are in the
//! store (`bastion db|role|user ls`, one `admin.mutation` audit event each) and serve a session
//! (redis-cli as `udcheck` → PONG), prints `admin`'s authorized_keys (the host asserts the launch
//! key is there), checks the appliance's hardening (appliance/: nftables lets the bastion's uid
//! reach IMDS — an IMDSv2 token PUT through qemu's relay answers 200 — and refuses `admin` and
//! `udcheck`; `admin` has no sudo and no group but bastion-admin, and its console refuses `sh`;
//! `sshd -T`: keys only, no root, no TCP forwarding; a `BASTION_EVENT` entry written by transient
//! units, as root and as `udcheck`, is in the journal but not in the README's audit query
//! `journalctl _SYSTEMD_UNIT=bastion.service BASTION_EVENT=…`) and that
//! `systemctl is-system-running` says `running`, and powers off (`SuccessAction=exit` /
//! `FailureAction=exit`) with its exit status on a second serial port. The host asserts a clean
//! power-off and that status, and prints the build time, the image size and the time from
//! power-on to READY.
//!
//! Needs root (mmdebstrap, file ownership in the image), `image/tools.sh` (installs
//! mmdebstrap, OVMF, qemu) and the Debian mirror. Where one of them cannot work, the test
//! prints `SKIP: <reason>` and returns; it never pretends to have booted anything.

use std::path::Path;

mod support;

use support::appliance::{self, tail, BootOptions, STATUS_PREFIX, USER_DATA};
use support::imds::{Behaviour, Emulator, OPENSSH_KEY};

/// How the check prints each line of `admin`'s authorized_keys.
const KEY_MARK: &str = "bastion-check: ssh: admin authorized_keys: ";

#[test]
fn appliance_image_boots_under_uefi_and_proxies_a_session() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let image = match appliance::test_image(repo) {
        Ok(image) => image,
        Err(reason) => {
            println!("SKIP: {reason}");
            return;
        }
    };
    let work = &image.work;
    let imds = Emulator::start(Behaviour {
        user_data: Some(USER_DATA.as_bytes().to_vec()),
        ..Behaviour::default()
    });
    let boot = appliance::boot(
        repo,
        &image.image,
        &imds,
        (&work.join("serial.log"), &work.join("status.log")),
        &BootOptions::default(),
    );
    let serial = &boot.serial;
    let check_status = boot
        .status_port
        .lines()
        .find_map(|l| l.trim().strip_prefix(STATUS_PREFIX).map(str::to_string));
    assert!(
        check_status.as_deref() == Some("0") && boot.qemu.success(),
        "the boot check did not pass: {}, qemu {}; serial log {}:\n{}",
        match &check_status {
            Some(s) => format!("bastion-check.service exit status {s}"),
            None => "no exit status from bastion-check (it never ran, or the VM crashed)".into(),
        },
        boot.qemu,
        boot.log.display(),
        tail(serial, 80)
    );
    for line in serial.lines().filter(|l| l.contains("bastion-check:")) {
        println!("{}", line.trim_end());
    }
    assert!(
        serial.contains("bastion-check: PASS"),
        "no PASS line:\n{}",
        tail(serial, 80)
    );
    // The hardening checks ran (the check exits at its first failure; these say they held). The
    // 200 can only come from the host's emulator: the guest reaches nothing else.
    for mark in [
        "bastion-check: imds: as bastion (the daemon's uid): HTTP/1.1 200",
        "bastion-check: imds: as admin refused",
        "bastion-check: imds: as udcheck refused",
        "bastion-check: admin: groups 'admin bastion-admin', no sudo",
        "bastion-check: audit: a session.start forged by a transient unit as root",
        "bastion-check: audit: a session.start forged by a transient unit as udcheck",
        // kTLS on both legs of an mTLS session to the VM's TLS redis-server (the guest
        // kernel has the tls ULP; this host's has not, see tests/ktls.rs).
        "bastion-check: ktls: a 2000000-byte value SET and GET",
        "bastion-check: ktls: both legs in the kernel",
        "bastion-check: ktls: a client's close_notify ends its session cleanly",
        "bastion-check: ktls: KeyUpdate",
    ] {
        assert!(
            serial.contains(mark),
            "no `{mark}` line:\n{}",
            tail(serial, 80)
        );
    }
    // First boot read user-data and the launch key from IMDS, with IMDSv2 tokens only.
    let requests = imds.requests();
    for path in [
        "/latest/user-data",
        "/latest/meta-data/public-keys/0/openssh-key",
    ] {
        assert!(
            requests.iter().any(|r| r.path == path
                && r.status == 200
                && r.header("x-aws-ec2-metadata-token").is_some()),
            "the guest never read {path} from IMDS with a token; requests: {requests:#?}"
        );
    }
    assert!(
        requests
            .iter()
            .filter(|r| r.method == hyper::Method::GET)
            .all(|r| r.header("x-aws-ec2-metadata-token").is_some()),
        "a token-less (IMDSv1) GET reached IMDS: {requests:#?}"
    );
    let keys: Vec<&str> = serial
        .lines()
        .filter_map(|l| l.split_once(KEY_MARK).map(|(_, k)| k.trim()))
        .collect();
    assert!(
        keys.contains(&OPENSSH_KEY),
        "the launch key from IMDS is not in admin's authorized_keys: {keys:?}"
    );
    println!(
        "imds: {} requests from the guest (user-data, public-keys, instance id)",
        requests.len()
    );
    match boot.ready_after {
        Some(t) => println!("boot: power-on to bastion READY {t:.1?} (host clock, TCG); whole boot and check {:.1?}", boot.took),
        None => panic!("the check passed but its READY line was never seen:\n{}", tail(serial, 80)),
    }
}
