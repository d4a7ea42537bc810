//! The admin socket as tests reach it: a stack whose admin socket sits in a 0755 directory under
//! /tmp (so `nobody` can reach it and be refused by the peer-credential check, not by the file
//! system), and the `bastion` admin verbs run against it as the test's user or as `nobody`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::bastion::BASTION_BIN;
use super::certs::write_private;
use super::process::{run, Out};
use super::stack::{Stack, StackOpts, APP};

pub const NOBODY: u32 = 65534;

/// The stack, with the admin socket in a 0755 directory under /tmp (so `nobody` can reach it
/// and be refused by the peer-credential check, not by the file system).
pub struct Admin {
    pub stack: Stack,
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Admin {
    pub fn start() -> Admin {
        Admin::start_with(StackOpts::default())
    }

    /// [`start`](Self::start) with these options (their `extra_toml` is kept, the admin
    /// socket's table is added after it).
    pub fn start_with(opts: StackOpts) -> Admin {
        let dir = tempfile::Builder::new()
            .prefix("bastion-admin-")
            .tempdir_in("/tmp")
            .expect("admin dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("admin.sock");
        let extra_toml = format!(
            "{}\n[admin]\nsocket = {}\n",
            opts.extra_toml,
            toml::Value::String(socket.display().to_string())
        );
        let stack = Stack::start_with(StackOpts { extra_toml, ..opts });
        Admin {
            stack,
            socket,
            _dir: dir,
        }
    }

    /// `bastion ARGS --socket S` as the test's user.
    pub fn cli(&self, args: &[&str]) -> Out {
        cli(&self.socket, args)
    }

    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        out.assert_success();
        out.stdout()
    }

    /// `role add NAME --replace --db-users DB_USERS --db-names DB_NAMES`, with `--commands` and
    /// `--keys` where given: redefines a role (the stack's `apps`, say) while sessions may be
    /// live. The test fails if the verb does.
    #[track_caller]
    pub fn replace_role(
        &self,
        name: &str,
        db_users: &str,
        db_names: &str,
        commands: Option<&str>,
        keys: Option<&str>,
    ) -> String {
        let mut args = vec![
            "role",
            "add",
            name,
            "--replace",
            "--db-users",
            db_users,
            "--db-names",
            db_names,
        ];
        if let Some(commands) = commands {
            args.extend(["--commands", commands]);
        }
        if let Some(keys) = keys {
            args.extend(["--keys", keys]);
        }
        self.ok(&args)
    }

    /// `bastion ARGS --socket S` as `nobody`, with the socket opened to everyone so that the
    /// refusal can only come from the peer-credential check. Needs root (setpriv).
    pub fn cli_as_nobody(&self, args: &[&str]) -> Out {
        std::fs::set_permissions(&self.socket, std::fs::Permissions::from_mode(0o666))
            .expect("chmod admin socket");
        run(
            Command::new("setpriv")
                .arg(format!("--reuid={NOBODY}"))
                .arg(format!("--regid={NOBODY}"))
                .arg("--clear-groups")
                .arg(BASTION_BIN)
                .args(args)
                .arg("--socket")
                .arg(&self.socket),
            None,
            Duration::from_secs(60),
        )
    }

    /// `db add NAME --address ADDRESS [MORE…] --auth password` with the stack's upstream
    /// password and `app` as the default db-user; `more` such as `--replace` (re-point a
    /// database while sessions may be live) or `--tls-ca-file`. The test fails if the verb does.
    #[track_caller]
    pub fn add_password_db(&self, name: &str, address: &str, more: &[&str]) -> String {
        let pw = self.password_file();
        let mut args = vec!["db", "add", name, "--address", address];
        args.extend(more);
        args.extend([
            "--auth",
            "password",
            "--password-file",
            pw.to_str().unwrap(),
            "--default-db-user",
            APP,
        ]);
        self.ok(&args)
    }

    /// A file with the upstream password in the stack's `secrets_dir`.
    pub fn password_file(&self) -> PathBuf {
        write_private(
            &self.stack.secrets_dir().join("up.pw"),
            self.stack.upstream_password.as_bytes(),
        )
    }
}

pub fn cli(socket: &Path, args: &[&str]) -> Out {
    run(
        Command::new(BASTION_BIN)
            .args(args)
            .arg("--socket")
            .arg(socket),
        None,
        Duration::from_secs(60),
    )
}
