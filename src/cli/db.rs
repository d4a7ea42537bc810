//! `bastion db add|ls|show|rm`: the store's databases, through the admin socket.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::admin::{table, unexpected, AdminArgs};
use crate::admin::wire::{Reply, Request};
use crate::config::{
    AuthConfig, DatabaseConfig, IamService, PasswordSource, UpstreamAddr, UpstreamTls,
};
use crate::store::records::DatabaseRecord;

#[allow(clippy::large_enum_variant)] // parsed once per process
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Add a database (or change one with --replace); new sessions reach it at once.
    Add(Box<DbAddArgs>),
    /// List databases.
    Ls,
    /// Show one database.
    Show { name: String },
    /// Remove a database (its Unix socket goes; live sessions go on).
    Rm { name: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// IAM auth token (ElastiCache / MemoryDB): needs --service and --target; without --region
    /// the instance's region (AWS_REGION, profile, IMDS) is used.
    Iam,
    /// A static password from --password-file or --password-env (never on the command line).
    Password,
    /// No AUTH upstream.
    None,
    /// Passwords the bastion generates, rotates and keeps in Secrets Manager: an AWS cache
    /// (--service, --target; users found by tag) or a self-hosted engine (--engine,
    /// --admin-user, --admin-password-file, --managed-users).
    Managed,
}

#[derive(Debug, Args)]
pub struct DbAddArgs {
    pub name: String,
    /// Upstream `host:port`.
    #[arg(long)]
    pub address: UpstreamAddr,
    #[arg(long, value_enum)]
    pub auth: AuthMode,
    #[arg(long, value_enum)]
    pub service: Option<IamService>,
    /// AWS region of the cache (default: the bastion's own, from AWS_REGION, the profile or
    /// IMDS placement/region).
    #[arg(long)]
    pub region: Option<String>,
    /// Replication group id, MemoryDB cluster name or serverless cache name.
    #[arg(long)]
    pub target: Option<String>,
    /// The IAM target is an ElastiCache Serverless cache.
    #[arg(long)]
    pub serverless: bool,
    /// File holding the upstream password: directly in the secrets directory (`secrets_dir`,
    /// default /etc/bastion/secrets) or systemd's $CREDENTIALS_DIRECTORY, owned by root or the
    /// bastion user, mode 0600 or 0400, at most 4 KiB.
    #[arg(long, conflicts_with = "password_env")]
    pub password_file: Option<PathBuf>,
    /// Environment variable of the daemon holding the upstream password (named BASTION_…).
    #[arg(long)]
    pub password_env: Option<String>,
    /// Connect upstream over TLS (implied by --tls-ca-file / --tls-server-name).
    #[arg(long)]
    pub tls: bool,
    /// PEM CAs to trust upstream (default: the system's).
    #[arg(long)]
    pub tls_ca_file: Option<PathBuf>,
    /// Name to verify in the upstream certificate (default: the address host).
    #[arg(long)]
    pub tls_server_name: Option<String>,
    /// Database user when the client names none and its roles allow several.
    #[arg(long)]
    pub default_db_user: Option<String>,
    /// IAM mode: sign tokens with credentials of this role (STS AssumeRole).
    #[arg(long)]
    pub assume_role_arn: Option<String>,
    /// `sts:ExternalId` for --assume-role-arn.
    #[arg(long, requires = "assume_role_arn")]
    pub external_id: Option<String>,
    /// RoleSessionName for --assume-role-arn (default `bastion`).
    #[arg(long, requires = "assume_role_arn")]
    pub session_name: Option<String>,
    /// IAM mode without --tls: accept sending auth tokens in clear (test rigs only; refused
    /// otherwise, and `bastion doctor` warns).
    #[arg(long)]
    pub allow_plaintext_auth: bool,
    /// Password mode: the upstream has one password and no users (Redis requirepass, an
    /// ElastiCache AUTH token without RBAC): send one-argument `AUTH <password>`.
    #[arg(long)]
    pub legacy_auth: bool,
    /// `guard` (default: requests are checked so a session can never switch db-user),
    /// `inspect` (the guard, and every command paired with its reply and audited as
    /// `db.command`) or `passthrough` (bytes relayed untouched, trusting the upstream's own
    /// ACLs).
    #[arg(long, value_parser = ["guard", "inspect", "passthrough"], default_value = "guard")]
    pub relay: String,
    /// Address ranges (CIDR) this database may point into although the address policy refuses
    /// them by default (link-local, multicast…), comma-separated. Never the metadata endpoints.
    #[arg(long, value_delimiter = ',')]
    pub allow_addresses: Vec<ipnet::IpNet>,
    /// Managed, self-hosted: `redis` or `valkey`.
    #[arg(long, value_enum)]
    pub engine: Option<crate::config::SelfHostedEngine>,
    /// Managed, self-hosted: the ACL user the bastion changes passwords with.
    #[arg(long)]
    pub admin_user: Option<String>,
    /// Managed, self-hosted: the admin user's password file, under the rules of
    /// --password-file (directly in the secrets directory, private, small).
    #[arg(long)]
    pub admin_password_file: Option<PathBuf>,
    /// Managed, self-hosted: the ACL users whose passwords the bastion owns, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub managed_users: Vec<String>,
    /// Managed: first part of every secret name (default `bastion`).
    #[arg(long)]
    pub secret_prefix: Option<String>,
    /// Managed: KMS key the secrets are encrypted with.
    #[arg(long)]
    pub kms_key_id: Option<String>,
    /// Managed: how often each password changes (default 15m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub rotation_interval: Option<std::time::Duration>,
    /// Managed: how long the secret of a user that stopped being managed is kept before it is
    /// deleted (default 7d).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub secret_grace_period: Option<std::time::Duration>,
    /// Change an existing database instead of adding one.
    #[arg(long)]
    pub replace: bool,
}

pub fn run(command: DbCommand, admin: &AdminArgs) -> anyhow::Result<()> {
    match command {
        DbCommand::Add(args) => {
            let replace = args.replace;
            let config = database_config(*args)?;
            let record = DatabaseRecord::try_from(&config)?;
            let reply = admin.call(Request::PutDatabase { record, replace })?;
            let verb = if replace { "changed" } else { "added" };
            admin.done(reply, &format!("database '{}' {verb}", config.name))
        }
        DbCommand::Ls => {
            let dbs = databases(admin)?;
            admin.print(&dbs, || {
                let rows: Vec<Vec<String>> = dbs.iter().map(row).collect();
                print!(
                    "{}",
                    table(
                        &["Name", "Address", "Auth", "TLS", "Default DB user"],
                        &rows
                    )
                );
            })
        }
        DbCommand::Show { name } => {
            let db = databases(admin)?
                .into_iter()
                .find(|d| d.name == name)
                .ok_or_else(|| anyhow::anyhow!("no database named '{name}'"))?;
            admin.print(&db, || print!("{}", show(&db)))
        }
        DbCommand::Rm { name } => {
            let reply = admin.call(Request::RemoveDatabase(name.clone()))?;
            admin.done(reply, &format!("database '{name}' removed"))
        }
    }
}

fn databases(admin: &AdminArgs) -> anyhow::Result<Vec<DatabaseConfig>> {
    match admin.call(Request::ListDatabases)? {
        Reply::Databases(dbs) => Ok(dbs.iter().map(DatabaseConfig::from).collect()),
        other => Err(unexpected(other)),
    }
}

/// The command line as the boot config's type (so both are checked by the same conversion).
fn database_config(a: DbAddArgs) -> anyhow::Result<DatabaseConfig> {
    let auth = match a.auth {
        AuthMode::Iam => {
            let need = |v: Option<String>, flag: &str| {
                v.ok_or_else(|| anyhow::anyhow!("--auth iam needs --{flag}"))
            };
            AuthConfig::Iam {
                service: a
                    .service
                    .ok_or_else(|| anyhow::anyhow!("--auth iam needs --service"))?,
                region: a.region,
                target: need(a.target, "target")?,
                serverless: a.serverless,
            }
        }
        AuthMode::Password => AuthConfig::Password(match (a.password_file, a.password_env) {
            (Some(path), None) => PasswordSource::File(path),
            (None, Some(var)) => PasswordSource::Env(var),
            _ => anyhow::bail!("--auth password needs --password-file or --password-env"),
        }),
        AuthMode::None => AuthConfig::None,
        // The rules (one of service or engine, what each needs) are the config's, checked
        // where the daemon takes the declaration.
        AuthMode::Managed => AuthConfig::Managed(crate::config::ManagedAuthConfig {
            service: a.service,
            engine: a.engine,
            region: a.region,
            target: a.target,
            serverless: a.serverless,
            admin_user: a.admin_user,
            admin_password_file: a.admin_password_file,
            secret_prefix: a.secret_prefix,
            kms_key_id: a.kms_key_id,
            rotation_interval: a.rotation_interval,
            secret_grace_period: a.secret_grace_period,
        }),
    };
    let tls =
        (a.tls || a.tls_ca_file.is_some() || a.tls_server_name.is_some()).then_some(UpstreamTls {
            ca_file: a.tls_ca_file,
            server_name: a.tls_server_name,
        });
    Ok(DatabaseConfig {
        name: a.name,
        address: a.address,
        tls,
        auth,
        default_db_user: a.default_db_user,
        assume_role_arn: a.assume_role_arn,
        external_id: a.external_id,
        session_name: a.session_name,
        allow_plaintext_auth: a.allow_plaintext_auth,
        legacy_auth: a.legacy_auth,
        relay: match a.relay.as_str() {
            "passthrough" => crate::config::RelayMode::Passthrough,
            "inspect" => crate::config::RelayMode::Inspect,
            _ => crate::config::RelayMode::Guard,
        },
        allow_addresses: a.allow_addresses,
        managed_users: a.managed_users,
    })
}

fn auth_summary(auth: &AuthConfig) -> String {
    match auth {
        AuthConfig::Iam {
            service,
            region,
            target,
            serverless,
        } => format!(
            "iam ({} {} {target}{})",
            service.signing_name(),
            region.as_deref().unwrap_or("instance-region"),
            if *serverless { " serverless" } else { "" }
        ),
        AuthConfig::Password(PasswordSource::File(p)) => format!("password (file {})", p.display()),
        AuthConfig::Password(PasswordSource::Env(e)) => format!("password (env {e})"),
        AuthConfig::None => "none".into(),
        AuthConfig::Managed(m) => match (m.service, m.engine) {
            (Some(service), _) => format!(
                "managed ({} {})",
                service.signing_name(),
                m.target.as_deref().unwrap_or("-")
            ),
            _ => format!(
                "managed (self-hosted, admin {})",
                m.admin_user.as_deref().unwrap_or("-")
            ),
        },
    }
}

fn row(d: &DatabaseConfig) -> Vec<String> {
    vec![
        d.name.clone(),
        d.address.to_string(),
        auth_summary(&d.auth),
        if d.tls.is_some() { "yes" } else { "no" }.into(),
        d.default_db_user.clone().unwrap_or_else(|| "-".into()),
    ]
}

fn show(d: &DatabaseConfig) -> String {
    let mut out = format!(
        "name             {}\naddress          {}\nauth             {}\n",
        d.name,
        d.address,
        auth_summary(&d.auth)
    );
    match &d.tls {
        None => out += "tls              no\n",
        Some(t) => {
            out += &format!(
                "tls              yes (CA {}, server name {})\n",
                t.ca_file
                    .as_ref()
                    .map_or("system trust store".into(), |p| p.display().to_string()),
                t.server_name.as_deref().unwrap_or(&d.address.host)
            );
        }
    }
    out += &format!(
        "default db user  {}\n",
        d.default_db_user.as_deref().unwrap_or("-")
    );
    if d.allow_plaintext_auth {
        out += "plaintext auth   allowed (allow_plaintext_auth: tokens travel in clear)\n";
    }
    if d.legacy_auth {
        out += "legacy auth      yes (one-argument AUTH <password>, no db-users)\n";
    }
    out
}
