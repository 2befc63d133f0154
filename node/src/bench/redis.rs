//! Redis as a side-by-side peer: a minimal RESP2 client (GET and SET over one TCP connection
//! per benchmark client), enough to run the same workload against a local `redis-server`.

use super::BenchError;
use super::target::{Session, Target};
use bytes::Bytes;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// A Redis server at `host:port`.
#[derive(Clone, Debug)]
pub struct RedisTarget {
    pub addr: String,
}

/// One connection.
#[derive(Debug)]
pub struct RedisSession {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    buf: Vec<u8>,
}

/// A RESP2 reply, as far as GET and SET need.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
}

/// Why a reply could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RespError {
    #[error("reading a reply")]
    Io(#[from] std::io::Error),
    #[error("malformed reply")]
    Malformed,
}

/// Encode a command as a RESP array of bulk strings into `out`.
pub fn encode_command(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Read one reply (arrays are not needed by GET/SET and are rejected).
pub async fn read_reply<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<Reply, RespError> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line).await?;
    let line = line.strip_suffix(b"\r\n").ok_or(RespError::Malformed)?;
    let (&kind, rest) = line.split_first().ok_or(RespError::Malformed)?;
    let text = std::str::from_utf8(rest).map_err(|_| RespError::Malformed)?;
    match kind {
        b'+' => Ok(Reply::Simple(text.to_owned())),
        b'-' => Ok(Reply::Error(text.to_owned())),
        b':' => text
            .parse()
            .map(Reply::Integer)
            .map_err(|_| RespError::Malformed),
        b'$' => {
            let len: i64 = text.parse().map_err(|_| RespError::Malformed)?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let len = usize::try_from(len).map_err(|_| RespError::Malformed)?;
            let mut data = vec![0; len + 2];
            r.read_exact(&mut data).await?;
            if !data.ends_with(b"\r\n") {
                return Err(RespError::Malformed);
            }
            data.truncate(len);
            Ok(Reply::Bulk(Some(data)))
        }
        _ => Err(RespError::Malformed),
    }
}

impl RedisSession {
    async fn call(&mut self, args: &[&[u8]]) -> Result<Reply, &'static str> {
        self.buf.clear();
        encode_command(args, &mut self.buf);
        self.writer.write_all(&self.buf).await.map_err(|_| "io")?;
        match read_reply(&mut self.reader).await {
            Ok(Reply::Error(_)) => Err("redis_error"),
            Ok(reply) => Ok(reply),
            Err(RespError::Io(_)) => Err("io"),
            Err(RespError::Malformed) => Err("protocol"),
        }
    }
}

impl Target for RedisTarget {
    type Session = RedisSession;

    fn name(&self) -> String {
        "redis".into()
    }

    async fn session(&self) -> Result<RedisSession, BenchError> {
        let connect_err = |source| BenchError::ConnectRedis {
            addr: self.addr.clone(),
            source,
        };
        let stream = TcpStream::connect(&self.addr).await.map_err(connect_err)?;
        stream.set_nodelay(true).map_err(connect_err)?;
        let (read, writer) = stream.into_split();
        let mut session = RedisSession {
            reader: BufReader::new(read),
            writer,
            buf: Vec::new(),
        };
        match session.call(&[b"PING"]).await {
            Ok(Reply::Simple(s)) if s == "PONG" => Ok(session),
            _ => Err(BenchError::RedisHandshake {
                addr: self.addr.clone(),
            }),
        }
    }
}

impl Session for RedisSession {
    async fn read(&mut self, key: &str) -> Result<bool, &'static str> {
        match self.call(&[b"GET", key.as_bytes()]).await? {
            Reply::Bulk(v) => Ok(v.is_some()),
            _ => Err("protocol"),
        }
    }

    async fn write(&mut self, key: &str, value: Bytes) -> Result<(), &'static str> {
        match self.call(&[b"SET", key.as_bytes(), &value]).await? {
            Reply::Simple(_) => Ok(()),
            _ => Err("protocol"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> Result<Reply, RespError> {
        let mut r = bytes;
        read_reply(&mut r).await
    }

    #[test]
    fn commands_encode_as_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode_command(&[b"SET", b"k", b"a\r\nb"], &mut out);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n");
    }

    #[tokio::test]
    async fn replies_decode() {
        assert_eq!(
            parse(b"+OK\r\n").await.ok(),
            Some(Reply::Simple("OK".into()))
        );
        assert_eq!(parse(b"$-1\r\n").await.ok(), Some(Reply::Bulk(None)));
        assert_eq!(
            parse(b"$4\r\na\r\nb\r\n").await.ok(),
            Some(Reply::Bulk(Some(b"a\r\nb".to_vec())))
        );
        assert_eq!(parse(b":12\r\n").await.ok(), Some(Reply::Integer(12)));
        assert_eq!(
            parse(b"-ERR nope\r\n").await.ok(),
            Some(Reply::Error("ERR nope".into()))
        );
    }

    #[tokio::test]
    async fn malformed_and_truncated_replies_are_errors() {
        assert!(matches!(parse(b"OK\r\n").await, Err(RespError::Malformed)));
        assert!(matches!(parse(b"+OK").await, Err(RespError::Malformed)));
        assert!(matches!(
            parse(b"$5\r\nab\r\n").await,
            Err(RespError::Io(_))
        ));
        assert!(matches!(parse(b"*1\r\n").await, Err(RespError::Malformed)));
    }
}
