//! inkan: a FHIR gateway that passes the FHIR REST API through to an
//! upstream server, normalizes Japanese text, and seals every resource
//! version it writes in a verifiable Merkle log.
//!
//! Module map (docs/architecture.md has the picture):
//! - [`server`]: listener, TLS, HTTP/1.1 and HTTP/2, limits, shutdown.
//! - [`pipeline`]: the request path, one file per step.
//! - [`seal`]: sealing, the intent journal, recovery, verify-on-read,
//!   `$proof`/`$verify`, the anchor backends built from `[anchors]`.
//! - [`fhir`]: FHIR knowledge: paths, Bundles, formats, interactions,
//!   OperationOutcome, URL rewriting, the XML bridge.
//! - [`upstream`]: the upstream client, its bases and `Authorization`.
//! - [`japanese`]: when the Japanese rules of `profiles-jp` run.
//! - [`commands`]: the CLI besides `serve`.
//! - [`config`], [`error`], [`metrics`], [`headers`], [`body`],
//!   [`coding`], [`tls`], [`secret_file`].

pub mod audit;
pub mod auth;
pub mod body;
pub mod coding;
pub mod commands;
pub mod config;
pub mod error;
pub mod fhir;
pub mod headers;
pub mod japanese;
pub mod metrics;
pub mod pipeline;
pub mod seal;
pub mod secret_file;
pub mod server;
pub mod tls;
pub mod upstream;
