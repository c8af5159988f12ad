//! The recorded history: one [`Op`] per client request, with its
//! invocation and completion times on the test process's monotonic clock
//! (nanoseconds since the run started), and what came back.

use std::fmt;

/// What the client asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Read,
    /// Every write writes a value no other write writes.
    Write(String),
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ret {
    /// A write was acknowledged.
    Ok,
    /// A read returned this (None: the key is absent).
    ReadOk(Option<String>),
    /// The server said the request was not executed (MOVED, TRYAGAIN,
    /// BUSY, CROSSRANGE, range not found: refused before anything was
    /// proposed or applied), or the connection could not be made.
    Fail(String),
    /// Outcome unknown: timeout, lost connection, TIMEOUT, SHUTDOWN or any
    /// other error after the request was sent. It may or may not have
    /// taken effect, at any time after its invocation.
    Info(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// The client (process) that issued it; [`FINAL`] for the reads after
    /// the faults stopped.
    pub process: usize,
    /// The node the request was sent to.
    pub node: u64,
    pub key: String,
    pub call: Call,
    pub invoke_ns: u64,
    pub complete_ns: u64,
    pub ret: Ret,
}

/// Process id of the final reads.
pub const FINAL: usize = usize::MAX;

impl Op {
    pub fn is_write(&self) -> bool {
        matches!(self.call, Call::Write(_))
    }
}

fn secs(ns: u64) -> String {
    format!("{:.6}", ns as f64 / 1e9)
}

impl fmt::Display for Op {
    /// One line: `invoke complete process node key call -> ret`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let process = if self.process == FINAL {
            "final".to_string()
        } else {
            format!("c{}", self.process)
        };
        let call = match &self.call {
            Call::Read => "read".to_string(),
            Call::Write(v) => format!("write {v}"),
        };
        let ret = match &self.ret {
            Ret::Ok => "ok".to_string(),
            Ret::ReadOk(Some(v)) => format!("ok {v}"),
            Ret::ReadOk(None) => "ok nil".to_string(),
            Ret::Fail(e) => format!("fail {e}"),
            Ret::Info(e) => format!("info {e}"),
        };
        write!(
            f,
            "{} {} {process} n{} {} {call} -> {ret}",
            secs(self.invoke_ns),
            secs(self.complete_ns),
            self.node,
            self.key
        )
    }
}
