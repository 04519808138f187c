//! FHIR-specific knowledge the pipeline needs: formats, interactions,
//! OperationOutcome, base-URL rewriting and the XML bridge.

pub mod format;
pub mod interaction;
pub mod outcome;
pub mod rewrite;
pub mod xml_bridge;
