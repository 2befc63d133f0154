//! Client authentication on the client port: bearer tokens from a file and/or client
//! certificates verified by the port's client CA (mutual TLS). Pure checks; the token file is
//! read once at start-up.

use super::common::{TokenError, bearer, equal_in_constant_time};
use super::serve::ConnInfo;
use http::HeaderMap;
use std::path::{Path, PathBuf};

/// Why the client token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("reading the client token file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the client token file {path} holds no token")]
    Empty { path: PathBuf },
}

/// Who may use the client port.
#[derive(Clone, Debug, Default)]
pub struct ClientAuth {
    /// Accepted bearer tokens (none: tokens are not a way in).
    tokens: Vec<String>,
    /// A verified client certificate is a way in.
    mtls: bool,
    /// The peer token: nodes forwarding an authenticated request present it.
    peer_token: String,
}

/// The tokens of a token file: one per line, blank lines and `#` comments ignored.
pub fn parse_tokens(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

impl ClientAuth {
    /// Open access (no token file, no client CA).
    pub fn open() -> Self {
        Self::default()
    }

    pub fn new(tokens: Vec<String>, mtls: bool, peer_token: String) -> Self {
        Self {
            tokens,
            mtls,
            peer_token,
        }
    }

    /// Reads the token file, if any; `mtls` when a client CA is configured.
    pub fn load(
        token_file: Option<&Path>,
        mtls: bool,
        peer_token: &str,
    ) -> Result<Self, AuthConfigError> {
        let tokens = match token_file {
            None => Vec::new(),
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| AuthConfigError::Read {
                        path: path.to_owned(),
                        source,
                    })?;
                let tokens = parse_tokens(&text);
                if tokens.is_empty() {
                    return Err(AuthConfigError::Empty {
                        path: path.to_owned(),
                    });
                }
                tokens
            }
        };
        Ok(Self::new(tokens, mtls, peer_token.to_owned()))
    }

    /// True when requests must authenticate.
    pub fn is_enabled(&self) -> bool {
        self.mtls || !self.tokens.is_empty()
    }

    /// Whether a request on a connection described by `conn` may proceed.
    pub fn check(&self, conn: ConnInfo, headers: &HeaderMap) -> Result<(), TokenError> {
        if !self.is_enabled() || (self.mtls && conn.client_cert) {
            return Ok(());
        }
        let given = bearer(headers).ok_or(TokenError::Missing)?;
        let known = self
            .tokens
            .iter()
            .chain(std::iter::once(&self.peer_token))
            .filter(|t| !t.is_empty())
            .fold(false, |ok, t| equal_in_constant_time(given, t) | ok);
        if known {
            Ok(())
        } else {
            Err(TokenError::Wrong)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_token(t: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {t}")) {
            h.insert(http::header::AUTHORIZATION, v);
        }
        h
    }

    #[test]
    fn token_files_skip_blanks_and_comments() {
        assert_eq!(parse_tokens("a\n\n # x\n  b  \n#c\n"), vec!["a", "b"]);
    }

    #[test]
    fn open_access_needs_nothing() {
        let a = ClientAuth::open();
        assert!(a.check(ConnInfo::default(), &HeaderMap::new()).is_ok());
    }

    #[test]
    fn tokens_are_checked_and_the_peer_token_is_accepted() {
        let a = ClientAuth::new(vec!["t1".into(), "t2".into()], false, "peer".into());
        let conn = ConnInfo::default();
        assert_eq!(a.check(conn, &HeaderMap::new()), Err(TokenError::Missing));
        assert_eq!(a.check(conn, &with_token("nope")), Err(TokenError::Wrong));
        assert!(a.check(conn, &with_token("t2")).is_ok());
        assert!(a.check(conn, &with_token("peer")).is_ok());
    }

    #[test]
    fn a_verified_client_certificate_is_enough_with_mtls() {
        let a = ClientAuth::new(Vec::new(), true, "peer".into());
        let cert = ConnInfo {
            tls: true,
            client_cert: true,
        };
        assert!(a.check(cert, &HeaderMap::new()).is_ok());
        let no_cert = ConnInfo {
            tls: true,
            client_cert: false,
        };
        assert_eq!(
            a.check(no_cert, &HeaderMap::new()),
            Err(TokenError::Missing)
        );
        // Nodes forward requests they authenticated with the peer token.
        assert!(a.check(no_cert, &with_token("peer")).is_ok());
    }
}
