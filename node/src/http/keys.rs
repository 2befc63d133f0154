//! Keys in URLs: a key is one percent-encoded path segment of 1..=maxKeyBytes bytes.

/// Why a key in a URL is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("the key is empty")]
    Empty,
    #[error("the key contains a raw '/' (percent-encode it as %2F)")]
    RawSlash,
    #[error("invalid percent-encoding at byte {0}")]
    BadEscape(usize),
    #[error("the key is {len} bytes, more than the limit of {max}")]
    TooLarge { len: usize, max: usize },
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes the path segment `raw` into key bytes, enforcing the size limit.
pub fn decode_key(raw: &str, max: usize) -> Result<Vec<u8>, KeyError> {
    let b = raw.as_bytes();
    if b.is_empty() {
        return Err(KeyError::Empty);
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' => return Err(KeyError::RawSlash),
            b'%' => {
                let hi = b.get(i + 1).copied().and_then(hex);
                let lo = b.get(i + 2).copied().and_then(hex);
                match (hi, lo) {
                    (Some(h), Some(l)) => out.push(h << 4 | l),
                    _ => return Err(KeyError::BadEscape(i)),
                }
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
        if out.len() > max {
            // Keep counting to report the real length without unbounded work.
            return Err(KeyError::TooLarge {
                len: out.len() + (b.len() - i) / 3,
                max,
            });
        }
    }
    Ok(out)
}

/// Percent-encodes key bytes as one path segment (unreserved characters stay as they are).
pub fn encode_key(key: &[u8]) -> String {
    let mut s = String::with_capacity(key.len());
    for &c in key {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            s.push(c as char);
        } else {
            s.push_str(&format!("%{c:02X}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(decode_key("a%2Fb%20c", 10), Ok(b"a/b c".to_vec()));
        assert_eq!(
            decode_key(&encode_key(&[0, 255, b'/']), 10),
            Ok(vec![0, 255, b'/'])
        );
    }

    #[test]
    fn rejects_malformed_and_oversized_keys() {
        assert_eq!(decode_key("", 10), Err(KeyError::Empty));
        assert_eq!(decode_key("a/b", 10), Err(KeyError::RawSlash));
        assert_eq!(decode_key("a%2", 10), Err(KeyError::BadEscape(1)));
        assert_eq!(decode_key("%zz", 10), Err(KeyError::BadEscape(0)));
        assert!(matches!(
            decode_key("abcdef", 5),
            Err(KeyError::TooLarge { max: 5, .. })
        ));
        assert_eq!(decode_key("abcde", 5), Ok(b"abcde".to_vec()));
    }
}
