//! inkan: a FHIR gateway that passes the FHIR REST API through to an
//! upstream server, normalizes Japanese text, and seals every resource
//! version it writes in a verifiable Merkle log.
//!
//! Module map:
//! - [`pipeline`]: the request pipeline, step by step.
//! - [`server`]: listener, TLS, HTTP/1.1 and HTTP/2, limits, shutdown.
//! - [`upstream`]: the upstream client, timeouts and retry policy.
//! - [`fhir`]: formats, interactions, OperationOutcome, URL rewriting, XML.
//! - [`config`], [`error`], [`metrics`], [`admin`], [`headers`], [`body`].

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
