//! bastion: a hardened access point for managed Redis.
//!
//! The data path, top to bottom (see ARCHITECTURE.md):
//! `proxy::listener` accepts → `identity` says who it is → `rbac` decides → `proxy::handshake`
//! (the opening's RESP) authenticates upstream with `aws` tokens or passwords → `proxy::relay`
//! (the only byte mover) splices or copies until either side closes.
#![forbid(unsafe_code)]
// A session's future (handshake, dial, relay, AWS SDK calls) is deep enough that proving it `Send`
// for `tokio::spawn` (and the box its handshake is in) needs more than the default 128 levels.
#![recursion_limit = "256"]

pub mod address_policy;
pub mod admin;
pub mod audit;
pub mod aws;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod files;
pub mod identity;
pub mod managed;
pub mod metrics;
pub mod proxy;
pub mod random;
pub mod rbac;
pub mod reload;
pub mod secret;
pub mod sockopt;
pub mod store;
pub mod systemd;
