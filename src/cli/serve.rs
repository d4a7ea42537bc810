//! `bastion serve`: load the config (or build the dev one), then run the daemon.

use super::ServeArgs;

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let _ = args;
    todo!()
}
