//! Typed errors of the transport, one enum per layer so a caller can tell
//! "the bytes are bad" (codec, frame) from "the peer is not one of ours"
//! (handshake) from "the transport itself cannot work" (start, I/O).

use crate::NodeId;

/// Why a byte sequence is not a valid encoded Raft batch or message.
///
/// Decoding never panics and never trusts a length field beyond the bytes
/// actually present, so every variant here is a clean refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("input ended in the middle of {0}")]
    Truncated(&'static str),
    #[error("codec version {0} is not supported (this node speaks {supported})", supported = super::codec::CODEC_VERSION)]
    UnsupportedVersion(u8),
    #[error("unknown {what} tag {tag}")]
    UnknownTag { what: &'static str, tag: u8 },
    #[error("varint longer than 64 bits")]
    VarintOverflow,
    #[error("malformed input: {0}")]
    Malformed(&'static str),
    #[error("{0} trailing bytes after the last item")]
    TrailingBytes(usize),
}

/// Why a frame could not be read or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("frame checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("frame truncated: {have} of {need} bytes")]
    Truncated { have: usize, need: usize },
    #[error("{0} bytes after the end of the frame")]
    TrailingBytes(usize),
}

/// Why a connection was refused during the handshake. The refusing side
/// logs it and closes the connection; the reason also travels to the other
/// side so that both logs say the same thing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("not a Flotilla transport peer (bad magic)")]
    BadMagic,
    #[error("protocol version {theirs} is incompatible (this node speaks {ours})")]
    IncompatibleVersion { ours: u16, theirs: u16 },
    #[error("peer belongs to cluster {theirs}, this node to cluster {ours}")]
    ForeignCluster { ours: u64, theirs: u64 },
    #[error("node {0} is not a known peer of this node")]
    UnknownNode(NodeId),
    #[error("peer expected to reach node {expected}, but this is node {actual}")]
    WrongTarget { expected: NodeId, actual: NodeId },
    #[error("node {0} must dial, not accept (the lower node id dials)")]
    WrongDirection(NodeId),
    #[error("the peer refused the connection: {0}")]
    Refused(String),
    #[error("malformed handshake: {0}")]
    Malformed(&'static str),
    #[error("handshake frame error: {0}")]
    Frame(#[from] FrameError),
    #[error("handshake timed out")]
    Timeout,
    #[error("connection closed during the handshake")]
    Closed,
    #[error("I/O error during the handshake: {0}")]
    Io(String),
}

/// Errors of the transport's public API.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("invalid transport configuration: {0}")]
    InvalidConfig(String),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("node {0} cannot be its own peer")]
    SelfPeer(NodeId),
    #[error("node id 0 is reserved")]
    ZeroNodeId,
    #[error("the transport is shut down")]
    Shutdown,
}
