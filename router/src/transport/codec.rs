//! The versioned binary encoding of Raft messages inside `Raft` frames.
//!
//! Hand-written rather than serde + bincode or protobuf: the format is small
//! (a dozen message kinds), it must stay stable across crate upgrades that we
//! do not control, it needs one thing those libraries do not give — coalescing
//! the heartbeats of all groups into one compact item — and entry payloads
//! must be handed out as slices of the frame buffer without a copy. The bench
//! (`benches/benches/transport.rs`) measures its encode and decode speed.
//!
//! A Raft frame payload is:
//!
//! ```text
//! version: u8                      CODEC_VERSION
//! items until the payload ends:
//!   1 = one message:  range_id, from, to, term (varints), body tag u8, body
//!   2 = heartbeats:   count u32, then per heartbeat
//!                     flags u8, range_id, from, to, term,
//!                     commit (requests only), seq
//! ```
//!
//! Integers are LEB128 varints unless noted; byte strings are a varint length
//! then the bytes. Flags bytes must not carry unknown bits.
//!
//! Decoding trusts no count: every allocation is capped by the bytes that are
//! actually left (each element needs at least one byte), so memory use is a
//! small constant factor of the frame size, itself capped by the config.

use bytes::{BufMut, Bytes, BytesMut};
use flotilla_raftgroup::{
    ConfState, Entry, EntryKind, Message, MessageBody, Snapshot, SnapshotMeta,
};

use super::error::CodecError;
use super::frame::{self, FrameKind};
use crate::RaftEnvelope;

/// The codec version written in every Raft frame.
pub const CODEC_VERSION: u8 = 1;

const ITEM_MESSAGE: u8 = 1;
const ITEM_HEARTBEATS: u8 = 2;

const BODY_REQUEST_VOTE: u8 = 1;
const BODY_REQUEST_VOTE_RESPONSE: u8 = 2;
const BODY_APPEND: u8 = 3;
const BODY_APPEND_RESPONSE: u8 = 4;
const BODY_HEARTBEAT: u8 = 5;
const BODY_HEARTBEAT_RESPONSE: u8 = 6;
const BODY_INSTALL_SNAPSHOT: u8 = 7;
const BODY_TIMEOUT_NOW: u8 = 8;
const BODY_READ_INDEX: u8 = 9;
const BODY_READ_INDEX_RESPONSE: u8 = 10;
const BODY_NOT_MEMBER: u8 = 11;

const HEARTBEAT_FLAG_RESPONSE: u8 = 1;
const HEARTBEAT_FLAG_QUIESCE: u8 = 2;

/// Worst-case encoded size of one coalesced heartbeat (six varints + flags).
const HEARTBEAT_TUPLE_BYTES_MAX: usize = 6 * 10 + 1;

/// What [`encode_frames`] produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EncodeSummary {
    /// Frames appended.
    pub frames: usize,
    /// Messages encoded (coalesced heartbeats included).
    pub messages: usize,
    /// Heartbeats and heartbeat responses that went into coalesced items.
    pub heartbeats_coalesced: usize,
    /// Coalesced heartbeat items written (one per frame that had any).
    pub heartbeat_items: usize,
    /// Messages that alone exceed the frame size and were not sent.
    pub dropped_too_large: usize,
}

/// A decoded Raft frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodedBatch {
    /// Coalesced heartbeats first (expanded to full messages), then the
    /// other messages in the order they were sent.
    pub messages: Vec<RaftEnvelope>,
    /// How many coalesced heartbeat items the frame held.
    pub heartbeat_items: usize,
    /// How many messages came out of those items.
    pub heartbeats_coalesced: usize,
}

fn is_heartbeat(env: &RaftEnvelope) -> bool {
    matches!(
        env.message.body,
        MessageBody::Heartbeat { .. } | MessageBody::HeartbeatResponse { .. }
    )
}

/// Appends `messages` to `out` as Raft frames of at most `frame_bytes_max`
/// bytes each: usually exactly one frame. Heartbeats and heartbeat
/// responses of all groups are coalesced into one compact item at the front
/// of the frame; the other messages follow in order.
///
/// ```
/// use bytes::BytesMut;
/// use flotilla_raftgroup::{Message, MessageBody};
/// use flotilla_router::RaftEnvelope;
/// use flotilla_router::transport::codec;
///
/// let heartbeat = |range_id| RaftEnvelope {
///     range_id,
///     message: Message { from: 1, to: 2, term: 3, body: MessageBody::Heartbeat { commit: 9, seq: 4, quiesce: false } },
/// };
/// let messages: Vec<_> = (1..=100).map(heartbeat).collect();
/// let mut out = BytesMut::new();
/// let summary = codec::encode_frames(&messages, &mut out, 1 << 20);
/// assert_eq!((summary.frames, summary.heartbeat_items), (1, 1));
/// ```
pub fn encode_frames(
    messages: &[RaftEnvelope],
    out: &mut BytesMut,
    frame_bytes_max: usize,
) -> EncodeSummary {
    let mut summary = EncodeSummary::default();
    if messages.is_empty() {
        return summary;
    }
    let mut builder = FrameBuilder::new(out, frame_bytes_max);

    // Heartbeats first: they are the latency-sensitive part of a frame (a
    // late heartbeat costs an election) and reordering them against other
    // messages of the same group is harmless in Raft.
    let heartbeat_total = messages.iter().filter(|env| is_heartbeat(env)).count();
    if heartbeat_total > 0 {
        let mut heartbeats = messages.iter().filter(|env| is_heartbeat(env)).peekable();
        while heartbeats.peek().is_some() {
            if builder.room() < 1 + 4 + HEARTBEAT_TUPLE_BYTES_MAX && !builder.is_empty() {
                builder.next_frame(&mut summary);
            }
            builder.out.put_u8(ITEM_HEARTBEATS);
            let count_at = builder.out.len();
            builder.out.put_u32_le(0);
            let mut count: u32 = 0;
            while builder.room() >= HEARTBEAT_TUPLE_BYTES_MAX {
                let Some(env) = heartbeats.next() else { break };
                put_heartbeat_tuple(builder.out, env);
                count += 1;
            }
            builder.out[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
            builder.items += 1;
            summary.heartbeat_items += 1;
            summary.heartbeats_coalesced += count as usize;
            summary.messages += count as usize;
        }
    }

    for env in messages.iter().filter(|env| !is_heartbeat(env)) {
        let item_start = builder.out.len();
        builder.out.put_u8(ITEM_MESSAGE);
        put_envelope(builder.out, env);
        if builder.frame_len() <= frame_bytes_max {
            builder.items += 1;
            summary.messages += 1;
            continue;
        }
        builder.out.truncate(item_start);
        if builder.is_empty() {
            summary.dropped_too_large += 1;
            continue;
        }
        builder.next_frame(&mut summary);
        let item_start = builder.out.len();
        builder.out.put_u8(ITEM_MESSAGE);
        put_envelope(builder.out, env);
        if builder.frame_len() <= frame_bytes_max {
            builder.items += 1;
            summary.messages += 1;
        } else {
            builder.out.truncate(item_start);
            summary.dropped_too_large += 1;
        }
    }
    builder.close(&mut summary);
    summary
}

/// Tracks the frame being filled by [`encode_frames`].
struct FrameBuilder<'a> {
    out: &'a mut BytesMut,
    frame_bytes_max: usize,
    start: usize,
    items: usize,
}

impl<'a> FrameBuilder<'a> {
    fn new(out: &'a mut BytesMut, frame_bytes_max: usize) -> Self {
        let mut builder = FrameBuilder {
            out,
            frame_bytes_max,
            start: 0,
            items: 0,
        };
        builder.open();
        builder
    }

    fn open(&mut self) {
        self.start = frame::begin(self.out);
        self.out.put_u8(CODEC_VERSION);
        self.items = 0;
    }

    fn frame_len(&self) -> usize {
        self.out.len() - self.start
    }

    fn room(&self) -> usize {
        self.frame_bytes_max.saturating_sub(self.frame_len())
    }

    fn is_empty(&self) -> bool {
        self.items == 0
    }

    fn close(&mut self, summary: &mut EncodeSummary) {
        if self.items == 0 {
            self.out.truncate(self.start);
            return;
        }
        // Every item was checked against the limit as it was added.
        match frame::finish(self.out, self.start, FrameKind::Raft, self.frame_bytes_max) {
            Ok(_) => summary.frames += 1,
            Err(_) => debug_assert!(false, "an encoded frame exceeded its limit"),
        }
    }

    fn next_frame(&mut self, summary: &mut EncodeSummary) {
        self.close(summary);
        self.open();
    }
}

/// Encodes one message on its own (tests, tools; frames use
/// [`encode_frames`]).
pub fn encode_message(env: &RaftEnvelope) -> Bytes {
    let mut out = BytesMut::with_capacity(estimated_bytes(env));
    put_envelope(&mut out, env);
    out.freeze()
}

/// Decodes what [`encode_message`] produced; trailing bytes are an error.
pub fn decode_message(bytes: Bytes) -> Result<RaftEnvelope, CodecError> {
    let mut reader = Reader::new(bytes);
    let env = reader.envelope()?;
    reader.finish()?;
    Ok(env)
}

/// Decodes the payload of a `Raft` frame.
pub fn decode_batch(payload: Bytes) -> Result<DecodedBatch, CodecError> {
    let mut reader = Reader::new(payload);
    let version = reader.u8("the codec version")?;
    if version != CODEC_VERSION {
        return Err(CodecError::UnsupportedVersion(version));
    }
    let mut batch = DecodedBatch {
        // Each item is at least a few bytes; never trust more than that.
        messages: Vec::with_capacity(reader.remaining().min(4096)),
        ..DecodedBatch::default()
    };
    while reader.remaining() > 0 {
        match reader.u8("an item tag")? {
            ITEM_MESSAGE => batch.messages.push(reader.envelope()?),
            ITEM_HEARTBEATS => {
                let count = reader.u32_le("a heartbeat count")? as usize;
                // A tuple takes at least six bytes.
                batch.messages.reserve(count.min(reader.remaining() / 6));
                for _ in 0..count {
                    batch.messages.push(reader.heartbeat_tuple()?);
                }
                batch.heartbeat_items += 1;
                batch.heartbeats_coalesced += count;
            }
            tag => return Err(CodecError::UnknownTag { what: "item", tag }),
        }
    }
    Ok(batch)
}

/// The bytes a queued message is charged in the per-peer byte budget: its
/// payloads plus a fixed allowance for the header fields.
pub fn estimated_bytes(env: &RaftEnvelope) -> usize {
    const HEADER: usize = 48;
    HEADER
        + match &env.message.body {
            MessageBody::Append { entries, .. } => entries.iter().map(|e| e.data.len() + 24).sum(),
            MessageBody::InstallSnapshot { snapshot } => {
                snapshot.data.len()
                    + 10 * (snapshot.meta.conf_state.voters.len()
                        + snapshot.meta.conf_state.learners.len())
            }
            MessageBody::ReadIndex { context } | MessageBody::ReadIndexResponse { context, .. } => {
                context.len()
            }
            _ => 0,
        }
}

// ---- encoding ----

fn put_varint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

fn put_bytes(out: &mut BytesMut, data: &[u8]) {
    put_varint(out, data.len() as u64);
    out.put_slice(data);
}

fn flags(bits: &[bool]) -> u8 {
    bits.iter()
        .enumerate()
        .fold(0u8, |acc, (i, &b)| acc | (u8::from(b) << i))
}

fn put_heartbeat_tuple(out: &mut BytesMut, env: &RaftEnvelope) {
    // Flags first: they decide whether a commit index follows.
    let msg = &env.message;
    let (flags, commit, seq) = match msg.body {
        MessageBody::Heartbeat {
            commit,
            seq,
            quiesce,
        } => (
            if quiesce { HEARTBEAT_FLAG_QUIESCE } else { 0 },
            Some(commit),
            seq,
        ),
        MessageBody::HeartbeatResponse { seq } => (HEARTBEAT_FLAG_RESPONSE, None, seq),
        _ => {
            debug_assert!(false, "only heartbeats are coalesced");
            return;
        }
    };
    out.put_u8(flags);
    put_varint(out, env.range_id);
    put_varint(out, msg.from);
    put_varint(out, msg.to);
    put_varint(out, msg.term);
    if let Some(commit) = commit {
        put_varint(out, commit);
    }
    put_varint(out, seq);
}

fn put_envelope(out: &mut BytesMut, env: &RaftEnvelope) {
    let msg = &env.message;
    put_varint(out, env.range_id);
    put_varint(out, msg.from);
    put_varint(out, msg.to);
    put_varint(out, msg.term);
    match &msg.body {
        MessageBody::RequestVote {
            pre,
            last_index,
            last_term,
            transfer,
        } => {
            out.put_u8(BODY_REQUEST_VOTE);
            out.put_u8(flags(&[*pre, *transfer]));
            put_varint(out, *last_index);
            put_varint(out, *last_term);
        }
        MessageBody::RequestVoteResponse { pre, reject } => {
            out.put_u8(BODY_REQUEST_VOTE_RESPONSE);
            out.put_u8(flags(&[*pre, *reject]));
        }
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            out.put_u8(BODY_APPEND);
            put_varint(out, *prev_index);
            put_varint(out, *prev_term);
            put_varint(out, *commit);
            put_varint(out, entries.len() as u64);
            for entry in entries {
                put_varint(out, entry.term);
                put_varint(out, entry.index);
                out.put_u8(entry.kind.to_u8());
                put_bytes(out, &entry.data);
            }
        }
        MessageBody::AppendResponse {
            reject,
            index,
            hint_index,
            hint_term,
        } => {
            out.put_u8(BODY_APPEND_RESPONSE);
            out.put_u8(flags(&[*reject]));
            put_varint(out, *index);
            put_varint(out, *hint_index);
            put_varint(out, *hint_term);
        }
        MessageBody::Heartbeat {
            commit,
            seq,
            quiesce,
        } => {
            out.put_u8(BODY_HEARTBEAT);
            put_varint(out, *commit);
            put_varint(out, *seq);
            out.put_u8(flags(&[*quiesce]));
        }
        MessageBody::HeartbeatResponse { seq } => {
            out.put_u8(BODY_HEARTBEAT_RESPONSE);
            put_varint(out, *seq);
        }
        MessageBody::InstallSnapshot { snapshot } => {
            out.put_u8(BODY_INSTALL_SNAPSHOT);
            put_varint(out, snapshot.meta.index);
            put_varint(out, snapshot.meta.term);
            for list in [
                &snapshot.meta.conf_state.voters,
                &snapshot.meta.conf_state.learners,
            ] {
                put_varint(out, list.len() as u64);
                for id in list {
                    put_varint(out, *id);
                }
            }
            put_bytes(out, &snapshot.data);
        }
        MessageBody::TimeoutNow => out.put_u8(BODY_TIMEOUT_NOW),
        MessageBody::NotMember => out.put_u8(BODY_NOT_MEMBER),
        MessageBody::ReadIndex { context } => {
            out.put_u8(BODY_READ_INDEX);
            put_bytes(out, context);
        }
        MessageBody::ReadIndexResponse { context, index } => {
            out.put_u8(BODY_READ_INDEX_RESPONSE);
            put_bytes(out, context);
            put_varint(out, *index);
        }
    }
}

// ---- decoding ----

/// A cursor over a frame payload. Byte strings come out as slices of the
/// payload (no copy).
struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn new(buf: Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn finish(&self) -> Result<(), CodecError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(CodecError::TrailingBytes(n)),
        }
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, CodecError> {
        let byte = *self.buf.get(self.pos).ok_or(CodecError::Truncated(what))?;
        self.pos += 1;
        Ok(byte)
    }

    fn u32_le(&mut self, what: &'static str) -> Result<u32, CodecError> {
        let raw = self
            .buf
            .get(self.pos..self.pos + 4)
            .ok_or(CodecError::Truncated(what))?;
        let mut four = [0u8; 4];
        four.copy_from_slice(raw);
        self.pos += 4;
        Ok(u32::from_le_bytes(four))
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, CodecError> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.u8(what)?;
            // The tenth byte may only carry the single top bit of a u64.
            if shift == 63 && byte > 1 {
                return Err(CodecError::VarintOverflow);
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CodecError::VarintOverflow)
    }

    fn bytes(&mut self, what: &'static str) -> Result<Bytes, CodecError> {
        let len = self.varint(what)?;
        // Checked against what is present before slicing: no allocation.
        if len > self.remaining() as u64 {
            return Err(CodecError::Truncated(what));
        }
        let len = len as usize;
        let out = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(out)
    }

    fn flags<const N: usize>(&mut self, what: &'static str) -> Result<[bool; N], CodecError> {
        let byte = self.u8(what)?;
        if u32::from(byte) >> N != 0 {
            return Err(CodecError::Malformed("unknown flag bits"));
        }
        let mut out = [false; N];
        for (i, bit) in out.iter_mut().enumerate() {
            *bit = byte & (1 << i) != 0;
        }
        Ok(out)
    }

    /// A count of elements that each take at least `min_bytes`: refused if
    /// the rest of the input cannot possibly hold them.
    fn count(&mut self, what: &'static str, min_bytes: usize) -> Result<usize, CodecError> {
        let count = self.varint(what)?;
        if count > (self.remaining() / min_bytes) as u64 {
            return Err(CodecError::Truncated(what));
        }
        Ok(count as usize)
    }

    fn header(&mut self) -> Result<(u64, u64, u64, u64), CodecError> {
        Ok((
            self.varint("a range id")?,
            self.varint("a sender")?,
            self.varint("a recipient")?,
            self.varint("a term")?,
        ))
    }

    fn heartbeat_tuple(&mut self) -> Result<RaftEnvelope, CodecError> {
        let flags = self.u8("heartbeat flags")?;
        if flags & !(HEARTBEAT_FLAG_RESPONSE | HEARTBEAT_FLAG_QUIESCE) != 0
            || flags == HEARTBEAT_FLAG_RESPONSE | HEARTBEAT_FLAG_QUIESCE
        {
            return Err(CodecError::Malformed("unknown heartbeat flag bits"));
        }
        let (range_id, from, to, term) = self.header()?;
        let body = if flags & HEARTBEAT_FLAG_RESPONSE != 0 {
            MessageBody::HeartbeatResponse {
                seq: self.varint("a heartbeat seq")?,
            }
        } else {
            MessageBody::Heartbeat {
                commit: self.varint("a heartbeat commit")?,
                seq: self.varint("a heartbeat seq")?,
                quiesce: flags & HEARTBEAT_FLAG_QUIESCE != 0,
            }
        };
        Ok(RaftEnvelope {
            range_id,
            message: Message {
                from,
                to,
                term,
                body,
            },
        })
    }

    fn envelope(&mut self) -> Result<RaftEnvelope, CodecError> {
        let (range_id, from, to, term) = self.header()?;
        let body = match self.u8("a body tag")? {
            BODY_REQUEST_VOTE => {
                let [pre, transfer] = self.flags("vote flags")?;
                MessageBody::RequestVote {
                    pre,
                    last_index: self.varint("last_index")?,
                    last_term: self.varint("last_term")?,
                    transfer,
                }
            }
            BODY_REQUEST_VOTE_RESPONSE => {
                let [pre, reject] = self.flags("vote response flags")?;
                MessageBody::RequestVoteResponse { pre, reject }
            }
            BODY_APPEND => {
                let prev_index = self.varint("prev_index")?;
                let prev_term = self.varint("prev_term")?;
                let commit = self.varint("commit")?;
                // term, index, kind and length: at least four bytes each.
                let count = self.count("an entry count", 4)?;
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    let term = self.varint("an entry term")?;
                    let index = self.varint("an entry index")?;
                    let code = self.u8("an entry kind")?;
                    let kind = EntryKind::from_u8(code).ok_or(CodecError::UnknownTag {
                        what: "entry kind",
                        tag: code,
                    })?;
                    let data = self.bytes("entry data")?;
                    entries.push(Entry {
                        term,
                        index,
                        kind,
                        data,
                    });
                }
                MessageBody::Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit,
                }
            }
            BODY_APPEND_RESPONSE => {
                let [reject] = self.flags("append response flags")?;
                MessageBody::AppendResponse {
                    reject,
                    index: self.varint("index")?,
                    hint_index: self.varint("hint_index")?,
                    hint_term: self.varint("hint_term")?,
                }
            }
            BODY_HEARTBEAT => {
                let commit = self.varint("commit")?;
                let seq = self.varint("seq")?;
                let [quiesce] = self.flags("heartbeat flags")?;
                MessageBody::Heartbeat {
                    commit,
                    seq,
                    quiesce,
                }
            }
            BODY_HEARTBEAT_RESPONSE => MessageBody::HeartbeatResponse {
                seq: self.varint("seq")?,
            },
            BODY_INSTALL_SNAPSHOT => {
                let index = self.varint("snapshot index")?;
                let term = self.varint("snapshot term")?;
                let mut lists = [Vec::new(), Vec::new()];
                for list in lists.iter_mut() {
                    let count = self.count("a replica count", 1)?;
                    list.reserve_exact(count);
                    for _ in 0..count {
                        list.push(self.varint("a replica id")?);
                    }
                }
                let [voters, learners] = lists;
                let data = self.bytes("snapshot data")?;
                MessageBody::InstallSnapshot {
                    snapshot: Snapshot {
                        meta: SnapshotMeta {
                            index,
                            term,
                            conf_state: ConfState { voters, learners },
                        },
                        data,
                    },
                }
            }
            BODY_TIMEOUT_NOW => MessageBody::TimeoutNow,
            BODY_NOT_MEMBER => MessageBody::NotMember,
            BODY_READ_INDEX => MessageBody::ReadIndex {
                context: self.bytes("read context")?,
            },
            BODY_READ_INDEX_RESPONSE => MessageBody::ReadIndexResponse {
                context: self.bytes("read context")?,
                index: self.varint("read index")?,
            },
            tag => {
                return Err(CodecError::UnknownTag {
                    what: "message body",
                    tag,
                })
            }
        };
        Ok(RaftEnvelope {
            range_id,
            message: Message {
                from,
                to,
                term,
                body,
            },
        })
    }
}
