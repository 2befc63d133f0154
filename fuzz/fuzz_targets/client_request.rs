//! Client API request parsing (`node/src/http/`): the request path and its percent-encoded
//! key under the key-size limit (`keys::decode_key`), the conditional headers `If-Match` /
//! `If-None-Match` (`client_api::condition`), `Content-Length` (`common::content_length`,
//! checked against the value-size limit before the body is read) and the bearer token
//! (`common::check_token`), and the read options of a `GET` (`ReadOptions::parse`: the query's
//! `consistency` and `max-staleness-ms`, the `x-min-version` session header).
//!
//! The input is split at newlines into: the path, `If-Match`, `If-None-Match`,
//! `Content-Length`, `Authorization`, the query string, `x-min-version`; a header whose bytes are not a valid header value is
//! left out, and a missing field means a missing header. The key limit comes from the
//! input's length, so short limits are exercised too.
//!
//! Checks: nothing panics and allocation stays bounded by the input; an accepted key is
//! non-empty, within the limit, and `encode_key` gives a path segment without `/` that
//! decodes back to it; a refused oversized key reports a length above the limit; both
//! conditional headers together are refused; `If-Match: <n>` yields exactly version `n`; a
//! parsed `Content-Length` is the header's decimal value; only `Bearer <token>` authenticates;
//! accepted read options carry exactly the query's and the header's values.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use shardedstore_node::http::client_api::local_read::ReadOptions;
use shardedstore_node::http::client_api::{MIN_VERSION_HEADER, condition};
use shardedstore_node::http::common::{TokenError, check_token, content_length};
use shardedstore_node::http::keys::{KeyError, decode_key, encode_key};
use shardedstore_node::replication::primary::Condition;

const TOKEN: &str = "s3cret-token";

fn insert(headers: &mut HeaderMap, name: HeaderName, field: Option<&[u8]>) {
    if let Some(v) = field.and_then(|b| HeaderValue::from_bytes(b).ok()) {
        headers.insert(name, v);
    }
}

fn check_key(path: &str, max: usize) {
    let Some(raw) = path.strip_prefix("/v1/kv/") else {
        return;
    };
    match decode_key(raw, max) {
        Ok(key) => {
            assert!(
                !key.is_empty() && key.len() <= max,
                "accepted {key:?} (max {max})"
            );
            let segment = encode_key(&key);
            assert!(!segment.contains('/'), "encoded key {segment:?} has a '/'");
            assert_eq!(decode_key(&segment, max), Ok(key));
        }
        Err(KeyError::TooLarge { len, max: m }) => assert!(m == max && len > max),
        Err(_) => {}
    }
}

fn check_condition(headers: &HeaderMap) {
    let both =
        headers.contains_key(header::IF_MATCH) && headers.contains_key(header::IF_NONE_MATCH);
    match condition(headers) {
        Ok(Condition::IfVersion(v)) => {
            let raw = headers.get(header::IF_MATCH).and_then(|h| h.to_str().ok());
            let parsed = raw.map(|s| s.trim().trim_matches('"').parse::<u64>());
            assert_eq!(parsed, Some(Ok(v)));
        }
        Ok(c) => assert!(!both, "both conditional headers accepted as {c:?}"),
        Err(_) => {}
    }
}

fn check_read_options(query: &[u8], headers: &HeaderMap) {
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    let Ok(o) = ReadOptions::parse(query, headers) else {
        return;
    };
    let mut local = false;
    let mut staleness = None;
    for pair in query.split('&').filter(|s| !s.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("consistency", v) => local = v == "local",
            ("max-staleness-ms", v) => staleness = v.parse::<u64>().ok(),
            _ => {}
        }
    }
    assert_eq!((o.local, o.max_staleness_ms), (local, staleness), "query {query:?}");
    let min = headers
        .get(MIN_VERSION_HEADER)
        .map(|h| h.to_str().ok().map(|s| s.trim().parse::<u64>()));
    match min {
        None => assert_eq!(o.min_version, 0),
        Some(v) => assert_eq!(v, Some(Ok(o.min_version))),
    }
}

fuzz_target!(|data: &[u8]| {
    shardedstore_fuzz::with_allocation_limit(data.len(), || {
        let mut fields = data.split(|&b| b == b'\n');
        let path = fields.next().unwrap_or_default();
        let mut headers = HeaderMap::new();
        insert(&mut headers, header::IF_MATCH, fields.next());
        insert(&mut headers, header::IF_NONE_MATCH, fields.next());
        insert(&mut headers, header::CONTENT_LENGTH, fields.next());
        insert(&mut headers, header::AUTHORIZATION, fields.next());
        let query = fields.next().unwrap_or_default();
        insert(
            &mut headers,
            HeaderName::from_static(MIN_VERSION_HEADER),
            fields.next(),
        );
        check_read_options(query, &headers);

        if let Ok(path) = std::str::from_utf8(path) {
            check_key(path, data.len() % 64 + 1);
            check_key(path, 1024);
        }
        check_condition(&headers);
        if let Some(n) = content_length(&headers) {
            let raw = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|h| h.to_str().ok());
            assert_eq!(raw.map(str::parse::<u64>), Some(Ok(n)));
        }
        let auth = headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        match check_token(&headers, TOKEN) {
            Ok(()) => assert_eq!(auth, Some(format!("Bearer {TOKEN}").as_bytes())),
            Err(TokenError::Missing) => {
                let text = headers.get(header::AUTHORIZATION).map(HeaderValue::to_str);
                assert!(
                    !matches!(text, Some(Ok(t)) if t.starts_with("Bearer ")),
                    "a readable bearer header counted as missing"
                );
            }
            Err(TokenError::Wrong) => assert_ne!(auth, Some(format!("Bearer {TOKEN}").as_bytes())),
        }
    });
});
