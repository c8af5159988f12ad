//! A minimal async RESP2 client on tokio: one request at a time per
//! connection, every reply bounded (no unchecked sizes from the network).
//! The benchmark opens one connection per client task, hundreds of them,
//! on a two-thread runtime; a thread per blocking connection would not
//! measure the server.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Largest bulk string accepted (the server's values are at most 8 MiB).
const BULK_MAX: usize = 64 << 20;
/// Largest array accepted (a scan returns 2 items per key).
const ARRAY_MAX: usize = 1 << 22;
/// Deepest nesting accepted.
const DEPTH_MAX: usize = 8;

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Bytes>),
    Array(Option<Vec<Reply>>),
}

/// Errors of the connection itself (the server's `-ERR` replies are
/// [`Reply::Error`]).
#[derive(Debug, thiserror::Error)]
pub enum RespError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
}

/// One connection.
pub struct Connection {
    reader: BufReader<OwnedReadHalf>,
    writer: BufWriter<OwnedWriteHalf>,
    line: Vec<u8>,
}

impl Connection {
    pub async fn connect(addr: &str) -> Result<Connection, RespError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        Ok(Connection {
            reader: BufReader::with_capacity(64 << 10, r),
            writer: BufWriter::with_capacity(64 << 10, w),
            line: Vec::with_capacity(128),
        })
    }

    /// Send one command and wait (at most `timeout`) for its reply.
    pub async fn command(&mut self, args: &[&[u8]], timeout: Duration) -> Result<Reply, RespError> {
        match tokio::time::timeout(timeout, self.command_inner(args)).await {
            Ok(r) => r,
            Err(_) => Err(RespError::Timeout(timeout)),
        }
    }

    async fn command_inner(&mut self, args: &[&[u8]]) -> Result<Reply, RespError> {
        let mut header = Vec::with_capacity(16);
        header.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        self.writer.write_all(&header).await?;
        for arg in args {
            self.writer
                .write_all(format!("${}\r\n", arg.len()).as_bytes())
                .await?;
            self.writer.write_all(arg).await?;
            self.writer.write_all(b"\r\n").await?;
        }
        self.writer.flush().await?;
        self.read_reply(0).await
    }

    async fn read_line(&mut self) -> Result<String, RespError> {
        self.line.clear();
        let n = (&mut self.reader)
            .take(64 << 10)
            .read_until(b'\n', &mut self.line)
            .await?;
        if n == 0 {
            return Err(RespError::Protocol(
                "connection closed by the server".into(),
            ));
        }
        if !self.line.ends_with(b"\r\n") {
            return Err(RespError::Protocol(
                "line without CRLF or over 64 KiB".into(),
            ));
        }
        self.line.truncate(self.line.len() - 2);
        String::from_utf8(self.line.clone())
            .map_err(|_| RespError::Protocol("line is not UTF-8".into()))
    }

    fn read_reply(
        &mut self,
        depth: usize,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply, RespError>> + Send + '_>>
    {
        Box::pin(async move {
            if depth > DEPTH_MAX {
                return Err(RespError::Protocol("reply nested too deeply".into()));
            }
            let line = self.read_line().await?;
            let (kind, rest) = match line.char_indices().nth(1) {
                Some((i, _)) => (line.as_bytes()[0], &line[i..]),
                None if !line.is_empty() => (line.as_bytes()[0], ""),
                None => return Err(RespError::Protocol("empty line".into())),
            };
            let number = |s: &str| -> Result<i64, RespError> {
                s.parse::<i64>()
                    .map_err(|_| RespError::Protocol(format!("bad number {s:?}")))
            };
            match kind {
                b'+' => Ok(Reply::Simple(rest.to_string())),
                b'-' => Ok(Reply::Error(rest.to_string())),
                b':' => Ok(Reply::Integer(number(rest)?)),
                b'$' => {
                    let len = number(rest)?;
                    if len < 0 {
                        return Ok(Reply::Bulk(None));
                    }
                    let len = len as usize;
                    if len > BULK_MAX {
                        return Err(RespError::Protocol(format!("bulk of {len} bytes")));
                    }
                    let mut buf = vec![0u8; len + 2];
                    self.reader.read_exact(&mut buf).await?;
                    if !buf.ends_with(b"\r\n") {
                        return Err(RespError::Protocol("bulk without CRLF".into()));
                    }
                    buf.truncate(len);
                    Ok(Reply::Bulk(Some(Bytes::from(buf))))
                }
                b'*' => {
                    let len = number(rest)?;
                    if len < 0 {
                        return Ok(Reply::Array(None));
                    }
                    let len = len as usize;
                    if len > ARRAY_MAX {
                        return Err(RespError::Protocol(format!("array of {len} items")));
                    }
                    let mut items = Vec::with_capacity(len.min(1024));
                    for _ in 0..len {
                        items.push(self.read_reply(depth + 1).await?);
                    }
                    Ok(Reply::Array(Some(items)))
                }
                other => Err(RespError::Protocol(format!(
                    "unexpected reply type byte {other:#04x}"
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A one-shot fake server answering every request with `reply`.
    async fn fake(replies: Vec<&'static [u8]>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                for reply in replies {
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(reply).await;
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn parses_every_reply_type_and_refuses_garbage() {
        let addr = fake(vec![
            b"+OK\r\n",
            b"-MOVED 3 127.0.0.1:7000\r\n",
            b":42\r\n",
            b"$5\r\nhello\r\n",
            b"$-1\r\n",
            b"*2\r\n$1\r\na\r\n$1\r\nb\r\n",
            b"?what\r\n",
        ])
        .await;
        let mut c = Connection::connect(&addr).await.expect("connect");
        let t = Duration::from_secs(5);
        assert_eq!(
            c.command(&[b"PING"], t).await.ok(),
            Some(Reply::Simple("OK".into()))
        );
        assert_eq!(
            c.command(&[b"GET", b"k"], t).await.ok(),
            Some(Reply::Error("MOVED 3 127.0.0.1:7000".into()))
        );
        assert_eq!(c.command(&[b"X"], t).await.ok(), Some(Reply::Integer(42)));
        assert_eq!(
            c.command(&[b"X"], t).await.ok(),
            Some(Reply::Bulk(Some(Bytes::from_static(b"hello"))))
        );
        assert_eq!(c.command(&[b"X"], t).await.ok(), Some(Reply::Bulk(None)));
        assert_eq!(
            c.command(&[b"X"], t).await.ok(),
            Some(Reply::Array(Some(vec![
                Reply::Bulk(Some(Bytes::from_static(b"a"))),
                Reply::Bulk(Some(Bytes::from_static(b"b")))
            ])))
        );
        assert!(matches!(
            c.command(&[b"X"], t).await,
            Err(RespError::Protocol(_))
        ));
    }
}
