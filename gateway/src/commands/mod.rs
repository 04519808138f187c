//! The `inkan` subcommands other than `serve`.

pub mod audit;
pub mod ledger;
pub mod verify;
