//! The Yocto layer (yocto/meta-bastion) stays buildable as the crate changes:
//! - `bastion-crates.inc` lists exactly Cargo.lock's crates.io packages and checksums (other
//!   branches add crates; the message says which command regenerates it), and the generator
//!   reproduces the committed file byte for byte;
//! - `oelint-adv` (test venv) finds nothing in the layer's recipes, includes and layer.conf;
//! - the recipe's license checksum is the repository's LICENSE file, and every file it installs
//!   from systemd/ exists.
//!
//! No bitbake here: these check the layer's inputs, not a build.

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
