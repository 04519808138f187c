//! FHIR knowledge, each piece once: formats, interactions, paths and
//! versions, Bundles, OperationOutcome, base-URL rewriting and the XML
//! bridge. Pure: no IO, no ledger, no pipeline.

pub mod bundle;
pub mod format;
pub mod interaction;
pub mod outcome;
pub mod path;
pub mod rewrite;
pub mod xml_bridge;
