//! Errors of the KV client: the per-attempt failures the retry loop classifies, and the
//! errors a caller finally sees.

use crate::map::PartitionId;
use std::time::Duration;

/// One failed attempt. The retry policy ([`super::retry::decide`]) decides whether the
/// operation tries again; if it gives up, the last one is chained as the source of
/// [`KvError::Unavailable`] or [`KvError::Indeterminate`].
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// The connection could not be opened: the request was never sent, so nothing was applied.
    #[error("cannot connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: reqwest::Error,
    },
    /// No complete answer within the attempt's timeout: a write may have been applied.
    #[error("no answer from {addr} in time")]
    Timeout {
        addr: String,
        #[source]
        source: reqwest::Error,
    },
    /// The connection broke after the request was sent: a write may have been applied.
    #[error("connection to {addr} broke mid-request")]
    Interrupted {
        addr: String,
        #[source]
        source: reqwest::Error,
    },
    /// 503: the partition has no primary able to serve, or fewer than `minInSync` replicas —
    /// or, for the codes of [`unavailable_after_append`], the write was appended and its
    /// outcome is unknown.
    #[error("{addr} answered 503 {code}: {message}")]
    Unavailable {
        addr: String,
        code: String,
        message: String,
        retry_after: Option<Duration>,
    },
    /// 421: the node is not where this key's partition is served (stale routing).
    #[error("{addr} answered 421 {code}: {message}")]
    Misdirected {
        addr: String,
        code: String,
        message: String,
        /// Map version of the answering node.
        map_version: Option<u64>,
    },
    /// The cached map names no primary (or no in-sync replica) for the partition.
    #[error("partition {partition} has no serving replica in map version {map_version}")]
    NoReplica {
        partition: PartitionId,
        map_version: u64,
    },
    /// No endpoint or known node returned a valid partition map.
    #[error("no endpoint returned a valid partition map (tried {tried})")]
    MapUnavailable {
        tried: String,
        #[source]
        last: Option<Box<MapFetchError>>,
    },
}

impl AttemptError {
    /// The error to give up with at once, when no retry can fix this failure: a failed TLS
    /// handshake, or a node refusing this client while fetching the map.
    pub fn into_fatal(self) -> Result<KvError, AttemptError> {
        match self {
            Self::MapUnavailable {
                tried,
                last: Some(last),
            } => match *last {
                MapFetchError::Send { addr, source }
                    if crate::tls::handshake_error(&source).is_some() =>
                {
                    Ok(KvError::Tls { addr, source })
                }
                MapFetchError::Refused {
                    addr,
                    status,
                    code,
                    message,
                } if status != 400 => Ok(KvError::Unauthorized {
                    addr,
                    status,
                    code,
                    message,
                }),
                MapFetchError::Refused { code, message, .. } => {
                    Ok(KvError::BadRequest { code, message })
                }
                other => Err(Self::MapUnavailable {
                    tried,
                    last: Some(Box::new(other)),
                }),
            },
            other => Err(other),
        }
    }

    /// True when the request may have reached the node and been applied.
    pub fn is_ambiguous(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::Interrupted { .. } => true,
            Self::Unavailable { code, .. } => unavailable_after_append(code),
            _ => false,
        }
    }
}

/// Whether a 503 code may follow the append of the write, which can then still commit (under
/// this primary or the next one). The other codes (`no_map`, `no_primary`, `lease_expired`,
/// `below_min_in_sync`, `primary_not_ready`, `handing_off`, `pending_write_timeout`) are
/// answered before anything is appended. `forward_failed` and `internal` are counted as
/// ambiguous because the forwarded request or the detached write may have run.
pub fn unavailable_after_append(code: &str) -> bool {
    matches!(
        code,
        "deposed"
            | "commit_timeout"
            | "lease_expired_after_append"
            | "shutting_down"
            | "forward_failed"
            | "internal"
    )
}

/// Why fetching the map from one address failed.
#[derive(Debug, thiserror::Error)]
pub enum MapFetchError {
    #[error("requesting the map from {addr}")]
    Send {
        addr: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{addr} answered {status} to GET /v1/map")]
    Status { addr: String, status: u16 },
    /// 400, 401 or 403: the node refused this client (credentials, or HTTP to a TLS port).
    #[error("{addr} refused GET /v1/map with {status} ({code}): {message}")]
    Refused {
        addr: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("decoding the map from {addr}")]
    Decode {
        addr: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid map from {addr}")]
    Invalid {
        addr: String,
        #[source]
        source: crate::map::MapError,
    },
}

impl MapFetchError {
    /// The address did not answer: no connection, or no answer in time (as opposed to an
    /// answer this client could not use).
    pub fn is_unanswered(&self) -> bool {
        matches!(self, Self::Send { source, .. }
            if (source.is_connect() || source.is_timeout())
                && crate::tls::handshake_error(source).is_none())
    }
}

/// Why a KV operation failed. A missing key is not an error: reads return `None`.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("no endpoints given")]
    NoEndpoints,
    #[error("building the HTTP client")]
    BuildClient(#[source] reqwest::Error),
    #[error("the restore token is not a valid HTTP header value")]
    BadRestoreToken,
    #[error("loading the TLS settings")]
    TlsConfig(#[source] crate::tls::TlsError),
    #[error("the key is empty")]
    EmptyKey,
    /// `.` and `..` cannot travel as a URL path segment (URL parsers resolve them away).
    #[error("the key {0:?} cannot be addressed as a URL path segment")]
    UnaddressableKey(&'static str),
    #[error("key is {len} bytes, over the store's limit of {max}")]
    KeyTooLarge { len: usize, max: u32 },
    #[error("value is {len} bytes, over the store's limit of {max}")]
    ValueTooLarge { len: usize, max: u32 },
    /// 412: `If-Match` named another version, or `If-None-Match: *` found the key present.
    #[error("precondition failed: {message}")]
    PreconditionFailed {
        message: String,
        /// The key's current version, when the node reported it.
        current_version: Option<u64>,
    },
    /// 400: the node refused the request as malformed.
    #[error("bad request ({code}): {message}")]
    BadRequest { code: String, message: String },
    /// Retries ran out (deadline or non-retryable state) and no attempt could have applied
    /// the operation.
    #[error("unavailable after {attempts} attempt(s) in {elapsed:.1?}")]
    Unavailable {
        attempts: u32,
        elapsed: Duration,
        #[source]
        last: AttemptError,
    },
    /// A write failed after at least one attempt whose outcome is unknown (timeout or broken
    /// connection): it may or may not have been applied. Read the key to find out.
    #[error(
        "outcome unknown after {attempts} attempt(s) in {elapsed:.1?}: the write may have been applied"
    )]
    Indeterminate {
        attempts: u32,
        elapsed: Duration,
        #[source]
        last: AttemptError,
    },
    /// The node answered a status this client does not expect for the operation.
    #[error("{addr} answered {status} ({code}): {message}")]
    Rejected {
        addr: String,
        status: u16,
        code: String,
        message: String,
    },
    /// A success answer lacked a valid `x-version` header.
    #[error("{addr} answered {status} without a valid x-version header")]
    MissingVersion { addr: String, status: u16 },
    /// 401 or 403: the node wants a (different) bearer token or client certificate.
    #[error("{addr} refused the request with {status} ({code}): {message}")]
    Unauthorized {
        addr: String,
        status: u16,
        code: String,
        message: String,
    },
    /// The TLS handshake failed (an unknown certificate authority, a name mismatch, a
    /// required client certificate): no retry can fix it.
    #[error("TLS with {addr} failed (is the store's CA given, e.g. with --ca?)")]
    Tls {
        addr: String,
        #[source]
        source: reqwest::Error,
    },
    /// The request could not be built (e.g. a malformed endpoint address).
    #[error("request to {addr} could not be made")]
    Transport {
        addr: String,
        #[source]
        source: reqwest::Error,
    },
}

impl KvError {
    /// A short, stable label for metrics and benchmark reports (never a free-form message).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoEndpoints => "no_endpoints",
            Self::BuildClient(_) | Self::BadRestoreToken | Self::TlsConfig(_) => "build_client",
            Self::EmptyKey | Self::UnaddressableKey(_) => "invalid_key",
            Self::KeyTooLarge { .. } => "key_too_large",
            Self::ValueTooLarge { .. } => "value_too_large",
            Self::PreconditionFailed { .. } => "precondition_failed",
            Self::BadRequest { .. } => "bad_request",
            Self::Unavailable { .. } => "unavailable",
            Self::Indeterminate { .. } => "indeterminate",
            Self::Rejected { .. } => "rejected",
            Self::MissingVersion { .. } => "missing_version",
            Self::Transport { .. } => "transport",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Tls { .. } => "tls",
        }
    }
}
