//! Classification of a node's HTTP answer into success, not-found, a retryable failure or a
//! final error — a pure function of status, headers and body.

use super::error::{AttemptError, KvError};
use super::retry::parse_retry_after;
use crate::admin_api::ErrorBody;
use crate::map::Limits;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use std::time::Duration;

/// Header carrying a key's version on answers and on 412.
pub const VERSION_HEADER: &str = "x-version";
/// Header bounding the age of a `consistency=local` read.
pub const STALENESS_HEADER: &str = "x-staleness-ms";
/// Header naming the node whose replica answered.
pub const SERVED_BY_HEADER: &str = "x-served-by";
/// Header carrying a read's session version (the serving replica's applied point).
pub const SESSION_VERSION_HEADER: &str = "x-session-version";
/// Request header: a local read must answer from a state including this version.
pub const MIN_VERSION_HEADER: &str = "x-min-version";
/// Header carrying the newest partition map version of the nodes that handled a request.
pub const MAP_VERSION_HEADER: &str = "x-map-version";

/// What the request was, for error reporting.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub addr: &'a str,
    pub key_len: usize,
    pub value_len: usize,
    pub limits: Limits,
}

/// A node's answer, classified.
#[derive(Debug)]
pub enum Answer {
    Success {
        status: u16,
        version: Option<u64>,
        staleness: Option<Duration>,
        session_version: Option<u64>,
        served_by: Option<String>,
        body: Bytes,
    },
    NotFound,
    Retry(AttemptError),
    Fail(KvError),
}

/// Parse a version header: decimal, tolerating ETag-style quotes and a weak `W/` prefix.
pub fn parse_version(value: &str) -> Option<u64> {
    let v = value.trim();
    let v = v.strip_prefix("W/").unwrap_or(v);
    v.trim_matches('"').parse().ok()
}

/// The map version an answer reports (`x-map-version`), if any.
pub fn map_version(headers: &HeaderMap) -> Option<u64> {
    header(headers, MAP_VERSION_HEADER).and_then(parse_version)
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The `{"error":{"code","message"}}` body, or a fallback built from the status and text.
fn error_detail(status: StatusCode, body: &[u8]) -> (String, String, Option<u64>) {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => (b.error.code, b.error.message, b.error.map_version),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let line = text.lines().next().unwrap_or("").trim();
            let message = if line.is_empty() {
                status.canonical_reason().unwrap_or("").to_owned()
            } else {
                line.chars().take(200).collect()
            };
            ("unknown".to_owned(), message, None)
        }
    }
}

pub fn classify(ctx: &Context<'_>, status: StatusCode, headers: &HeaderMap, body: Bytes) -> Answer {
    let version = header(headers, VERSION_HEADER).and_then(parse_version);
    if status.is_success() {
        return Answer::Success {
            status: status.as_u16(),
            version,
            staleness: header(headers, STALENESS_HEADER)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_millis),
            session_version: header(headers, SESSION_VERSION_HEADER).and_then(parse_version),
            served_by: header(headers, SERVED_BY_HEADER).map(str::to_owned),
            body,
        };
    }
    if status == StatusCode::NOT_FOUND {
        return Answer::NotFound;
    }
    let (code, message, map_version) = error_detail(status, &body);
    let addr = ctx.addr.to_owned();
    match status {
        StatusCode::MISDIRECTED_REQUEST => Answer::Retry(AttemptError::Misdirected {
            addr,
            code,
            message,
            map_version,
        }),
        StatusCode::SERVICE_UNAVAILABLE => Answer::Retry(AttemptError::Unavailable {
            addr,
            code,
            message,
            retry_after: header(headers, "retry-after").and_then(parse_retry_after),
        }),
        StatusCode::PRECONDITION_FAILED => Answer::Fail(KvError::PreconditionFailed {
            message,
            current_version: version,
        }),
        StatusCode::PAYLOAD_TOO_LARGE if code.contains("key") => {
            Answer::Fail(KvError::KeyTooLarge {
                len: ctx.key_len,
                max: ctx.limits.max_key_bytes,
            })
        }
        StatusCode::PAYLOAD_TOO_LARGE => Answer::Fail(KvError::ValueTooLarge {
            len: ctx.value_len,
            max: ctx.limits.max_value_bytes,
        }),
        StatusCode::BAD_REQUEST => Answer::Fail(KvError::BadRequest { code, message }),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Answer::Fail(KvError::Unauthorized {
            addr,
            status: status.as_u16(),
            code,
            message,
        }),
        _ => Answer::Fail(KvError::Rejected {
            addr,
            status: status.as_u16(),
            code,
            message,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context<'static> {
        Context {
            addr: "h:1",
            key_len: 3,
            value_len: 10,
            limits: Limits::default(),
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    fn err_body(code: &str, map_version: Option<u64>) -> Bytes {
        let mut detail = serde_json::json!({"code": code, "message": "why"});
        if let Some(v) = map_version {
            detail["mapVersion"] = v.into();
        }
        Bytes::from(serde_json::json!({ "error": detail }).to_string())
    }

    #[test]
    fn versions_parse_bare_and_quoted() {
        assert_eq!(parse_version("42"), Some(42));
        assert_eq!(parse_version("\"42\""), Some(42));
        assert_eq!(parse_version("W/\"7\""), Some(7));
        assert_eq!(parse_version("x"), None);
    }

    #[test]
    fn success_carries_version_staleness_and_body() {
        let h = headers(&[("x-version", "9"), ("x-staleness-ms", "120")]);
        match classify(&ctx(), StatusCode::OK, &h, Bytes::from_static(b"v")) {
            Answer::Success {
                status,
                version,
                staleness,
                body,
                ..
            } => {
                assert_eq!(status, 200);
                assert_eq!(version, Some(9));
                assert_eq!(staleness, Some(Duration::from_millis(120)));
                assert_eq!(&body[..], b"v");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn not_found_is_a_result_not_an_error() {
        let a = classify(
            &ctx(),
            StatusCode::NOT_FOUND,
            &HeaderMap::new(),
            err_body("not_found", None),
        );
        assert!(matches!(a, Answer::NotFound));
    }

    #[test]
    fn misdirected_and_unavailable_are_retryable() {
        let a = classify(
            &ctx(),
            StatusCode::MISDIRECTED_REQUEST,
            &HeaderMap::new(),
            err_body("not_primary", Some(12)),
        );
        assert!(matches!(
            a,
            Answer::Retry(AttemptError::Misdirected {
                map_version: Some(12),
                ..
            })
        ));
        let h = headers(&[("retry-after", "1")]);
        let a = classify(
            &ctx(),
            StatusCode::SERVICE_UNAVAILABLE,
            &h,
            err_body("below_min_in_sync", None),
        );
        match a {
            Answer::Retry(AttemptError::Unavailable {
                retry_after, code, ..
            }) => {
                assert_eq!(retry_after, Some(Duration::from_secs(1)));
                assert_eq!(code, "below_min_in_sync");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn client_errors_are_final_and_typed() {
        let h = headers(&[("x-version", "4")]);
        let a = classify(
            &ctx(),
            StatusCode::PRECONDITION_FAILED,
            &h,
            err_body("version_mismatch", None),
        );
        assert!(matches!(
            a,
            Answer::Fail(KvError::PreconditionFailed {
                current_version: Some(4),
                ..
            })
        ));
        let a = classify(
            &ctx(),
            StatusCode::PAYLOAD_TOO_LARGE,
            &HeaderMap::new(),
            err_body("key_too_large", None),
        );
        assert!(matches!(
            a,
            Answer::Fail(KvError::KeyTooLarge { len: 3, max: 1024 })
        ));
        let a = classify(
            &ctx(),
            StatusCode::PAYLOAD_TOO_LARGE,
            &HeaderMap::new(),
            err_body("value_too_large", None),
        );
        assert!(matches!(
            a,
            Answer::Fail(KvError::ValueTooLarge { len: 10, .. })
        ));
        let a = classify(
            &ctx(),
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            err_body("malformed_key", None),
        );
        assert!(
            matches!(a, Answer::Fail(KvError::BadRequest { code, .. }) if code == "malformed_key")
        );
    }

    #[test]
    fn unexpected_answers_keep_a_readable_one_line_message() {
        let a = classify(
            &ctx(),
            StatusCode::INTERNAL_SERVER_ERROR,
            &HeaderMap::new(),
            Bytes::from_static(b"boom\nstack trace"),
        );
        match a {
            Answer::Fail(e @ KvError::Rejected { .. }) => {
                assert_eq!(e.to_string(), "h:1 answered 500 (unknown): boom");
            }
            other => panic!("{other:?}"),
        }
    }
}
