//! The `inkan` subcommands other than `serve`.

pub mod anchors;
pub mod audit;
pub mod ledger;
pub mod verify;
