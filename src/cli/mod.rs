//! The command line: `bastion serve` (the daemon) and the admin/debug verbs, one file each.

pub mod admin;
pub mod cert;
pub mod configure;
pub mod console;
pub mod db;
pub mod doctor;
pub mod firstboot;
pub mod iam_token;
pub mod import;
pub mod managed;
pub mod role;
pub mod secret;
pub mod serve;
pub mod sessions;
pub mod status;
pub mod user;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{IamService, UpstreamAddr};

#[derive(Debug, Parser)]
#[command(
    name = "bastion",
    version,
    about = "Hardened access point for managed Redis"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve(ServeArgs),
    /// Manage client certificates from the on-box CA.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Print an ElastiCache / MemoryDB IAM auth token from the credential chain (for debugging).
    IamToken(IamTokenArgs),
    /// Check credentials and every database (DNS, TCP, TLS, AUTH); exit non-zero if one fails.
    Doctor(DoctorArgs),
    /// Set-up helpers for the bastion's AWS account.
    #[command(subcommand)]
    Configure(ConfigureCommand),
    /// First boot of the appliance: import a settings document from EC2 user-data and install
    /// the launch SSH key for the admin user (run by bastion-firstboot.service).
    Firstboot(firstboot::FirstbootArgs),
    /// Databases (through the running daemon's admin socket).
    Db {
        #[command(subcommand)]
        command: db::DbCommand,
        #[command(flatten)]
        admin: admin::AdminArgs,
    },
    /// Roles: which database users and databases they allow.
    Role {
        #[command(subcommand)]
        command: role::RoleCommand,
        #[command(flatten)]
        admin: admin::AdminArgs,
    },
    /// Users: their roles and Unix-account binding.
    User {
        #[command(subcommand)]
        command: user::UserCommand,
        #[command(flatten)]
        admin: admin::AdminArgs,
    },
    /// The running daemon: uptime, listeners, sessions, credentials, store.
    Status {
        #[command(flatten)]
        admin: admin::AdminArgs,
    },
    /// Add or replace the databases, roles and users a TOML file declares (idempotent).
    Import {
        file: PathBuf,
        #[command(flatten)]
        admin: admin::AdminArgs,
    },
    /// Print the store's databases, roles and users as a file `bastion import` takes.
    Export {
        #[command(flatten)]
        admin: admin::AdminArgs,
    },
    /// Restricted shell for the serial / SSH console (an admin's login shell): bastion verbs
    /// only, with completion and history. See README "Console".
    Console(console::ConsoleArgs),
    /// Password files in secrets_dir, written by the daemon: set (from stdin), ls, rm.
    Secret {
        #[command(subcommand)]
        command: secret::SecretCommand,
        #[command(flatten)]
        admin: admin::AdminArgs,
    },
    /// Live sessions: list them, or end one.
    Sessions {
        #[command(subcommand)]
        command: sessions::SessionsCommand,
        #[command(flatten)]
        admin: admin::AdminArgs,
    },
    /// Managed users (passwords the bastion rotates): list them, or rotate one now.
    Managed {
        #[command(subcommand)]
        command: managed::ManagedCommand,
        #[command(flatten)]
        admin: admin::AdminArgs,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Boot configuration (TOML). See README "Configuration reference".
    #[arg(long, conflicts_with = "dev", required_unless_present = "dev")]
    pub config: Option<PathBuf>,
    /// Run on the embedded development configuration (TLS on 127.0.0.1:6380, database `local`).
    #[arg(long)]
    pub dev: bool,
    /// With --dev: where state lives.
    #[arg(long, default_value = ".bastion", requires = "dev")]
    pub state_dir: PathBuf,
    /// With --dev: the upstream Redis of database `local`.
    #[arg(long, default_value = "127.0.0.1:6379", requires = "dev")]
    pub upstream: UpstreamAddr,
    /// With --dev: the TLS listener address.
    #[arg(long, default_value = "127.0.0.1:6380", requires = "dev")]
    pub listen: std::net::SocketAddr,
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Issue a client certificate: writes USER.crt, USER.key (0600) and ca.crt into --out.
    /// Through the running daemon's admin socket; with no daemon, from the state dir directly.
    Issue(CertIssueArgs),
    /// List issued certificates: serial, user, issued, expires, status (active/expired/revoked).
    Ls {
        #[command(flatten)]
        admin: admin::AdminArgs,
    },
    /// Revoke a certificate: new handshakes with it are refused and its live sessions end.
    Revoke {
        /// The serial, in hex as `cert ls` and `cert issue` print it.
        serial: String,
        #[command(flatten)]
        admin: admin::AdminArgs,
    },
}

#[derive(Debug, Args)]
pub struct CertIssueArgs {
    /// The bastion user (certificate common name).
    pub user: String,
    /// Validity, e.g. 8h, 30m, 7d.
    #[arg(long, default_value = "8h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Output directory.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// State directory holding the CA (`<state>/ca`).
    #[arg(long, default_value = ".bastion", conflicts_with = "config")]
    pub state_dir: PathBuf,
    /// Take the state directory from this boot configuration instead.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The daemon's admin socket (default: the config's `admin.socket`, else
    /// `<state_dir>/run/admin.sock`).
    #[arg(long, env = "BASTION_ADMIN_SOCKET")]
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct IamTokenArgs {
    #[arg(long, value_enum)]
    pub service: IamService,
    /// Default: AWS_REGION / AWS_DEFAULT_REGION, the profile's, else IMDS placement/region.
    #[arg(long)]
    pub region: Option<String>,
    /// Replication group id, MemoryDB cluster name or serverless cache name.
    #[arg(long)]
    pub target: String,
    /// The database (ElastiCache/MemoryDB) user the token is for.
    #[arg(long)]
    pub user: String,
    /// The target is an ElastiCache Serverless cache.
    #[arg(long)]
    pub serverless: bool,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Boot configuration (TOML) whose databases are checked.
    #[arg(long)]
    pub config: PathBuf,
    /// Print the report as one JSON document (see README "bastion doctor").
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigureCommand {
    /// Print the least-privilege IAM policy for the configured databases (JSON on stdout).
    Bootstrap {
        /// Boot configuration (TOML) whose databases the policy covers.
        #[arg(long)]
        config: PathBuf,
        /// Print the policy for you to attach (the only mode so far).
        #[arg(long)]
        manual: bool,
        /// The AWS account id in the ARNs.
        #[arg(long, default_value = crate::cli::configure::policy::ACCOUNT_PLACEHOLDER)]
        account_id: String,
    },
}

/// Run the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Cert(CertCommand::Issue(args)) => cert::issue(args),
        Command::Cert(CertCommand::Ls { admin }) => cert::list(&admin),
        Command::Cert(CertCommand::Revoke { serial, admin }) => cert::revoke(&serial, &admin),
        Command::IamToken(args) => iam_token::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Configure(command) => configure::run(command),
        Command::Firstboot(args) => firstboot::run(args),
        Command::Db { command, admin } => db::run(command, &admin),
        Command::Role { command, admin } => role::run(command, &admin),
        Command::User { command, admin } => user::run(command, &admin),
        Command::Status { admin } => status::run(&admin),
        Command::Import { file, admin } => import::import(&file, &admin),
        Command::Export { admin } => import::export(&admin),
        Command::Console(args) => console::run(args),
        Command::Sessions { command, admin } => sessions::run(command, &admin),
        Command::Managed { command, admin } => managed::run(command, &admin),
        Command::Secret { command, admin } => secret::run(command, &admin),
    }
}

/// `outer: cause: root cause`, skipping a cause whose text the previous message already quotes
/// (our error types name their source inline).
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}
