//! The first exchange on every connection: who is calling, of which
//! cluster, speaking which protocol version.
//!
//! The dialer sends a `Hello`; the acceptor checks it and answers with a
//! `HelloAck` that either accepts or carries the refusal reason, then closes
//! on refusal. The dialer checks the answer the same way (a node that
//! answers on the expected address may be of another cluster or may be a
//! different node than the one we meant to reach). Both are small frames of
//! the usual format, read with a tight size limit so that a stranger cannot
//! make us allocate before we know who it is.

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::error::{FrameError, HandshakeError};
use super::frame::{self, FrameKind, FRAME_HEADER_BYTES};
use crate::{ClusterId, NodeId};

/// The protocol version this node speaks. Bump it for any change that an
/// older node would misread; the codec version inside Raft frames moves
/// with it.
pub const PROTOCOL_VERSION: u16 = 1;
/// The oldest version this node still accepts.
pub const PROTOCOL_VERSION_MIN: u16 = 1;

const MAGIC: [u8; 4] = *b"FLOT";
/// Handshake frames are tiny; anything longer is not a Flotilla peer.
const HANDSHAKE_FRAME_BYTES_MAX: usize = 512;
const REASON_BYTES_MAX: usize = 256;

/// The dialer's introduction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub protocol_version: u16,
    pub cluster_id: ClusterId,
    /// The dialing node.
    pub node_id: NodeId,
    /// The node the dialer means to reach.
    pub target_node_id: NodeId,
}

impl Hello {
    /// The complete `Hello` frame.
    ///
    /// ```
    /// use flotilla_router::transport::handshake::{Hello, PROTOCOL_VERSION};
    ///
    /// let hello = Hello { protocol_version: PROTOCOL_VERSION, cluster_id: 7, node_id: 1, target_node_id: 2 };
    /// let frame = hello.encode_frame();
    /// assert_eq!(Hello::decode_frame(&frame).unwrap(), hello);
    /// ```
    pub fn encode_frame(&self) -> BytesMut {
        let mut payload = BytesMut::with_capacity(30);
        payload.put_slice(&MAGIC);
        payload.put_u16_le(self.protocol_version);
        payload.put_u64_le(self.cluster_id);
        payload.put_u64_le(self.node_id);
        payload.put_u64_le(self.target_node_id);
        let mut out = BytesMut::with_capacity(FRAME_HEADER_BYTES + payload.len());
        // Cannot fail: the payload is 30 bytes.
        let _ = frame::encode(
            FrameKind::Hello,
            &payload,
            &mut out,
            HANDSHAKE_FRAME_BYTES_MAX,
        );
        out
    }

    /// Parses a complete `Hello` frame.
    pub fn decode_frame(bytes: &[u8]) -> Result<Hello, HandshakeError> {
        let frame = frame::decode_exact(bytes, HANDSHAKE_FRAME_BYTES_MAX)?;
        if frame.kind != FrameKind::Hello {
            return Err(HandshakeError::Malformed("expected a Hello frame"));
        }
        let mut fields = Fields::new(&frame.payload)?;
        let hello = Hello {
            protocol_version: fields.u16()?,
            cluster_id: fields.u64()?,
            node_id: fields.u64()?,
            target_node_id: fields.u64()?,
        };
        fields.end()?;
        Ok(hello)
    }
}

/// The acceptor's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloAck {
    pub protocol_version: u16,
    pub cluster_id: ClusterId,
    /// The accepting node.
    pub node_id: NodeId,
    /// `None` when accepted, else why not.
    pub refusal: Option<String>,
}

impl HelloAck {
    /// The complete `HelloAck` frame.
    pub fn encode_frame(&self) -> BytesMut {
        let mut payload = BytesMut::with_capacity(32 + REASON_BYTES_MAX);
        payload.put_slice(&MAGIC);
        payload.put_u16_le(self.protocol_version);
        payload.put_u64_le(self.cluster_id);
        payload.put_u64_le(self.node_id);
        match &self.refusal {
            None => payload.put_u8(0),
            Some(reason) => {
                payload.put_u8(1);
                let mut cut = reason.len().min(REASON_BYTES_MAX);
                while !reason.is_char_boundary(cut) {
                    cut -= 1;
                }
                payload.put_u16_le(cut as u16);
                payload.put_slice(&reason.as_bytes()[..cut]);
            }
        }
        let mut out = BytesMut::new();
        // Cannot fail: the payload is at most 290 bytes.
        let _ = frame::encode(
            FrameKind::HelloAck,
            &payload,
            &mut out,
            HANDSHAKE_FRAME_BYTES_MAX,
        );
        out
    }

    /// Parses a complete `HelloAck` frame.
    pub fn decode_frame(bytes: &[u8]) -> Result<HelloAck, HandshakeError> {
        let frame = frame::decode_exact(bytes, HANDSHAKE_FRAME_BYTES_MAX)?;
        if frame.kind != FrameKind::HelloAck {
            return Err(HandshakeError::Malformed("expected a HelloAck frame"));
        }
        let mut fields = Fields::new(&frame.payload)?;
        let protocol_version = fields.u16()?;
        let cluster_id = fields.u64()?;
        let node_id = fields.u64()?;
        let refusal = match fields.u8()? {
            0 => None,
            1 => {
                let len = fields.u16()? as usize;
                let raw = fields.take(len)?;
                Some(String::from_utf8_lossy(raw).into_owned())
            }
            _ => return Err(HandshakeError::Malformed("bad status")),
        };
        fields.end()?;
        Ok(HelloAck {
            protocol_version,
            cluster_id,
            node_id,
            refusal,
        })
    }
}

/// Little-endian field reader over a handshake payload.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(payload: &'a [u8]) -> Result<Self, HandshakeError> {
        let mut fields = Fields { rest: payload };
        if fields.take(4)? != MAGIC {
            return Err(HandshakeError::BadMagic);
        }
        Ok(fields)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], HandshakeError> {
        if self.rest.len() < n {
            return Err(HandshakeError::Malformed("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, HandshakeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, HandshakeError> {
        let mut raw = [0u8; 2];
        raw.copy_from_slice(self.take(2)?);
        Ok(u16::from_le_bytes(raw))
    }

    fn u64(&mut self) -> Result<u64, HandshakeError> {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(raw))
    }

    fn end(&self) -> Result<(), HandshakeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(HandshakeError::Malformed("trailing bytes"))
        }
    }
}

/// Reads one handshake frame: the header first, then exactly the payload,
/// never more (Raft frames may follow right behind it in the stream).
async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, HandshakeError> {
    let mut buf = vec![0u8; FRAME_HEADER_BYTES];
    read_exact(stream, &mut buf).await?;
    let mut len_raw = [0u8; 4];
    len_raw.copy_from_slice(&buf[..4]);
    let total = FRAME_HEADER_BYTES + u32::from_le_bytes(len_raw) as usize;
    if total > HANDSHAKE_FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge {
            len: total,
            max: HANDSHAKE_FRAME_BYTES_MAX,
        }
        .into());
    }
    buf.resize(total, 0);
    read_exact(stream, &mut buf[FRAME_HEADER_BYTES..]).await?;
    Ok(buf)
}

async fn read_exact<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut [u8],
) -> Result<(), HandshakeError> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(HandshakeError::Closed),
        Err(e) => Err(HandshakeError::Io(e.to_string())),
    }
}

async fn write_all<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
) -> Result<(), HandshakeError> {
    stream
        .write_all(bytes)
        .await
        .map_err(|e| HandshakeError::Io(e.to_string()))?;
    stream
        .flush()
        .await
        .map_err(|e| HandshakeError::Io(e.to_string()))
}

fn version_ok(theirs: u16) -> Result<(), HandshakeError> {
    if (PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION).contains(&theirs) {
        Ok(())
    } else {
        Err(HandshakeError::IncompatibleVersion {
            ours: PROTOCOL_VERSION,
            theirs,
        })
    }
}

/// Who this node is, for both sides of the handshake.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Identity {
    pub cluster_id: ClusterId,
    pub node_id: NodeId,
}

/// Dialer side: introduce ourselves to `target` and check its answer.
pub(crate) async fn dial<S>(
    stream: &mut S,
    me: Identity,
    target: NodeId,
) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        cluster_id: me.cluster_id,
        node_id: me.node_id,
        target_node_id: target,
    };
    write_all(stream, &hello.encode_frame()).await?;
    let ack = HelloAck::decode_frame(&read_frame(stream).await?)?;
    if let Some(reason) = ack.refusal {
        return Err(HandshakeError::Refused(reason));
    }
    version_ok(ack.protocol_version)?;
    if ack.cluster_id != me.cluster_id {
        return Err(HandshakeError::ForeignCluster {
            ours: me.cluster_id,
            theirs: ack.cluster_id,
        });
    }
    if ack.node_id != target {
        return Err(HandshakeError::WrongTarget {
            expected: target,
            actual: ack.node_id,
        });
    }
    Ok(())
}

/// The acceptor's checks that need nothing but the `Hello` itself.
fn judge(hello: &Hello, me: Identity) -> Result<(), HandshakeError> {
    version_ok(hello.protocol_version)?;
    if hello.cluster_id != me.cluster_id {
        return Err(HandshakeError::ForeignCluster {
            ours: me.cluster_id,
            theirs: hello.cluster_id,
        });
    }
    if hello.target_node_id != me.node_id {
        return Err(HandshakeError::WrongTarget {
            expected: hello.target_node_id,
            actual: me.node_id,
        });
    }
    Ok(())
}

/// Acceptor side: read the dialer's `Hello`, decide, answer. Returns the
/// dialer's node id when accepted. On refusal the reason is sent back (best
/// effort) and returned; the caller logs it and drops the connection.
pub(crate) async fn accept<S>(
    stream: &mut S,
    me: Identity,
    is_known_dialer: impl Fn(NodeId) -> Result<(), HandshakeError>,
) -> Result<NodeId, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let hello = Hello::decode_frame(&read_frame(stream).await?)?;
    let verdict = judge(&hello, me).and_then(|()| is_known_dialer(hello.node_id));
    let ack = HelloAck {
        protocol_version: PROTOCOL_VERSION,
        cluster_id: me.cluster_id,
        node_id: me.node_id,
        refusal: verdict.as_ref().err().map(|e| e.to_string()),
    };
    // A refused peer gets the reason if it still listens; failing to tell
    // it changes nothing.
    let sent = write_all(stream, &ack.encode_frame()).await;
    verdict?;
    sent?;
    Ok(hello.node_id)
}
