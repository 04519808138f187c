//! What the HTTP backends share: error text without URLs.

/// What went wrong with an HTTP call, without the URL (ureq's own text
/// includes it, and RPC and TSA URLs often embed API keys).
pub(crate) fn describe_http_error(error: &ureq::Error) -> String {
    match error {
        ureq::Error::Status(code, _) => format!("answered HTTP {code}"),
        ureq::Error::Transport(transport) => match transport.message() {
            Some(message) => format!("{}: {message}", transport.kind()),
            None => transport.kind().to_string(),
        },
    }
}
