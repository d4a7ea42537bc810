//! The data path: listeners accept, a session identifies, authorizes, runs the handshake, then
//! hands both sockets to the relay.

pub mod admission;
pub mod cores;
pub mod guard;
pub mod handshake;
pub mod inspect;
pub mod ktls;
pub mod listener;
pub mod registry;
pub mod relay;
pub mod session;
pub mod shared;
pub mod slots;
pub mod upstream;
