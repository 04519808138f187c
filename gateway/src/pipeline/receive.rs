//! Step 5, receive. Runs on every routed request, before admission: a
//! slow body holds no concurrency permit; it is bounded instead by the
//! body timeout, the connection cap and its own slots
//! (`limits.max_bodies_in_progress`, so memory stays under that many times
//! `max_request_body_bytes`). Reads the whole body and undoes its content
//! coding. May change: the request's headers (no `Content-Encoding`
//! after). Results: the head and the body; 503 after SIGTERM or when every
//! body slot is taken; 413 past the size limit (of the *decoded* body);
//! 408 past the time limit; 415 for an unknown coding; 400 for corrupt
//! compressed bytes.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use http::Request;
use http_body::Body;
use tokio::sync::OwnedSemaphorePermit;

use super::Gateway;
use crate::body::{self, BoxError};
use crate::coding::{self, BodyCoding, DecodeError};
use crate::error::GatewayError;

/// A request read in full. The body slot is held as long as the body is.
#[derive(Debug)]
pub(super) struct Received {
    pub parts: http::request::Parts,
    pub body: Bytes,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Gateway {
    pub(super) async fn receive<B>(&self, request: Request<B>) -> Result<Received, GatewayError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        // A request that arrives after SIGTERM is refused now; one whose
        // body is still arriving when it comes is finished (graceful).
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(GatewayError::ShuttingDown);
        }
        let slot = match request.body().is_end_stream() {
            true => None,
            false => Some(
                self.body_slots
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| GatewayError::Overloaded)?,
            ),
        };
        let (mut parts, body) = request.into_parts();
        let body = self.read_client_body(&mut parts.headers, body).await?;
        Ok(Received {
            parts,
            body,
            _slot: slot,
        })
    }

    async fn read_client_body<B>(
        &self,
        headers: &mut http::HeaderMap,
        body: B,
    ) -> Result<Bytes, GatewayError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let limit = self.config.limits.max_request_body_bytes;
        let declared_length = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared_length.is_some_and(|len| len > limit) {
            return Err(GatewayError::BodyTooLarge { limit });
        }
        let coding = match coding::body_coding(headers) {
            BodyCoding::Identity => None,
            BodyCoding::Known(coding) => Some(coding),
            BodyCoding::Unsupported(named) => {
                return Err(GatewayError::UnsupportedMediaType {
                    detail: format!(
                        "the request body's Content-Encoding {named:?} is not supported (gzip, deflate, br, identity are)"
                    ),
                })
            }
        };
        let body =
            body::read_request_body(body, limit, self.config.limits.client_body_timeout()).await?;
        headers.remove(CONTENT_ENCODING);
        let Some(coding) = coding.filter(|_| !body.is_empty()) else {
            // No coding, or nothing coded (a GET that names one anyway).
            return Ok(body);
        };
        let decoded = coding::decode(coding, &body, limit).map_err(|error| match error {
            DecodeError::TooLarge { limit } => GatewayError::BodyTooLarge { limit },
            DecodeError::Corrupt { coding, reason } => GatewayError::MalformedRequest {
                detail: format!(
                    "the request body is not valid {} data: {reason}",
                    coding.token()
                ),
            },
        })?;
        Ok(Bytes::from(decoded))
    }
}
