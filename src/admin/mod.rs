//! The admin socket: the only way to change databases, roles and users while the daemon runs.
//!
//! - [`auth`]: who may connect (SO_PEERCRED: root or the admin group);
//! - [`wire`]: length-prefixed postcard requests and replies;
//! - [`handler`]: what each request does to the store, the live catalog and the Unix sockets;
//! - [`certs`]: certificates issued from the daemon's CA, revocation, live sessions;
//! - [`server`]: the socket itself and its accept loop.
//!
//! Every acknowledged mutation is an `admin.mutation` audit event naming the caller's uid and
//! account. This module must never accept a request from a caller it did not authorize, and
//! never let a change reach the catalog that the store has not fsynced.

pub mod auth;
pub mod certs;
pub mod client;
pub mod handler;
pub mod secrets;
pub mod server;
pub mod wire;

pub use handler::Admin;
