//! Helpers shared by the HTTP servers: JSON error answers, bounded body reading and draining,
//! bearer-token checks.

use crate::admin_api::{ErrorBody, ErrorDetail};
use bytes::{Buf, Bytes};
use futures::{Stream, StreamExt};
use http::{HeaderMap, Response, StatusCode};

/// An HTTP answer with a byte body (what every handler returns).
pub type Answer = Response<Bytes>;

/// The `code` of an error answer, kept on the answer (as an extension) so that the metrics
/// can count refusals by code without parsing the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorCode(pub String);

/// Builds a JSON error answer `{"error":{"code","message"}}`.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Answer {
    error_with_map(status, code, message, None)
}

pub fn error_with_map(
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
    map_version: Option<u64>,
) -> Answer {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: message.into(),
            map_version,
        },
    };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    let mut r = Response::new(Bytes::from(json));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r.extensions_mut().insert(ErrorCode(code.to_owned()));
    r
}

/// 503 codes of a primary that is changing hands: the partition is served again as soon as
/// the new map reaches the nodes and the new primary has committed its log (milliseconds to
/// a few hundred after a confirmed death), so they carry no `Retry-After` — a client retries
/// on its own backoff with a fresh map. A whole-second `Retry-After` here (the header has no
/// finer unit) made every client wait at least a second after each failover.
const CHANGING_HANDS: [&str; 5] = [
    "not_primary",
    "primary_not_ready",
    "handing_off",
    "deposed",
    "forward_failed",
];

/// Whether a 503 with `code` tells clients to wait (`Retry-After: 1`): every code except those
/// of a primary changing hands ([`CHANGING_HANDS`]).
pub fn asks_to_wait(code: &str) -> bool {
    !CHANGING_HANDS.contains(&code)
}

/// A 503, with `Retry-After: 1` unless the code is one of a primary changing hands.
pub fn unavailable(code: &str, message: impl Into<String>) -> Answer {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, code, message);
    if asks_to_wait(code) {
        r.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
    }
    r
}

pub fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Answer {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut r = Response::new(Bytes::from(body));
            *r.status_mut() = status;
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "encode", e.to_string()),
    }
}

pub fn empty(status: StatusCode) -> Answer {
    let mut r = Response::new(Bytes::new());
    *r.status_mut() = status;
    r
}

/// Runs `work` to completion even if the HTTP request is dropped (the client disconnected or
/// died): handlers that change replica state must never stop half-way. `None` if it panicked.
pub async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> Option<T> {
    tokio::spawn(work).await.ok()
}

/// The answer when detached work panicked.
pub fn internal() -> Answer {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the request handler failed",
    )
}

/// Why a request body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("reading the body")]
    Read(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// `Content-Length`, when the client sent one.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Reads a body of at most `limit` bytes, failing as soon as it grows past the limit (the
/// rest is left in `body`, for [`drain`]).
pub async fn read_body<S, B, E>(
    body: &mut std::pin::Pin<Box<S>>,
    limit: usize,
) -> Result<Bytes, BodyError>
where
    S: Stream<Item = Result<B, E>> + ?Sized,
    B: Buf,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| BodyError::Read(e.into()))?;
        if out.len() + chunk.remaining() > limit {
            return Err(BodyError::TooLarge(limit));
        }
        while chunk.has_remaining() {
            let c = chunk.chunk();
            out.extend_from_slice(c);
            let n = c.len();
            chunk.advance(n);
        }
    }
    Ok(Bytes::from(out))
}

/// Why a peer request is not authenticated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("missing bearer token (send `Authorization: Bearer <token>`)")]
    Missing,
    #[error("wrong bearer token")]
    Wrong,
}

impl TokenError {
    /// 401 when absent or malformed, 403 when wrong.
    pub fn answer(&self) -> Answer {
        match self {
            TokenError::Missing => error(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                self.to_string(),
            ),
            TokenError::Wrong => error(StatusCode::FORBIDDEN, "forbidden", self.to_string()),
        }
    }
}

/// The token of `Authorization: Bearer <token>`, if present.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Compares two secrets in time independent of where they differ.
pub fn equal_in_constant_time(given: &str, expected: &str) -> bool {
    let a = given.as_bytes();
    let b = expected.as_bytes();
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// Checks `Authorization: Bearer <token>`.
pub fn check_token(headers: &HeaderMap, token: &str) -> Result<(), TokenError> {
    let given = bearer(headers).ok_or(TokenError::Missing)?;
    if !equal_in_constant_time(given, token) {
        return Err(TokenError::Wrong);
    }
    Ok(())
}

/// Body bytes read and thrown away after an early answer (refused token, oversized body),
/// so the client receives the answer instead of a connection reset; larger bodies are cut
/// off and the connection closed.
pub const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;
/// How long an early answer waits for the rest of the body.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads and discards what is left of a request body, up to [`DRAIN_LIMIT`] bytes and
/// [`DRAIN_TIMEOUT`]. `true` when the body ended (the connection can be kept).
///
/// An HTTP server that answers before reading the body and then closes the connection makes
/// the kernel reset it while the client is still sending; the client then sees a reset or
/// a broken pipe instead of the answer (e.g. a 413). Draining first avoids that.
pub async fn drain<S, B, E>(body: &mut std::pin::Pin<Box<S>>, already: u64) -> bool
where
    S: Stream<Item = Result<B, E>> + ?Sized,
    B: Buf,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut seen = already;
    let work = async {
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { return false };
            seen += chunk.remaining() as u64;
            if seen > DRAIN_LIMIT {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIMEOUT, work)
        .await
        .unwrap_or(false)
}

/// Marks an answer as the last on its connection.
pub fn closing(mut a: Answer) -> Answer {
    a.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    a
}

/// Finishes an answer given before the whole request body was read: drains the body (when
/// `Content-Length` says it fits the drain limit) or else closes the connection after it.
pub async fn answer_early<S, B, E>(
    answer: Answer,
    headers: &HeaderMap,
    body: &mut std::pin::Pin<Box<S>>,
) -> Answer
where
    S: Stream<Item = Result<B, E>> + ?Sized,
    B: Buf,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if content_length(headers).is_some_and(|n| n > DRAIN_LIMIT) || !drain(body, 0).await {
        return closing(answer);
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_check_distinguishes_missing_and_wrong() {
        let mut h = HeaderMap::new();
        assert_eq!(check_token(&h, "s"), Err(TokenError::Missing));
        assert_eq!(
            TokenError::Missing.answer().status(),
            StatusCode::UNAUTHORIZED
        );
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Bearer x"),
        );
        assert_eq!(check_token(&h, "s"), Err(TokenError::Wrong));
        assert_eq!(TokenError::Wrong.answer().status(), StatusCode::FORBIDDEN);
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Bearer s"),
        );
        assert!(check_token(&h, "s").is_ok());
    }

    #[tokio::test]
    async fn body_reading_stops_at_the_limit() {
        let chunks = futures::stream::iter(vec![
            Ok::<_, warp::Error>(Bytes::from_static(b"abc")),
            Ok(Bytes::from_static(b"def")),
        ]);
        let mut chunks = Box::pin(chunks);
        assert!(matches!(
            read_body(&mut chunks, 5).await,
            Err(BodyError::TooLarge(5))
        ));
        assert!(drain(&mut chunks, 6).await, "the rest is drained");
        let chunks = futures::stream::iter(vec![Ok::<_, warp::Error>(Bytes::from_static(b"abc"))]);
        assert_eq!(
            read_body(&mut Box::pin(chunks), 5).await.ok(),
            Some(Bytes::from_static(b"abc"))
        );
    }

    #[test]
    fn only_a_primary_changing_hands_answers_without_retry_after() {
        for code in [
            "not_primary",
            "primary_not_ready",
            "handing_off",
            "deposed",
            "forward_failed",
        ] {
            let a = unavailable(code, "m");
            assert_eq!(a.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert!(
                a.headers().get(http::header::RETRY_AFTER).is_none(),
                "{code}"
            );
        }
        for code in [
            "no_map",
            "no_primary",
            "lease_expired",
            "below_min_in_sync",
            "restoring",
            "storage_stalled",
        ] {
            let a = unavailable(code, "m");
            assert_eq!(
                a.headers()
                    .get(http::header::RETRY_AFTER)
                    .map(|v| v.as_bytes()),
                Some(&b"1"[..]),
                "{code}"
            );
        }
    }
}
