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

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

mod support;

use support::imds::{Behaviour, Emulator, OPENSSH_KEY};

/// A hang guard for the whole boot under TCG (a boot takes about a minute here), not a
/// speed assertion.
const BOOT_TIMEOUT: Duration = Duration::from_secs(900);
/// The line `bastion-check-exit` writes on the status port (ttyS1) at power-off.
const STATUS_PREFIX: &str = "bastion-check-status=";
/// build.sh's exit status when mmdebstrap could not build the tree (no mirror, no namespaces).
const BUILD_TEMPFAIL: i32 = 75;
/// What build.sh prints before it exits with [`BUILD_TEMPFAIL`].
const MMDEBSTRAP_FAILED: &str = "image/build.sh: mmdebstrap failed";
/// The check's lines on the serial console.
const READY_MARK: &str = "bastion-check: READY";
/// How the check prints each line of `admin`'s authorized_keys.
const KEY_MARK: &str = "bastion-check: ssh: admin authorized_keys: ";
/// The instance's user-data: a settings document for the store (the names are the check's,
/// image/test/rootfs/usr/lib/bastion-test/check; the password file and account are the test
/// image's, image/test).
const USER_DATA: &str = r#"# bastion-settings
# The boot test's user-data (tests/appliance_boot.rs): imported into the store at first boot.
[[databases]]
name = "fromud"
address = "127.0.0.1:6379"
auth = { mode = "password", password_file = "/etc/bastion/secrets/local.pw" }
default_db_user = "app"

[[roles]]
name = "udrole"
db_users = ["app"]
db_names = ["fromud"]

[[users]]
name = "carol"
roles = ["udrole"]
unix_user = "udcheck"
"#;

#[test]
fn appliance_image_boots_under_uefi_and_proxies_a_session() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    if !nix::unistd::geteuid().is_root() {
        println!("SKIP: the appliance image build needs root (mmdebstrap, ownership in the image)");
        return;
    }
    let tools = Command::new(repo.join("image/tools.sh"))
        .output()
        .expect("run image/tools.sh");
    if !tools.status.success() {
        println!(
            "SKIP: image/tools.sh could not install the image tools (mmdebstrap, OVMF, qemu):\n{}",
            tail(&String::from_utf8_lossy(&tools.stderr), 20)
        );
        return;
    }

    let target = target_dir();
    let bastion = release_binary(repo, &target);
    let work = target.join("appliance");
    std::fs::create_dir_all(&work).expect("create the appliance work directory");
    let key = input_key(repo, &bastion);
    let image = work.join(format!("test-{key}.raw"));
    if image.exists() {
        println!("image: reusing {} (inputs unchanged)", image.display());
    } else {
        remove_old_images(&work);
        let started = Instant::now();
        let build_log = work.join("build.log");
        let _ = std::fs::remove_file(&build_log);
        // The README's `make image`, with the test overlay: what CI builds is what users build.
        let mut make = Command::new("make");
        without_cargo_test_env(&mut make);
        let status = make
            .arg("-C")
            .arg(repo.join("image"))
            .arg("image")
            .arg(format!("CARGO_TARGET_DIR={}", target.display()))
            .arg(format!("IMAGE={}", image.display()))
            .arg(format!(
                "BUILD_FLAGS=--overlay {} --cache {}",
                repo.join("image/test").display(),
                work.display()
            ))
            .stdout(log_file(&build_log))
            .stderr(log_file(&build_log))
            .status()
            .expect("run make image");
        let log = std::fs::read_to_string(&build_log).unwrap_or_default();
        // make turns build.sh's EX_TEMPFAIL into its own failure; build.sh's message says it.
        if status.code() == Some(BUILD_TEMPFAIL) || log.contains(MMDEBSTRAP_FAILED) {
            println!(
                "SKIP: mmdebstrap could not build the tree:\n{}",
                tail(&log, 30)
            );
            return;
        }
        assert!(
            status.success(),
            "make image failed ({status}); {}:\n{}",
            build_log.display(),
            tail(&log, 60)
        );
        println!("image: built in {:.0?}", started.elapsed());
    }
    let size = std::fs::metadata(&image).expect("image metadata").len();
    println!("image: {} ({} MiB)", image.display(), size >> 20);

    let imds = Emulator::start(Behaviour {
        user_data: Some(USER_DATA.as_bytes().to_vec()),
        ..Behaviour::default()
    });
    let boot = boot(
        repo,
        &image,
        &imds,
        &work.join("serial.log"),
        &work.join("status.log"),
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

struct Boot {
    qemu: std::process::ExitStatus,
    serial: String,
    /// What the guest wrote on its second serial port.
    status_port: String,
    log: PathBuf,
    /// When the check's READY line first appeared in the serial log, from qemu's start.
    ready_after: Option<Duration>,
    took: Duration,
}

/// Boot `image` with image/run-qemu.sh (a throw-away snapshot, console to `log`, the status
/// port to `status`, the guest's IMDS relayed to `imds`), watching the console for READY until
/// qemu exits or the hang guard fires.
fn boot(repo: &Path, image: &Path, imds: &Emulator, log: &Path, status: &Path) -> Boot {
    let _ = std::fs::remove_file(log);
    let _ = std::fs::remove_file(status);
    let started = Instant::now();
    let mut child = Command::new(repo.join("image/run-qemu.sh"))
        .args(["--snapshot", "--serial"])
        .arg(log)
        .arg("--status")
        .arg(status)
        .arg("--imds")
        .arg(imds.addr().to_string())
        .arg(image)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: the hang guard ends qemu too, not only the script.
        .process_group(0)
        .spawn()
        .expect("start image/run-qemu.sh");
    let mut ready_after = None;
    let qemu = loop {
        if ready_after.is_none() && read(log).contains(READY_MARK) {
            ready_after = Some(started.elapsed());
        }
        if let Some(status) = child.try_wait().expect("wait for qemu") {
            break status;
        }
        if started.elapsed() > BOOT_TIMEOUT {
            let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            panic!(
                "qemu still running after {BOOT_TIMEOUT:?} (hang guard); serial log {}:\n{}",
                log.display(),
                tail(&read(log), 80)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let took = started.elapsed();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    if !stderr.trim().is_empty() {
        println!("qemu stderr:\n{}", tail(&stderr, 20));
    }
    Boot {
        qemu,
        serial: read(log),
        status_port: read(status),
        log: log.to_path_buf(),
        ready_after,
        took,
    }
}

/// The target directory this test binary was built in (`<target>/debug/bastion`): the release
/// binary goes next to it, as `cargo build --release` would put it.
fn target_dir() -> PathBuf {
    let debug_bin = Path::new(env!("CARGO_BIN_EXE_bastion"));
    debug_bin
        .parent()
        .and_then(Path::parent)
        .expect("CARGO_BIN_EXE_bastion is <target>/<profile>/bastion")
        .to_path_buf()
}

/// `cargo build --release --bin bastion` into `target` (a no-op when it is up to date).
fn release_binary(repo: &Path, target: &Path) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    without_cargo_test_env(&mut command);
    let out = command
        .current_dir(repo)
        .env("CARGO_TARGET_DIR", target)
        .args(["build", "--release", "--bin", "bastion"])
        .output()
        .expect("run cargo build --release");
    assert!(
        out.status.success(),
        "cargo build --release failed:\n{}",
        tail(&String::from_utf8_lossy(&out.stderr), 40)
    );
    target.join("release").join("bastion")
}

/// The variables cargo sets for this test (CARGO_PKG_VERSION, …) would differ from a plain
/// `cargo build --release` and make a nested cargo rebuild the crate for nothing.
fn without_cargo_test_env(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_",
            "CARGO_TARGET_TMPDIR",
        ]
        .iter()
        .any(|p| name.starts_with(p))
        {
            command.env_remove(name.as_ref());
        }
    }
}

/// A digest of everything the test image is made from: image/ (but its output), systemd/,
/// appliance/ and the release binary. The Debian packages are whatever the mirror has at build time.
fn input_key(repo: &Path, bastion: &Path) -> String {
    let mut files = Vec::new();
    collect(&repo.join("image"), &mut files);
    collect(&repo.join("systemd"), &mut files);
    collect(&repo.join("appliance"), &mut files);
    files.retain(|f| !f.starts_with(repo.join("image/out")));
    files.sort();
    files.push(bastion.to_path_buf());
    let mut hash = Sha256::new();
    for file in &files {
        let meta = std::fs::metadata(file).expect("stat an image input");
        hash.update(
            file.strip_prefix(repo)
                .unwrap_or(file)
                .to_string_lossy()
                .as_bytes(),
        );
        hash.update(meta.permissions().mode().to_le_bytes());
        hash.update(std::fs::read(file).expect("read an image input"));
    }
    hex::encode(&hash.finalize()[..8])
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("list an image input directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect(&path, files);
        } else {
            files.push(path);
        }
    }
}

/// Test images of earlier inputs: each is a few hundred MiB.
fn remove_old_images(work: &Path) {
    for entry in std::fs::read_dir(work).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("test-") && name.ends_with(".raw") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn log_file(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

fn read(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
