//! A minimal RESP2 client where every call is bounded by a deadline on the
//! test's monotonic clock (connect, write and each read), so a paused or
//! partitioned node can never hang a client: the call fails and the
//! operation is recorded as indeterminate.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    pub fn text(&self) -> String {
        match self {
            Reply::Simple(s) | Reply::Error(s) => s.clone(),
            Reply::Int(i) => i.to_string(),
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Reply::Bulk(None) | Reply::Array(None) => "(nil)".into(),
            Reply::Array(Some(items)) => {
                let parts: Vec<String> = items.iter().map(Reply::text).collect();
                format!("[{}]", parts.join(", "))
            }
        }
    }
}

pub struct Resp {
    stream: TcpStream,
    buf: Vec<u8>,
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "deadline passed")
}

fn remaining(deadline: Instant) -> io::Result<std::time::Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(timed_out())
    } else {
        Ok(left)
    }
}

impl Resp {
    pub fn connect(addr: SocketAddr, deadline: Instant) -> io::Result<Resp> {
        let stream = TcpStream::connect_timeout(&addr, remaining(deadline)?)?;
        stream.set_nodelay(true)?;
        Ok(Resp {
            stream,
            buf: Vec::new(),
        })
    }

    /// Send one command and read its reply, all before `deadline`.
    pub fn call(&mut self, args: &[&[u8]], deadline: Instant) -> io::Result<Reply> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        self.stream.set_write_timeout(Some(remaining(deadline)?))?;
        self.stream.write_all(&out)?;
        loop {
            if let Some((reply, used)) = parse(&self.buf)? {
                self.buf.drain(..used);
                return Ok(reply);
            }
            self.stream.set_read_timeout(Some(remaining(deadline)?))?;
            let mut chunk = [0u8; 16 << 10];
            let n = match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed",
                    ))
                }
                Ok(n) => n,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock) => return Err(timed_out()),
                Err(e) => return Err(e),
            };
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Parse one reply from the front of `buf`: `None` when incomplete.
fn parse(buf: &[u8]) -> io::Result<Option<(Reply, usize)>> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let line = String::from_utf8_lossy(&buf[1..end]).into_owned();
    let after = end + 2;
    let number = || line.parse::<i64>().map_err(|_| bad("bad number in reply"));
    match kind {
        b'+' => Ok(Some((Reply::Simple(line), after))),
        b'-' => Ok(Some((Reply::Error(line), after))),
        b':' => Ok(Some((Reply::Int(number()?), after))),
        b'$' => {
            let len = number()?;
            if len < 0 {
                return Ok(Some((Reply::Bulk(None), after)));
            }
            let len = len as usize;
            if buf.len() < after + len + 2 {
                return Ok(None);
            }
            let data = buf[after..after + len].to_vec();
            Ok(Some((Reply::Bulk(Some(data)), after + len + 2)))
        }
        b'*' => {
            let count = number()?;
            if count < 0 {
                return Ok(Some((Reply::Array(None), after)));
            }
            let mut items = Vec::with_capacity(count.min(1 << 16) as usize);
            let mut at = after;
            for _ in 0..count {
                match parse(&buf[at..])? {
                    Some((item, used)) => {
                        items.push(item);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(Some(items)), at)))
        }
        _ => Err(bad("unknown reply type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_reply_kind_and_waits_for_more() {
        let full = b"*3\r\n$2\r\nab\r\n$-1\r\n:7\r\n+OK\r\n";
        let (reply, used) = parse(full).unwrap().unwrap();
        assert_eq!(
            reply,
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"ab".to_vec())),
                Reply::Bulk(None),
                Reply::Int(7)
            ]))
        );
        assert_eq!(
            parse(&full[used..]).unwrap().unwrap().0,
            Reply::Simple("OK".into())
        );
        for cut in 0..used {
            assert!(parse(&full[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        assert_eq!(
            parse(b"-TRYAGAIN x\r\n").unwrap().unwrap().0,
            Reply::Error("TRYAGAIN x".into())
        );
        assert!(parse(b"?x\r\n").is_err());
    }
}
