//! The `inkan` subcommands other than `serve`.

pub mod ledger;
pub mod verify;
