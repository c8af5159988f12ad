//! The client side of `flotilla admin`: a small blocking RESP client and
//! the rendering of replies as tables or JSON.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde_json::{json, Map, Value};

use super::resp::{self, Frame, Limits};

/// A blocking connection to a Flotilla (or any RESP) server.
pub struct AdminClient {
    stream: TcpStream,
    buf: BytesMut,
    limits: Limits,
}

impl AdminClient {
    /// Connect (and `AUTH` when a password is given).
    pub fn connect(addr: &str, password: Option<&str>, timeout: Duration) -> Result<Self, String> {
        let target = addr
            .to_socket_addrs()
            .map_err(|e| format!("{addr}: {e}"))?
            .next()
            .ok_or_else(|| format!("{addr}: no address"))?;
        let stream = TcpStream::connect_timeout(&target, timeout)
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|_| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| e.to_string())?;
        let mut client = AdminClient {
            stream,
            buf: BytesMut::new(),
            limits: Limits::default(),
        };
        if let Some(password) = password {
            client.call_ok(&["AUTH", password])?;
        }
        Ok(client)
    }

    /// Send one command, return its reply (error replies included).
    pub fn call(&mut self, args: &[&str]) -> Result<Frame, String> {
        let args: Vec<Bytes> = args
            .iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        let mut out = BytesMut::new();
        Frame::encode_request(&args, &mut out);
        self.stream.write_all(&out).map_err(|e| e.to_string())?;
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            if let Some(frame) =
                resp::parse_frame(&mut self.buf, &self.limits).map_err(|e| e.to_string())?
            {
                return Ok(frame);
            }
            let n = self.stream.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Like [`AdminClient::call`], with an error reply turned into `Err`.
    pub fn call_ok(&mut self, args: &[&str]) -> Result<Frame, String> {
        match self.call(args)? {
            Frame::Error(e) => Err(e),
            frame => Ok(frame),
        }
    }
}

/// A reply as JSON: flat key/value arrays (maps in RESP2) become objects
/// when `as_map`, bulk strings become strings (lossy UTF-8).
pub fn to_json(frame: &Frame, as_map: bool) -> Value {
    match frame {
        Frame::Simple(s) => json!(s),
        Frame::Error(e) => json!({ "error": e }),
        Frame::Integer(i) => json!(i),
        Frame::Bulk(b) => json!(String::from_utf8_lossy(b)),
        Frame::Null | Frame::NullArray => Value::Null,
        Frame::Array(items) if as_map && items.len() % 2 == 0 => {
            let mut object = Map::new();
            for pair in items.chunks(2) {
                let key = match &pair[0] {
                    Frame::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
                    other => format!("{other:?}"),
                };
                object.insert(key, to_json(&pair[1], false));
            }
            Value::Object(object)
        }
        Frame::Array(items) => Value::Array(items.iter().map(|i| to_json(i, false)).collect()),
    }
}

/// `FLOTILLA.RANGES` as a JSON array of objects.
pub fn ranges_json(frame: &Frame) -> Value {
    match frame {
        Frame::Array(ranges) => Value::Array(ranges.iter().map(|r| to_json(r, true)).collect()),
        other => to_json(other, false),
    }
}

/// A table of ranges for humans.
pub fn ranges_table(ranges: &Value) -> String {
    let mut out = format!(
        "{:>20}  {:<20}  {:<20}  {:>7}  {:<10}  {:>6}  {:>9}  {}\n",
        "RANGE", "START", "END", "EPOCH", "ROLE", "TERM", "APPLIED", "REPLICAS"
    );
    for r in ranges.as_array().into_iter().flatten() {
        let text = |k: &str| r[k].as_str().unwrap_or("").to_string();
        let num = |k: &str| r[k].as_i64().unwrap_or(0);
        let end = match text("end") {
            e if e.is_empty() => "(end)".to_string(),
            e => format!("{e:?}"),
        };
        out.push_str(&format!(
            "{:>20}  {:<20}  {:<20}  {:>7}  {:<10}  {:>6}  {:>9}  {}\n",
            num("id"),
            format!("{:?}", text("start")),
            end,
            format!("v{}", num("epoch_version")),
            text("role"),
            num("term"),
            num("applied_index"),
            r["replicas"]
        ));
    }
    out
}

/// `name: value` lines for humans.
pub fn map_table(value: &Value) -> String {
    let mut out = String::new();
    if let Some(object) = value.as_object() {
        let width = object.keys().map(|k| k.len()).max().unwrap_or(0);
        for (k, v) in object {
            let shown = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push_str(&format!("{k:<width$}  {shown}\n"));
        }
    }
    out
}
