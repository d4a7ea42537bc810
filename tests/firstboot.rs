//! `bastion firstboot` against the IMDSv2 emulator: a settings document in user-data is written
//! to the daemon's pending import (`<state_dir>/import.toml`, 0600, the state dir made 0700) and
//! not again once the daemon applied it, the launch key lands in authorized_keys (0600) once —
//! even when the document is broken —, the stamp is written; user-data that is not ours is left
//! alone; nothing of user-data reaches stdout. (The daemon's side of the import:
//! tests/pending_import.rs.)

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::imds::{Behaviour, Emulator};
use support::process::{run, Out};

const BASTION_BIN: &str = env!("CARGO_BIN_EXE_bastion");
const KEY: &str = support::imds::OPENSSH_KEY;
const SETTINGS: &str = "# bastion-settings\n[[databases]]\nname = \"cache\"\naddress = \"127.0.0.1:6379\"\nauth = { mode = \"password\", password_env = \"BASTION_SECRETPW\" }\n";

fn firstboot(emulator: &Emulator, dir: &Path) -> Out {
    let config = dir.join("bastion.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\n[listeners.unix]\ndirectory = \"{}\"\n",
            dir.join("state").display(),
            dir.join("run").display()
        ),
    )
    .expect("write config");
    let mut cmd = Command::new(BASTION_BIN);
    cmd.arg("firstboot")
        .arg("--config")
        .arg(&config)
        .args(["--import-owner", "no-such-user-bastion-test"])
        .arg("--authorized-keys")
        .arg(dir.join("home/admin/.ssh/authorized_keys"))
        .args(["--admin-user", "no-such-user-bastion-test"])
        .arg("--stamp")
        .arg(dir.join("stamp/done"))
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", emulator.endpoint())
        .env_remove("AWS_EC2_METADATA_DISABLED");
    run(&mut cmd, None, Duration::from_secs(30))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn settings_document_and_keys_are_installed_once() {
    let emulator = Emulator::start(Behaviour {
        user_data: Some(SETTINGS.as_bytes().to_vec()),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let out = firstboot(&emulator, dir.path());
    out.assert_success();
    assert!(
        !out.all().contains("SECRETPW"),
        "user-data echoed:\n{}",
        out.all()
    );

    // The daemon never ran: firstboot made its state dir.
    let import = dir.path().join("state/import.toml");
    assert_eq!(std::fs::read_to_string(&import).unwrap(), SETTINGS);
    assert_eq!(mode(&import), 0o600);
    assert_eq!(mode(import.parent().unwrap()), 0o700);
    let keys = dir.path().join("home/admin/.ssh/authorized_keys");
    assert_eq!(std::fs::read_to_string(&keys).unwrap(), format!("{KEY}\n"));
    assert_eq!(mode(&keys), 0o600);
    assert_eq!(mode(keys.parent().unwrap()), 0o700);
    assert!(dir.path().join("stamp/done").exists());

    // A second run (the stamp is the unit's business) adds nothing twice.
    firstboot(&emulator, dir.path()).assert_success();
    assert_eq!(std::fs::read_to_string(&keys).unwrap(), format!("{KEY}\n"));

    // Once the daemon applied the document (and renamed it), a run does not hand it over again.
    std::fs::rename(&import, dir.path().join("state/import.toml.applied")).unwrap();
    let out = firstboot(&emulator, dir.path());
    out.assert_success();
    assert!(out.stdout().contains("already imported"), "{}", out.all());
    assert!(!import.exists());
    // Every metadata read went through an IMDSv2 token.
    assert!(emulator.count(&hyper::Method::PUT, support::imds::TOKEN_PATH) >= 1);
}

#[test]
fn foreign_user_data_is_not_imported() {
    let emulator = Emulator::start(Behaviour {
        user_data: Some(b"#!/bin/bash\necho hello\n".to_vec()),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let out = firstboot(&emulator, dir.path());
    out.assert_success();
    assert!(
        out.stdout().contains("not a bastion settings document"),
        "{}",
        out.all()
    );
    assert!(!dir.path().join("state/import.toml").exists());
    assert!(dir.path().join("home/admin/.ssh/authorized_keys").exists());
}

#[test]
fn marked_but_broken_document_fails_without_echoing_it() {
    let emulator = Emulator::start(Behaviour {
        user_data: Some(b"# bastion-settings\npassword = \"SECRETPW\n".to_vec()),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let out = firstboot(&emulator, dir.path());
    assert!(!out.status.success(), "{}", out.all());
    assert!(
        out.stderr().contains("not valid TOML (line 2)"),
        "{}",
        out.all()
    );
    assert!(
        !out.all().contains("SECRETPW"),
        "user-data echoed:\n{}",
        out.all()
    );
    assert!(!dir.path().join("stamp/done").exists());
    assert!(!dir.path().join("state/import.toml").exists());
    // The launch key is in anyway: the admin can log in and see why.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("home/admin/.ssh/authorized_keys")).unwrap(),
        format!("{KEY}\n")
    );
}

#[test]
fn imds_unreachable_fails_and_writes_no_stamp() {
    let mut emulator = Emulator::start(Behaviour::default());
    emulator.stop();
    let dir = tempfile::tempdir().expect("temp dir");
    let out = firstboot(&emulator, dir.path());
    assert!(!out.status.success(), "{}", out.all());
    assert!(out.stderr().contains("user-data"), "{}", out.all());
    assert!(!dir.path().join("stamp/done").exists());
}
