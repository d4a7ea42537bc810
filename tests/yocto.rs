//! The Yocto layer (yocto/meta-bastion) stays buildable as the crate changes:
//! - `bastion-crates.inc` lists exactly Cargo.lock's crates.io packages and checksums (other
//!   branches add crates; the message says which command regenerates it), and the generator
//!   reproduces the committed file byte for byte;
//! - `oelint-adv` (test venv) finds nothing in the layer's recipes, includes and layer.conf;
//! - the recipe's license checksum is the repository's LICENSE file, and every file it installs
//!   from systemd/ exists;
//! - the appliance's hardening has one source: the Debian image (image/build.sh) and the Yocto
//!   image (bastion-hardening, bastion-image) install the same appliance/ files (sshd, nftables,
//!   sysctl) and make the admin account from the same appliance/admin.conf (the recipe's own
//!   Python runs on it here), and those files hold what the appliance promises (keys only, no
//!   TCP forwarding, no sudo, IMDS for root and the bastion only, the sysctl set).
//!
//! No bitbake here: these check the layer's inputs, not a build; tests/appliance_boot.rs checks
//! the Debian image as booted.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::clients::python_path;
use support::process::run;

const REGENERATE: &str = "yocto/scripts/update-crates-inc";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn layer() -> PathBuf {
    root().join("yocto/meta-bastion")
}

fn inc_path() -> PathBuf {
    layer().join("recipes-bastion/bastion/bastion-crates.inc")
}

fn recipe() -> String {
    read(&layer().join("recipes-bastion/bastion/bastion_git.bb"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// "name-version" → sha256 of every crates.io package in Cargo.lock.
fn lock_crates() -> BTreeMap<String, String> {
    let lock: toml::Table = toml::from_str(&read(&root().join("Cargo.lock"))).expect("Cargo.lock");
    let packages = lock["package"].as_array().expect("[[package]]");
    let mut out = BTreeMap::new();
    for p in packages {
        let field = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        if field("source") == "registry+https://github.com/rust-lang/crates.io-index" {
            let key = format!("{}-{}", field("name"), field("version"));
            out.insert(key, field("checksum").to_string());
        }
    }
    out
}

/// From the .inc: the `crate://` entries ("name-version" → its `name=` parameter) and the
/// `SRC_URI[name-version.sha256sum]` checksums.
fn inc_crates(text: &str) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut uris = BTreeMap::new();
    let mut sums = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("crate://crates.io/") {
            let entry = rest.trim_end_matches('\\').trim();
            let (path, params) = entry.split_once(';').unwrap_or((entry, ""));
            let (name, version) = path
                .split_once('/')
                .unwrap_or_else(|| panic!("bad crate URI line: {line}"));
            let param = params
                .split(';')
                .find_map(|p| p.strip_prefix("name="))
                .unwrap_or_default();
            uris.insert(format!("{name}-{version}"), param.to_string());
        } else if let Some(rest) = line.strip_prefix("SRC_URI[") {
            let (key, value) = rest
                .split_once(".sha256sum] = ")
                .unwrap_or_else(|| panic!("bad checksum line: {line}"));
            sums.insert(key.to_string(), value.trim_matches('"').to_string());
        }
    }
    (uris, sums)
}

#[test]
fn crates_inc_lists_exactly_the_crates_of_cargo_lock() {
    let lock = lock_crates();
    assert!(
        lock.len() > 100,
        "Cargo.lock parsed to {} crates",
        lock.len()
    );
    let (uris, sums) = inc_crates(&read(&inc_path()));

    let mut problems = Vec::new();
    for (key, sum) in &lock {
        match (uris.get(key), sums.get(key)) {
            (None, _) => problems.push(format!("missing: {key} (SRC_URI crate:// entry)")),
            (Some(_), None) => problems.push(format!("missing: {key} (sha256sum)")),
            (Some(_), Some(s)) if s != sum => problems.push(format!(
                "checksum mismatch: {key}: .inc {s}, Cargo.lock {sum}"
            )),
            _ => {}
        }
    }
    let listed: BTreeSet<&String> = uris.keys().chain(sums.keys()).collect();
    for key in listed {
        if !lock.contains_key(key) {
            problems.push(format!("extra: {key} is not in Cargo.lock"));
        }
    }
    for (key, param) in &uris {
        if param != key {
            problems.push(format!(
                "{key}: SRC_URI entry has name={param}, want name={key}"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} is out of date with Cargo.lock:\n  {}\nRegenerate it from the repository root with \
         `{REGENERATE}` and commit the result.",
        inc_path().display(),
        problems.join("\n  ")
    );
}

#[test]
fn generator_reproduces_the_committed_crates_inc() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("bastion-crates.inc");
    let mut cmd = Command::new(python_path());
    cmd.arg(root().join(REGENERATE))
        .arg("--out")
        .arg(&out)
        .current_dir(root());
    run(&mut cmd, None, Duration::from_secs(60)).assert_success();
    let generated = read(&out);
    assert!(
        generated == read(&inc_path()),
        "{} differs from what `{REGENERATE}` writes now: run it from the repository root and \
         commit the result",
        inc_path().display()
    );
    // The format bitbake's crate fetcher reads.
    assert!(
        generated.contains("SRC_URI += \" \\\n    crate://crates.io/"),
        "{generated}"
    );
}

#[test]
fn oelint_adv_finds_nothing_in_the_layer() {
    let oelint = python_path().with_file_name("oelint-adv");
    assert!(
        oelint.exists(),
        "{} is missing: run scripts/test (it installs oelint-adv into the venv)",
        oelint.display()
    );
    // oelint-adv lints the files it is given (a directory argument lints nothing): every
    // recipe, append and the layer configuration; includes are read through their recipes.
    let mut files = Vec::new();
    collect(&layer(), &mut files);
    files.retain(|f| {
        let name = f.to_string_lossy();
        name.ends_with(".bb") || name.ends_with(".bbappend") || name.ends_with("conf/layer.conf")
    });
    files.sort();
    for expected in [
        "conf/layer.conf",
        "recipes-bastion/bastion/bastion_git.bb",
        "recipes-core/images/bastion-image.bb",
    ] {
        assert!(
            files.contains(&layer().join(expected)),
            "{expected} not found in {files:?}"
        );
    }
    let mut cmd = Command::new(&oelint);
    cmd.args([
        "--quiet",
        "--release",
        "scarthgap",
        "--relpaths",
        "--jobs",
        "1",
    ])
    // This rule fetches HOMEPAGE over the network; tests send no traffic off the machine.
    .args(["--suppress", "oelint.vars.homepageping"])
    .args(&files)
    .current_dir(root())
    .env("HOME", std::env::temp_dir());
    let out = run(&mut cmd, None, Duration::from_secs(120));
    let findings = out.all();
    assert!(
        out.status.success() && findings.trim().is_empty(),
        "oelint-adv findings in yocto/meta-bastion (fix them, or suppress one with a \
         `# nooelint: <rule>` line and a reason):\n{findings}\n{out}"
    );
    println!("oelint-adv: {} files clean", files.len());
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn recipe_license_and_installed_files_match_the_repository() {
    let recipe = recipe();
    let cargo: toml::Table = toml::from_str(&read(&root().join("Cargo.toml"))).expect("Cargo.toml");
    let license = cargo["package"]["license"].as_str().expect("license");
    assert!(
        recipe.contains(&format!("LICENSE = \"{license}\"")),
        "recipe LICENSE is not Cargo.toml's {license}"
    );

    let md5 = recipe
        .split("file://LICENSE;md5=")
        .nth(1)
        .and_then(|rest| rest.get(..32))
        .expect("LIC_FILES_CHKSUM = \"file://LICENSE;md5=…\"");
    let mut cmd = Command::new("md5sum");
    cmd.arg(root().join("LICENSE"));
    let sum = run(&mut cmd, None, Duration::from_secs(30))
        .assert_success()
        .stdout();
    assert_eq!(
        sum.split_whitespace().next(),
        Some(md5),
        "LIC_FILES_CHKSUM md5 is not LICENSE's"
    );

    // Every ${S}/systemd/<file> the recipe installs, and every unit it enables, exists.
    let installed: Vec<&str> = recipe
        .split("${S}/systemd/")
        .skip(1)
        .map(|rest| rest.split_whitespace().next().unwrap_or_default())
        .collect();
    assert!(installed.len() >= 4, "{installed:?}");
    for file in &installed {
        assert!(
            root().join("systemd").join(file).is_file(),
            "the recipe installs systemd/{file}, which does not exist"
        );
    }
    let services = recipe
        .lines()
        .find_map(|l| l.strip_prefix("SYSTEMD_SERVICE:${PN} = "))
        .expect("SYSTEMD_SERVICE");
    for unit in services.trim_matches('"').split_whitespace() {
        assert!(
            installed.contains(&unit),
            "SYSTEMD_SERVICE names {unit}, which the recipe does not install"
        );
    }
}

/// The hardening files of appliance/ both images install (admin.conf is read, not installed).
const HARDENING: [&str; 3] = ["nftables.conf", "sshd_config", "sysctl.conf"];

fn appliance() -> PathBuf {
    root().join("appliance")
}

fn hardening_recipe() -> String {
    read(&layer().join("recipes-bastion/bastion-hardening/bastion-hardening_1.0.bb"))
}

/// `install … "$repo/appliance/NAME" "$tree/DEST"` lines of image/build.sh: NAME → DEST.
fn debian_installs() -> BTreeMap<String, String> {
    let build = read(&root().join("image/build.sh"));
    let mut out = BTreeMap::new();
    for line in build.lines().map(str::trim) {
        if !line.starts_with("install ") {
            continue;
        }
        let words: Vec<&str> = line
            .split_whitespace()
            .map(|w| w.trim_matches('"'))
            .collect();
        if let [.., source, dest] = words[..] {
            if let Some(name) = source.strip_prefix("$repo/appliance/") {
                let dest = dest
                    .strip_prefix("$tree")
                    .expect("build.sh installs into $tree");
                out.insert(name.to_string(), dest.to_string());
            }
        }
    }
    out
}

/// bastion-hardening's `install -m MODE ${S}/NAME ${D}DEST` lines: NAME → DEST (paths expanded
/// the way scarthgap's bitbake.conf does).
fn yocto_installs(recipe: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in recipe.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let ["install", "-m", _, source, dest] = words[..] {
            if let Some(name) = source.strip_prefix("${S}/") {
                let dest = dest
                    .strip_prefix("${D}")
                    .expect("the recipe installs into ${D}")
                    .replace("${sysconfdir}", "/etc")
                    .replace("${datadir}", "/usr/share")
                    .replace("${systemd_system_unitdir}", "/usr/lib/systemd/system");
                out.insert(name.to_string(), dest);
            }
        }
    }
    out
}

#[test]
fn both_images_install_the_same_hardening_files() {
    let recipe = hardening_recipe();
    let debian = debian_installs();
    let yocto = yocto_installs(&recipe);
    for name in HARDENING {
        assert!(
            appliance().join(name).is_file(),
            "appliance/{name} is missing"
        );
        assert!(
            debian.contains_key(name),
            "image/build.sh does not install appliance/{name}: {debian:?}"
        );
        assert!(
            yocto.contains_key(name),
            "bastion-hardening does not install {name}: {yocto:?}"
        );
        assert!(
            recipe.contains(&format!("file://{name} ")),
            "bastion-hardening's SRC_URI lacks file://{name}"
        );
        // One copy: a file of the same name in the layer would be a second source.
        let copy = layer()
            .join("recipes-bastion/bastion-hardening/files")
            .join(name);
        assert!(
            !copy.exists(),
            "{} duplicates appliance/{name}",
            copy.display()
        );
    }
    // Same places, except sshd's: Debian's sshd_config includes sshd_config.d/, the Yocto
    // recipe keeps the file for bastion-image to put first in sshd_config.
    for name in ["nftables.conf", "sysctl.conf"] {
        let (d, y) = (&debian[name], &yocto[name]);
        let same = d == y || (name == "nftables.conf" && d == "/etc/nftables.conf");
        assert!(same, "{name}: Debian installs it as {d}, Yocto as {y}");
    }
    assert_eq!(debian["sysctl.conf"], yocto["sysctl.conf"]);
    assert_eq!(debian["sshd_config"], "/etc/ssh/sshd_config.d/bastion.conf");
    let image = read(&layer().join("recipes-core/images/bastion-image.bb"));
    assert!(
        image.contains(&format!(
            "${{IMAGE_ROOTFS}}{}",
            yocto["sshd_config"].replace("/usr/share", "${datadir}")
        )),
        "bastion-image does not put {} into sshd_config",
        yocto["sshd_config"]
    );

    // The recipe finds them in appliance/: FILESEXTRAPATHS names the layer's pointer to it,
    // and that pointer (relative to the layer) is this repository's appliance/ folder.
    assert!(
        recipe.contains("FILESEXTRAPATHS:prepend := \"${BASTION_APPLIANCE_DIR}:\""),
        "bastion-hardening does not look in BASTION_APPLIANCE_DIR"
    );
    let layer_conf = read(&layer().join("conf/layer.conf"));
    let dir = layer_conf
        .lines()
        .find_map(|l| l.strip_prefix("BASTION_APPLIANCE_DIR := "))
        .expect("layer.conf sets BASTION_APPLIANCE_DIR")
        .trim_matches('"')
        .replace("${LAYERDIR}", &layer().to_string_lossy());
    assert_eq!(
        std::fs::canonicalize(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")),
        std::fs::canonicalize(appliance()).expect("appliance/")
    );
}

/// NAME=value lines of appliance/admin.conf, as bash sees them after sourcing it.
fn admin_account() -> BTreeMap<String, String> {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(". \"$1\" && for v in ${!ADMIN_@}; do printf '%s=%s\\n' \"$v\" \"${!v}\"; done")
        .arg("bash")
        .arg(appliance().join("admin.conf"))
        .env_clear();
    let out = run(&mut cmd, None, Duration::from_secs(30));
    out.assert_success();
    out.stdout()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs bastion-image.bb's own Python (its `def` blocks) on appliance/admin.conf and returns
/// what EXTRA_USERS_PARAMS expands to.
fn yocto_extra_users_params() -> String {
    let image = read(&layer().join("recipes-core/images/bastion-image.bb"));
    assert!(
        image.contains("EXTRA_USERS_PARAMS = \"${@bastion_admin_params(d)}\""),
        "bastion-image's EXTRA_USERS_PARAMS is not made from appliance/admin.conf"
    );
    let mut defs = String::new();
    let mut inside = false;
    for line in image.lines() {
        if line.starts_with("def ") {
            inside = true;
        } else if !line.is_empty() && !line.starts_with(' ') {
            inside = false;
        }
        if inside {
            defs.push_str(line);
            defs.push('\n');
        }
    }
    let script = format!(
        "import sys, types\n\
         bb = types.SimpleNamespace(parse=types.SimpleNamespace(mark_dependency=lambda d, f: None))\n\
         class D:\n    def getVar(self, name):\n        return {{'BASTION_APPLIANCE_DIR': sys.argv[1]}}[name]\n\
         {defs}\nprint(bastion_admin_params(D()))\n"
    );
    let mut cmd = Command::new(python_path());
    cmd.arg("-c").arg(script).arg(appliance());
    let out = run(&mut cmd, None, Duration::from_secs(30));
    out.assert_success();
    out.stdout().trim().to_string()
}

#[test]
fn both_images_make_the_same_admin_account() {
    let account = admin_account();
    let get = |k: &str| {
        account
            .get(k)
            .unwrap_or_else(|| panic!("appliance/admin.conf has no {k}: {account:?}"))
            .as_str()
    };
    // What the appliance promises: the console as shell, the admin socket's group only.
    assert_eq!(get("ADMIN_USER"), "admin");
    assert_eq!(get("ADMIN_SHELL"), "/usr/bin/bastion-console");
    assert_eq!(get("ADMIN_GROUPS"), "bastion-admin");
    assert_eq!(get("ADMIN_PASSWORD"), "*");

    // Debian: build.sh sources the file and makes the account from its variables only.
    let build = read(&root().join("image/build.sh"));
    assert!(
        build.contains(". \"$repo/appliance/admin.conf\""),
        "build.sh does not source appliance/admin.conf"
    );
    let useradd = build
        .split("chroot \"$tree\" useradd ")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .expect("build.sh runs useradd");
    for option in [
        "--home-dir \"$ADMIN_HOME\"",
        "--shell \"$ADMIN_SHELL\"",
        "--groups \"$ADMIN_GROUPS\"",
        "\"$ADMIN_USER\"",
    ] {
        assert!(
            useradd.contains(option),
            "build.sh's useradd lacks {option}: {useradd}"
        );
    }
    assert!(build.contains("usermod --password \"$ADMIN_PASSWORD\" \"$ADMIN_USER\""));
    assert!(build.contains("ln -sf bastion \"$tree$ADMIN_SHELL\""));

    // Yocto: the image recipe's Python, run on the same file, gives the same account.
    let params = yocto_extra_users_params();
    let want = format!(
        "useradd -m -d {home} -s {shell} -G {groups} -c '{comment}' {user}; usermod -p '{pw}' {user};",
        home = get("ADMIN_HOME"),
        shell = get("ADMIN_SHELL"),
        groups = get("ADMIN_GROUPS"),
        comment = get("ADMIN_COMMENT"),
        user = get("ADMIN_USER"),
        pw = get("ADMIN_PASSWORD"),
    );
    assert_eq!(params, want, "bastion-image's EXTRA_USERS_PARAMS");
    // The shell exists there too, and nothing grants sudo.
    let bastion = recipe();
    let shell = get("ADMIN_SHELL").rsplit('/').next().unwrap_or_default();
    assert!(
        bastion.contains(&format!("ln -sf bastion ${{D}}${{bindir}}/{shell}")),
        "the bastion recipe does not install {shell}"
    );
    let mut layer_files = Vec::new();
    collect(&layer(), &mut layer_files);
    for file in layer_files
        .iter()
        .filter(|f| !f.ends_with("bastion-crates.inc"))
    {
        // Comments may say "no sudo"; what bitbake reads may not name it.
        let text: String = read(file)
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        for word in ["sudo", "NOPASSWD", "/bin/sh admin"] {
            assert!(
                !text.contains(word),
                "{} mentions {word}: the admin account gets no sudo and no shell",
                file.display()
            );
        }
    }
    // The group exists before the account is made: the bastion recipe creates the users of
    // systemd/bastion.sysusers at package install.
    let sysusers = read(&root().join("systemd/bastion.sysusers"));
    for line in sysusers.lines().filter(|l| !l.starts_with('#')) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            ["u", name, ..] => assert!(
                bastion
                    .lines()
                    .any(|l| l.starts_with("USERADD_PARAM:${PN} = ")
                        && l.trim_end_matches('"').ends_with(&format!(" {name}"))),
                "the bastion recipe does not create sysusers' user {name}"
            ),
            ["g", name, ..] => assert!(
                bastion.contains(&format!("GROUPADD_PARAM:${{PN}} = \"--system {name}\"")),
                "the bastion recipe does not create sysusers' group {name}"
            ),
            ["m", _, group] => assert!(
                bastion.contains(&format!("--groups {group} ")),
                "the bastion recipe's user is not in {group}"
            ),
            _ => {}
        }
    }
}

#[test]
fn hardening_files_hold_what_the_appliance_promises() {
    let has_lines = |name: &str, lines: &[&str]| {
        let text = read(&appliance().join(name));
        for line in lines {
            assert!(
                text.lines().any(|l| l.trim() == *line),
                "appliance/{name} lacks `{line}`"
            );
        }
    };
    has_lines(
        "sshd_config",
        &[
            "PermitRootLogin no",
            "AuthenticationMethods publickey",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "AllowTcpForwarding no",
            "AllowAgentForwarding no",
            "PermitTunnel no",
        ],
    );
    has_lines(
        "sysctl.conf",
        &[
            "kernel.yama.ptrace_scope = 2",
            "kernel.unprivileged_userns_clone = 0",
            "net.ipv4.conf.all.secure_redirects = 0",
            "net.ipv4.conf.default.secure_redirects = 0",
            "net.ipv6.conf.all.accept_source_route = 0",
            "net.ipv6.conf.default.accept_source_route = 0",
            "net.ipv4.conf.all.accept_redirects = 0",
            "net.ipv4.conf.all.accept_source_route = 0",
            "kernel.kptr_restrict = 2",
        ],
    );

    let nft = read(&appliance().join("nftables.conf"));
    let rules: Vec<&str> = nft
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    // IMDS: only root and the bastion's user, over IPv4 and IPv6.
    assert!(
        rules.contains(&"define imds_users = { root, bastion }"),
        "{rules:#?}"
    );
    for (family, address) in [("ip", "169.254.169.254"), ("ip6", "fd00:ec2::254")] {
        let define = format!(
            "define imds_{} = {address}",
            if family == "ip" { "v4" } else { "v6" }
        );
        assert!(rules.contains(&define.as_str()), "no `{define}`");
        assert!(
            rules
                .iter()
                .any(|r| r.starts_with(&format!("{family} daddr $imds_"))
                    && r.contains("meta skuid != $imds_users")
                    && (r.contains(" drop") || r.contains(" reject"))),
            "no output rule keeping {address} to $imds_users: {rules:#?}"
        );
    }
    // ICMP by type, no blanket accept; no blanket DHCPv4 port.
    for rule in &rules {
        assert!(
            !rule.contains("l4proto { icmp"),
            "blanket ICMP accept: {rule}"
        );
        assert!(
            !(rule.contains("dport") && rule.contains("68")),
            "UDP 68 opened: {rule}"
        );
    }
    let ping: Vec<&&str> = rules
        .iter()
        .filter(|r| r.contains("echo-request"))
        .collect();
    assert!(
        ping.iter().all(|r| r.contains("limit rate")),
        "ping not rate limited: {ping:?}"
    );
}

/// `nft --check` on the ruleset, when nft is installed and we may use netlink (root): a typo
/// would leave the booted image without a firewall. The bastion user does not exist here, so
/// the check resolves root in its place.
#[test]
fn nftables_ruleset_parses() {
    if !support::process::is_root() || Command::new("nft").arg("--version").output().is_err() {
        println!("SKIP: nft --check needs nft (nftables) and root");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nftables.conf");
    let text = read(&appliance().join("nftables.conf"));
    assert!(text.contains("{ root, bastion }"));
    std::fs::write(&path, text.replace("{ root, bastion }", "{ root, root }")).expect("write");
    let mut cmd = Command::new("nft");
    cmd.arg("--check").arg("--file").arg(&path);
    let out = run(&mut cmd, None, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "nft --check appliance/nftables.conf:\n{out}"
    );
}
