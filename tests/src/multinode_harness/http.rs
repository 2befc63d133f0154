//! One HTTP exchange made with `curl -i` from inside a worker, parsed into status, headers
//! and body (pure, so the parsing is unit-tested).

use super::MultinodeError;
use std::collections::BTreeMap;

/// A parsed HTTP answer. Header names are lower-case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Parses the output of `curl -i` (status line, headers, blank line, body). Only the last
/// response counts when curl printed interim ones (`100 Continue`).
pub fn parse_answer(text: &str) -> Result<HttpAnswer, MultinodeError> {
    let malformed = || MultinodeError::MalformedAnswer(text.chars().take(200).collect());
    let normalized = text.replace("\r\n", "\n");
    let mut rest = normalized.as_str();
    loop {
        let (head, body) = rest.split_once("\n\n").unwrap_or((rest, ""));
        let mut lines = head.lines();
        let status_line = lines.next().ok_or_else(malformed)?;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(malformed)?;
        if (100..200).contains(&status) && body.starts_with("HTTP/") {
            rest = body;
            continue;
        }
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        return Ok(HttpAnswer {
            status,
            headers,
            body: body.to_owned(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::parse_answer;

    #[test]
    fn parses_status_headers_and_body() -> Result<(), Box<dyn std::error::Error>> {
        let a = parse_answer("HTTP/1.1 200 OK\r\nx-version: 7\r\nX-Served-By: s-1\r\n\r\nhello")?;
        assert_eq!(a.status, 200);
        assert_eq!(a.header("x-version"), Some("7"));
        assert_eq!(a.header("x-served-by"), Some("s-1"));
        assert_eq!(a.body, "hello");
        Ok(())
    }

    #[test]
    fn skips_interim_answers_and_keeps_empty_bodies() -> Result<(), Box<dyn std::error::Error>> {
        let a = parse_answer("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\n\r\n")?;
        assert_eq!(a.status, 404);
        assert_eq!(a.body, "");
        Ok(())
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_answer("").is_err());
        assert!(parse_answer("not http").is_err());
    }
}
