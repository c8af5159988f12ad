//! RESP2, the Redis wire protocol: an incremental parser with limits on
//! every size, and an encoder.
//!
//! A request is an array of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`)
//! or an inline command (`GET k\r\n`, what `telnet` users type). Replies are
//! any [`Frame`]. The parser never trusts a length it reads: a bulk or array
//! length above the limits is a [`ProtocolError`], which ends the
//! connection because the position of the next request is unknown.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// One RESP2 value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Bytes),
    /// `$-1`: a missing value.
    Null,
    Array(Vec<Frame>),
    /// `*-1`.
    NullArray,
}

impl Frame {
    /// `+OK`.
    pub fn ok() -> Frame {
        Frame::Simple("OK".into())
    }

    /// An `-ERR ...` reply. `message` should not contain CR or LF (they
    /// are replaced by spaces when encoded).
    pub fn err(message: impl Into<String>) -> Frame {
        Frame::Error(format!("ERR {}", message.into()))
    }

    pub fn bulk(data: impl Into<Bytes>) -> Frame {
        Frame::Bulk(data.into())
    }

    /// Encode into `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Frame::Simple(s) => line(out, b'+', s.as_bytes()),
            Frame::Error(s) => line(out, b'-', s.as_bytes()),
            Frame::Integer(i) => line(out, b':', i.to_string().as_bytes()),
            Frame::Bulk(b) => {
                line(out, b'$', b.len().to_string().as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Frame::Null => out.extend_from_slice(b"$-1\r\n"),
            Frame::NullArray => out.extend_from_slice(b"*-1\r\n"),
            Frame::Array(items) => {
                line(out, b'*', items.len().to_string().as_bytes());
                for item in items {
                    item.encode(out);
                }
            }
        }
    }

    /// Encode a request (an array of bulk strings).
    pub fn encode_request(args: &[Bytes], out: &mut BytesMut) {
        line(out, b'*', args.len().to_string().as_bytes());
        for arg in args {
            line(out, b'$', arg.len().to_string().as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
    }
}

fn line(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.reserve(body.len() + 3);
    out.put_u8(tag);
    // Simple strings and errors cannot carry CR/LF; keep the stream valid.
    out.extend(
        body.iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// Size limits of what the parser accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest bulk string, and largest buffered request (all its bytes).
    pub request_bytes_max: usize,
    /// Most elements of one array (arguments of one request).
    pub args_max: usize,
    /// Longest header or inline line.
    pub line_bytes_max: usize,
    /// Deepest nesting of arrays in a reply.
    pub depth_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_bytes_max: 32 << 20,
            args_max: 1 << 20,
            line_bytes_max: 64 << 10,
            depth_max: 16,
        }
    }
}

/// The byte stream is not RESP: reply with the message and close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

fn protocol<T>(message: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(message.into()))
}

/// A request read from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Command name and arguments.
    Command(Vec<Bytes>),
    /// An inline line that could not be split (unbalanced quotes): the
    /// line was consumed, the stream goes on.
    BadInline(String),
    /// An empty line or an empty array: nothing to do.
    Empty,
}

/// Take one complete request off the front of `buf`; `Ok(None)` when more
/// bytes are needed.
pub fn parse_request(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Request>, ProtocolError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] != b'*' {
        return parse_inline(buf, limits);
    }
    let Some((count, mut pos)) = read_header(buf, 0, limits)? else {
        return Ok(None);
    };
    if count <= 0 {
        buf.advance(pos);
        return Ok(Some(Request::Empty));
    }
    let count = count as usize;
    if count > limits.args_max {
        return protocol(format!(
            "invalid multibulk length {count} (at most {})",
            limits.args_max
        ));
    }
    let mut spans = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        if pos >= buf.len() {
            return Ok(None);
        }
        if buf[pos] != b'$' {
            return protocol(format!(
                "expected '$', got '{}'",
                (buf[pos] as char).escape_default()
            ));
        }
        let Some((len, after)) = read_header(buf, pos, limits)? else {
            return Ok(None);
        };
        if len < 0 || len as u64 > limits.request_bytes_max as u64 {
            return protocol(format!(
                "invalid bulk length {len} (at most {})",
                limits.request_bytes_max
            ));
        }
        let end = after + len as usize;
        if end
            > limits
                .request_bytes_max
                .saturating_add(limits.line_bytes_max)
        {
            return protocol(format!(
                "request larger than {} bytes",
                limits.request_bytes_max
            ));
        }
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return protocol("bulk string not terminated by CRLF");
        }
        spans.push((after, end));
        pos = end + 2;
    }
    let frozen = buf.split_to(pos).freeze();
    let args = spans.into_iter().map(|(a, b)| frozen.slice(a..b)).collect();
    Ok(Some(Request::Command(args)))
}

/// `*<n>\r\n` or `$<n>\r\n` at `pos`: the number and the position after
/// the line.
fn read_header(
    buf: &[u8],
    pos: usize,
    limits: &Limits,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    let Some(end) = find_crlf(buf, pos + 1, limits)? else {
        return Ok(None);
    };
    let text = &buf[pos + 1..end];
    let number = std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse::<i64>().ok());
    match number {
        Some(n) => Ok(Some((n, end + 2))),
        None => protocol(format!(
            "invalid length '{}'",
            String::from_utf8_lossy(&text[..text.len().min(32)])
        )),
    }
}

fn find_crlf(buf: &[u8], from: usize, limits: &Limits) -> Result<Option<usize>, ProtocolError> {
    let window = &buf[from.min(buf.len())..];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(i) if i > limits.line_bytes_max => protocol("line too long"),
        Some(i) => Ok(Some(from + i)),
        None if window.len() > limits.line_bytes_max => protocol("line too long"),
        None => Ok(None),
    }
}

fn parse_inline(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Request>, ProtocolError> {
    let Some(newline) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > limits.line_bytes_max {
            return protocol("too big inline request");
        }
        return Ok(None);
    };
    if newline > limits.line_bytes_max {
        return protocol("too big inline request");
    }
    let line = buf.split_to(newline + 1);
    let text = line[..newline]
        .strip_suffix(b"\r")
        .unwrap_or(&line[..newline]);
    match split_inline(text) {
        Some(args) if args.is_empty() => Ok(Some(Request::Empty)),
        Some(args) if args.len() > limits.args_max => protocol("too many inline arguments"),
        Some(args) => Ok(Some(Request::Command(args))),
        None => Ok(Some(Request::BadInline(
            "unbalanced quotes in request".into(),
        ))),
    }
}

/// Split an inline command line like redis-cli does: whitespace-separated,
/// with "double" (escapes allowed) and 'single' quotes. `None` when quotes
/// are unbalanced.
fn split_inline(line: &[u8]) -> Option<Vec<Bytes>> {
    let mut args = Vec::new();
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            break;
        }
        let mut arg = Vec::new();
        let mut quote = None;
        while i < line.len() {
            let b = line[i];
            match quote {
                None if b.is_ascii_whitespace() => break,
                None if b == b'"' || b == b'\'' => quote = Some(b),
                None => arg.push(b),
                Some(q) if b == q => {
                    quote = None;
                    // A closing quote must end the argument.
                    if i + 1 < line.len() && !line[i + 1].is_ascii_whitespace() {
                        return None;
                    }
                }
                Some(b'"') if b == b'\\' && i + 1 < line.len() => {
                    i += 1;
                    arg.push(match line[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        other => other,
                    });
                }
                Some(_) => arg.push(b),
            }
            i += 1;
        }
        if quote.is_some() {
            return None;
        }
        args.push(Bytes::from(arg));
    }
    Some(args)
}

/// Take one complete reply frame off the front of `buf` (the client side:
/// the admin CLI and the forwarding proxy).
pub fn parse_frame(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Frame>, ProtocolError> {
    match frame_at(buf, 0, limits, 0)? {
        Some((frame, used)) => {
            buf.advance(used);
            Ok(Some(frame))
        }
        None => Ok(None),
    }
}

fn frame_at(
    buf: &[u8],
    pos: usize,
    limits: &Limits,
    depth: usize,
) -> Result<Option<(Frame, usize)>, ProtocolError> {
    if pos >= buf.len() {
        return Ok(None);
    }
    if depth > limits.depth_max {
        return protocol("reply nested too deeply");
    }
    let text_line = |buf: &[u8]| -> Result<Option<(String, usize)>, ProtocolError> {
        Ok(find_crlf(buf, pos + 1, limits)?.map(|end| {
            (
                String::from_utf8_lossy(&buf[pos + 1..end]).into_owned(),
                end + 2,
            )
        }))
    };
    match buf[pos] {
        b'+' => Ok(text_line(buf)?.map(|(s, n)| (Frame::Simple(s), n))),
        b'-' => Ok(text_line(buf)?.map(|(s, n)| (Frame::Error(s), n))),
        b':' => match read_header(buf, pos, limits)? {
            Some((i, n)) => Ok(Some((Frame::Integer(i), n))),
            None => Ok(None),
        },
        b'$' => {
            let Some((len, after)) = read_header(buf, pos, limits)? else {
                return Ok(None);
            };
            if len < 0 {
                return Ok(Some((Frame::Null, after)));
            }
            if len as u64 > limits.request_bytes_max as u64 {
                return protocol(format!("invalid bulk length {len}"));
            }
            let end = after + len as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return protocol("bulk string not terminated by CRLF");
            }
            Ok(Some((
                Frame::Bulk(Bytes::copy_from_slice(&buf[after..end])),
                end + 2,
            )))
        }
        b'*' => {
            let Some((count, mut next)) = read_header(buf, pos, limits)? else {
                return Ok(None);
            };
            if count < 0 {
                return Ok(Some((Frame::NullArray, next)));
            }
            if count as u64 > limits.args_max as u64 {
                return protocol(format!("invalid multibulk length {count}"));
            }
            let mut items = Vec::with_capacity((count as usize).min(1024));
            for _ in 0..count {
                match frame_at(buf, next, limits, depth + 1)? {
                    Some((item, n)) => {
                        items.push(item);
                        next = n;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Frame::Array(items), next)))
        }
        other => protocol(format!(
            "unexpected type byte '{}'",
            (other as char).escape_default()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request(bytes: &[u8]) -> Result<Option<Request>, ProtocolError> {
        parse_request(&mut BytesMut::from(bytes), &Limits::default())
    }

    fn command(args: &[&str]) -> Request {
        Request::Command(args.iter().map(|a| Bytes::from(a.to_string())).collect())
    }

    #[test]
    fn arrays_of_bulk_strings_and_inline_commands() {
        assert_eq!(
            request(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").unwrap(),
            Some(command(&["GET", "k"]))
        );
        assert_eq!(
            request(b"SET k \"a b\\n\" 'c d'\r\n").unwrap(),
            Some(command(&["SET", "k", "a b\n", "c d"]))
        );
        assert_eq!(request(b"\r\n").unwrap(), Some(Request::Empty));
        assert_eq!(request(b"*0\r\n").unwrap(), Some(Request::Empty));
        assert!(matches!(
            request(b"GET \"k\r\n").unwrap(),
            Some(Request::BadInline(_))
        ));
    }

    #[test]
    fn partial_input_waits_for_more() {
        let full = b"*2\r\n$3\r\nGET\r\n$5\r\nhello\r\n";
        for cut in 0..full.len() {
            assert_eq!(request(&full[..cut]).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn absurd_lengths_are_protocol_errors() {
        assert!(request(b"*99999999999\r\n").is_err());
        assert!(request(b"*1\r\n$99999999999999\r\n").is_err());
        assert!(request(b"*1\r\n$-5\r\n").is_err());
        assert!(request(b"*x\r\n").is_err());
        assert!(request(b"*1\r\n:5\r\n").is_err());
        assert!(request(b"*1\r\n$1\r\nab\r\n").is_err());
        let long = vec![b'a'; 70 << 10];
        assert!(request(&long).is_err());
    }

    #[test]
    fn pipelined_requests_parse_one_by_one() {
        let mut buf = BytesMut::from(&b"PING\r\n*1\r\n$4\r\nPING\r\n"[..]);
        let limits = Limits::default();
        assert_eq!(
            parse_request(&mut buf, &limits).unwrap(),
            Some(command(&["PING"]))
        );
        assert_eq!(
            parse_request(&mut buf, &limits).unwrap(),
            Some(command(&["PING"]))
        );
        assert!(buf.is_empty());
    }

    fn frame_strategy() -> impl Strategy<Value = Frame> {
        let leaf = prop_oneof![
            "[a-zA-Z0-9 ]{0,20}".prop_map(Frame::Simple),
            "[a-zA-Z0-9 ]{0,20}".prop_map(Frame::Error),
            any::<i64>().prop_map(Frame::Integer),
            proptest::collection::vec(any::<u8>(), 0..50).prop_map(|v| Frame::Bulk(v.into())),
            Just(Frame::Null),
            Just(Frame::NullArray),
        ];
        leaf.prop_recursive(3, 30, 5, |inner| {
            proptest::collection::vec(inner, 0..5).prop_map(Frame::Array)
        })
    }

    proptest! {
        #[test]
        fn frames_round_trip(frame in frame_strategy()) {
            let mut buf = BytesMut::new();
            frame.encode(&mut buf);
            let parsed = parse_frame(&mut buf, &Limits::default()).unwrap();
            prop_assert_eq!(parsed, Some(frame));
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn requests_round_trip(args in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..40), 1..6)) {
            let args: Vec<Bytes> = args.into_iter().map(Bytes::from).collect();
            let mut buf = BytesMut::new();
            Frame::encode_request(&args, &mut buf);
            prop_assert_eq!(
                parse_request(&mut buf, &Limits::default()).unwrap(),
                Some(Request::Command(args))
            );
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let limits = Limits { request_bytes_max: 1 << 10, args_max: 64, line_bytes_max: 64, depth_max: 4 };
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = parse_request(&mut buf, &limits) {}
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = parse_frame(&mut buf, &limits) {}
        }
    }
}
