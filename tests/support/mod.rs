//! Shared fixtures for the integration tests: real processes on port 0, real clients.
//!
//! - [`redis`]: a real `redis-server` (plaintext + TLS port + Unix socket, ACL users) in a temp dir.
//! - [`admin`]: a stack with a reachable admin socket, and the admin verbs run against it.
//! - [`appliance`]: the boot test's image (built or reused) and its boot in qemu (TCG).
//! - [`bastion`]: the `bastion` binary under test, its logs, and `bastion cert issue`.
//! - [`clients`]: `redis-cli`, `redis-benchmark` and redis-py, all reaching an [`clients::Endpoint`].
//! - [`raw`]: byte-level TLS / Unix / TCP clients and a RESP framer, for exact-bytes assertions.
//! - [`stack`]: one Redis + one bastion wired together with the databases, roles and users
//!   most end-to-end tests need.
//! - [`scenarios`]: behaviours every client path must show (run by `e2e_mtls` and `e2e_unix`).
//! - [`certs`]: a throw-away CA (rcgen) for the upstream's server certificate and foreign client certs.
//! - [`process`]: running a child with a hang guard.
//! - [`store_daemon`]: a daemon with only a store and an admin socket, restartable (or killed)
//!   on the same state dir, written to through the admin client library.
//! - [`imds`]: an IMDSv2 emulator (tokens with TTL, disabled / no-role / v1 modes, hop limit via
//!   `IP_TTL`), runnable inside a network namespace.
//! - [`netns`]: network namespaces a test makes (deleted on drop), the client → router → imds
//!   topology of the hop-limit tests, and a thread inside one.
//! - [`logs`]: the library's tracing output captured in-process.
//! - [`http_stub`]: a loopback HTTP server answering from a closure (ECS credentials, a refusing STS).
//! - [`control_plane`]: MemoryDB and ElastiCache shims in front of moto (DescribeACLs;
//!   DescribeUserGroups, DescribeServerlessCaches, ModifyUser — which moto lacks) and the
//!   harnesses applying UpdateUser's / ModifyUser's passwords to a real redis-server ACL.
//! - [`managed`]: `bastion managed …` and direct AUTH checks for the managed-user tests.
//! - [`scrape`]: the `[metrics]` endpoint read with a real HTTP GET, its samples.
//! - [`sts_shim`]: a shim for STS answering AssumeRole from a script (throttling, 5xx, success).
//! - [`moto`]: `moto_server` from the venv (STS for AssumeRole / web identity), and the sessions
//!   it issued, so the IAM front can verify tokens signed with them.
//!
//! Every wait has a deadline that is a hang guard, never a speed assertion.

// Each test binary uses a different subset of the fixtures.
#![allow(dead_code)]

pub mod admin;
pub mod appliance;
pub mod bastion;
pub mod certs;
pub mod clients;
pub mod control_plane;
pub mod http_stub;
pub mod iam_front;
pub mod imds;
pub mod logs;
pub mod managed;
pub mod moto;
pub mod netns;
pub mod process;
pub mod raw;
pub mod redis;
pub mod scenarios;
pub mod scrape;
pub mod stack;
pub mod store_daemon;
pub mod sts_shim;
