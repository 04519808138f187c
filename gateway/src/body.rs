//! Body types and bounded reads.

use std::time::Duration;

use bytes::Bytes;
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};

use crate::error::GatewayError;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body the gateway sends: buffered or streamed.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> ResponseBody {
    full(Bytes::new())
}

/// Reads a whole request body, at most `limit` bytes, within `timeout`.
pub async fn read_request_body<B>(
    body: B,
    limit: u64,
    timeout: Duration,
) -> Result<Bytes, GatewayError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => Err(GatewayError::BodyTimeout { after: timeout }),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            Err(GatewayError::BodyTooLarge { limit })
        }
        Ok(Err(error)) => Err(GatewayError::MalformedRequest {
            detail: format!("the request body could not be read: {error}"),
        }),
    }
}

/// Outcome of trying to buffer an upstream response body.
#[derive(Debug)]
pub enum Buffered<B> {
    /// The whole body, within the limit.
    Whole(Bytes),
    /// Larger than the limit: the bytes read so far are not lost, the caller
    /// gets them back with the rest of the stream.
    TooLarge { head: Bytes, rest: B },
}

/// Buffers an upstream body up to `limit` bytes. Beyond it, hands back what
/// was read plus the remaining stream, so the caller can still stream it.
pub async fn buffer_upstream<B>(mut body: B, limit: u64) -> Result<Buffered<B>, GatewayError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut collected = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            tracing::warn!(%error, "upstream body broke off");
            GatewayError::UpstreamProtocol
        })?;
        if let Ok(data) = frame.into_data() {
            collected.extend_from_slice(&data);
            if collected.len() as u64 > limit {
                return Ok(Buffered::TooLarge {
                    head: collected.freeze(),
                    rest: body,
                });
            }
        }
    }
    Ok(Buffered::Whole(collected.freeze()))
}

/// A body that yields `head` and then the rest of `rest`.
pub fn prepend<B>(head: Bytes, rest: B) -> ResponseBody
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let head = Full::new(head).map_err(|never| match never {});
    let stream = chain::Chain::new(head, rest.map_err(Into::into));
    stream.boxed_unsync()
}

mod chain {
    //! A two-part body (no extra dependency for one adapter).
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http_body::{Body, Frame};

    use crate::body::BoxError;

    #[derive(Debug)]
    pub(super) struct Chain<A, B> {
        first: Option<A>,
        second: B,
    }

    impl<A, B> Chain<A, B> {
        pub(super) fn new(first: A, second: B) -> Self {
            Chain {
                first: Some(first),
                second,
            }
        }
    }

    impl<A, B> Body for Chain<A, B>
    where
        A: Body<Data = Bytes, Error = BoxError> + Unpin,
        B: Body<Data = Bytes, Error = BoxError> + Unpin,
    {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            if let Some(first) = self.first.as_mut() {
                match Pin::new(first).poll_frame(cx) {
                    Poll::Ready(None) => self.first = None,
                    other => return other,
                }
            }
            Pin::new(&mut self.second).poll_frame(cx)
        }
    }
}
