//! The boot test's image and its boot under qemu, shared by `tests/appliance_boot.rs` (the
//! check) and `benches/appliance_idle.rs` (memory per idle session at 10,000 sessions, inside the
//! VM): build image/'s test variant (`make image` with `BUILD_FLAGS=--overlay image/test`), or
//! reuse it when no input changed; boot it with image/run-qemu.sh as an EC2 instance would (the
//! host's IMDSv2 emulator serving [`USER_DATA`]), the console and the status port in files.

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use super::imds::Emulator;

/// The line `bastion-check-exit` writes on the status port (ttyS1) at power-off.
pub const STATUS_PREFIX: &str = "bastion-check-status=";
/// build.sh's exit status when mmdebstrap could not build the tree (no mirror, no namespaces).
const BUILD_TEMPFAIL: i32 = 75;
/// What build.sh prints before it exits with [`BUILD_TEMPFAIL`].
const MMDEBSTRAP_FAILED: &str = "image/build.sh: mmdebstrap failed";
/// The check's lines on the serial console.
pub const READY_MARK: &str = "bastion-check: READY";
/// The instance's user-data: a settings document for the store (the names are the check's,
/// image/test/rootfs/usr/lib/bastion-test/check; the password file and account are the test
/// image's, image/test).
pub const USER_DATA: &str = r#"# bastion-settings
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

/// The built (or reused) test image and the directory it lives in with its logs.
pub struct TestImage {
    pub image: PathBuf,
    pub work: PathBuf,
}

/// Build the test image, or reuse the one made from the same inputs. `Err` says why this
/// machine cannot build one (no root, no image tools, no Debian mirror): the caller prints
/// `SKIP: …` and pretends nothing; a build that fails for any other reason panics.
pub fn test_image(repo: &Path) -> Result<TestImage, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err(
            "the appliance image build needs root (mmdebstrap, ownership in the image)".into(),
        );
    }
    let tools = Command::new(repo.join("image/tools.sh"))
        .output()
        .expect("run image/tools.sh");
    if !tools.status.success() {
        return Err(format!(
            "image/tools.sh could not install the image tools (mmdebstrap, OVMF, qemu):\n{}",
            tail(&String::from_utf8_lossy(&tools.stderr), 20)
        ));
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
            return Err(format!(
                "mmdebstrap could not build the tree:\n{}",
                tail(&log, 30)
            ));
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
    Ok(TestImage { image, work })
}

/// How a boot went.
pub struct Boot {
    pub qemu: std::process::ExitStatus,
    pub serial: String,
    /// What the guest wrote on its second serial port.
    pub status_port: String,
    pub log: PathBuf,
    /// When the check's READY line first appeared in the serial log, from qemu's start.
    pub ready_after: Option<Duration>,
    pub took: Duration,
}

/// What a boot adds to the defaults.
pub struct BootOptions {
    /// Hang guard for the whole boot (not a speed assertion).
    pub timeout: Duration,
    /// Guest memory in MiB (run-qemu.sh's default when `None`).
    pub memory_mib: Option<u32>,
    /// Extra qemu arguments (after run-qemu.sh's `--`), e.g. `-fw_cfg` items for the guest.
    pub qemu_args: Vec<String>,
}

impl Default for BootOptions {
    fn default() -> Self {
        BootOptions {
            // A boot and the check take a few minutes under TCG here.
            timeout: Duration::from_secs(900),
            memory_mib: None,
            qemu_args: Vec::new(),
        }
    }
}

/// Boot `image` with image/run-qemu.sh (a throw-away snapshot, console to `log`, the status
/// port to `status`, the guest's IMDS relayed to `imds`), watching the console for READY until
/// qemu exits or the hang guard fires.
pub fn boot(
    repo: &Path,
    image: &Path,
    imds: &Emulator,
    (log, status): (&Path, &Path),
    options: &BootOptions,
) -> Boot {
    let _ = std::fs::remove_file(log);
    let _ = std::fs::remove_file(status);
    let started = Instant::now();
    let mut command = Command::new(repo.join("image/run-qemu.sh"));
    if let Some(mib) = options.memory_mib {
        command.env("BASTION_QEMU_MEM", mib.to_string());
    }
    let mut child = command
        .args(["--snapshot", "--serial"])
        .arg(log)
        .arg("--status")
        .arg(status)
        .arg("--imds")
        .arg(imds.addr().to_string())
        .arg(image)
        .arg("--")
        .args(&options.qemu_args)
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
        if started.elapsed() > options.timeout {
            let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            panic!(
                "qemu still running after {:?} (hang guard); serial log {}:\n{}",
                options.timeout,
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

pub fn read(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
