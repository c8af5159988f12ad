//! Bad input against a running server: every class gets a RESP error; the
//! connection survives where the stream can continue, and the process
//! always survives.

mod server_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use server_support::*;

struct Raw(TcpStream);

impl Raw {
    fn connect(node: &ServerProcess) -> Raw {
        let s = TcpStream::connect(node.resp).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Raw(s)
    }

    /// Send bytes, read until a full line-terminated reply (simple
    /// replies only: +, -, :) arrives.
    fn ask(&mut self, bytes: &[u8]) -> String {
        self.0.write_all(bytes).unwrap();
        self.line()
    }

    fn line(&mut self) -> String {
        let mut out = Vec::new();
        let mut byte = [0u8; 1];
        while !out.ends_with(b"\r\n") {
            match self.0.read(&mut byte) {
                Ok(1) => out.push(byte[0]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// True when the server closed the connection.
    fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.0.read(&mut byte), Ok(0) | Err(_))
    }
}

fn bulk_request(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[test]
fn bad_input_yields_errors_and_never_kills_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("small.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[server]\nlisten = \"127.0.0.1:0\"\nrequest_bytes_max = 65536\n\
             [engine]\nkey_bytes_max = 100\nvalue_bytes_max = 1000\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let server = ServerProcess::start(
        &["--config".into(), config.display().to_string()],
        dir.path(),
        "node",
    );
    let mut c = Raw::connect(&server);

    // Errors after which the same connection goes on.
    let recoverable: Vec<(Vec<u8>, &str)> = vec![
        (
            bulk_request(&[b"NOSUCH", b"x"]),
            "-ERR unknown command 'NOSUCH'",
        ),
        (
            bulk_request(&[b"GET"]),
            "-ERR wrong number of arguments for 'get'",
        ),
        (bulk_request(&[b"GET", b"a", b"b"]), "-ERR wrong number"),
        (bulk_request(&[b"MSET", b"a", b"1", b"b"]), "-ERR"),
        (
            bulk_request(&[b"SET", &[b'k'; 101], b"v"]),
            "exceeds the limit of 100",
        ),
        (
            bulk_request(&[b"SET", b"k", &[b'v'; 1001]]),
            "exceeds the limit of 1000",
        ),
        (bulk_request(&[b"SET", b"", b"v"]), "empty key"),
        (
            bulk_request(&[b"SET", b"k", b"v", b"EX", b"10"]),
            "not supported",
        ),
        (
            bulk_request(&[b"FLOTILLA.MERGE", b"x", b"1"]),
            "must be a number",
        ),
        (bulk_request(&[b"FLOTILLA.SCAN", b"b", b"a"]), "-ERR"),
        (
            bulk_request(&[b"FLOTILLA.SCAN", b"a", b"", b"LIMIT", b"0"]),
            "-ERR",
        ),
        (
            bulk_request(&[b"FLOTILLA.TRANSFERLEADER", b"1", b"x"]),
            "must be a number",
        ),
        (bulk_request(&[b"FLOTILLA.ADDREPLICA", b"1", b"2"]), "-ERR"),
        (
            bulk_request(&[b"AUTH", b"pw"]),
            "without any password configured",
        ),
        (bulk_request(&[b"HELLO", b"3"]), "-NOPROTO"),
        (bulk_request(&[b"SELECT", b"3"]), "-ERR"),
        (b"GET \"unbalanced\r\n".to_vec(), "-ERR unbalanced quotes"),
        (b"*0\r\nPING\r\n".to_vec(), "+PONG"),
    ];
    for (request, expected) in &recoverable {
        let reply = c.ask(request);
        assert!(
            reply.contains(expected),
            "{:?} -> {reply:?}, expected {expected:?}",
            String::from_utf8_lossy(&request[..request.len().min(40)])
        );
        assert_eq!(c.ask(b"PING\r\n"), "+PONG\r\n", "connection still usable");
    }

    // Errors that lose the stream's framing: an error, then the server
    // closes this connection (only this one).
    let fatal: Vec<&[u8]> = vec![
        b"*1\r\n$99999999999999\r\n",
        b"*99999999999\r\n",
        b"*1\r\n$-7\r\n",
        b"*x\r\n",
        b"*2\r\n:1\r\n",
        b"*1\r\n$1\r\nab\r\n",
        b"*1\r\n$70000\r\n",
    ];
    for request in fatal {
        let mut c = Raw::connect(&server);
        let reply = c.ask(request);
        assert!(reply.starts_with("-ERR Protocol error"), "{reply:?}");
        assert!(c.closed());
    }
    let mut c = Raw::connect(&server);
    let long_line = vec![b'a'; 70 << 10];
    c.0.write_all(&long_line).unwrap();
    assert!(c.line().starts_with("-ERR Protocol error"));

    // Random garbage on many connections.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..50 {
        let mut c = Raw::connect(&server);
        let bytes: Vec<u8> = (0..300)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect();
        let _ = c.0.write_all(&bytes);
        let _ = c.0.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = c.0.read_to_end(&mut sink);
    }

    // The process is alive and still serves writes.
    let mut c = Raw::connect(&server);
    assert_eq!(c.ask(&bulk_request(&[b"SET", b"k", b"v"])), "+OK\r\n");
    let mut conn = server.redis();
    let v: String = redis::cmd("GET").arg("k").query(&mut conn).unwrap();
    assert_eq!(v, "v");
}
