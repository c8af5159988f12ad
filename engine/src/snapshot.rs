//! Snapshots for followers that fell behind the leader's log compaction:
//! the storage crate's range reader becomes the router's
//! [`SnapshotSource`], and what the router stages on the receiver is
//! applied through the storage crate's writer.
//!
//! The Raft snapshot that goes with the data is taken at the same moment as
//! the RocksDB point-in-time snapshot (the range's applied index and term
//! and its configuration then), so the follower's state machine and its
//! Raft log agree exactly: nothing is applied twice, nothing skipped. The
//! data travels first; the Raft `InstallSnapshot` message follows once the
//! receiver reported the data durable, and a receiver steps that message
//! only if its state store already holds the data at that index.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flotilla_raftgroup::{ConfState, SnapshotMeta};
use flotilla_router::snapshot::{SnapshotSink, SnapshotSource, SourceError, StagedSnapshot};
use flotilla_router::RangeId;
use flotilla_storage::state::{
    SnapshotChunk, SnapshotHeader, SnapshotReader, SnapshotTrailer, StateStore,
};
use parking_lot::RwLock;

use crate::error::Error;
use crate::node::{Msg, Shards};

const HEADER_VERSION: u8 = 1;
const CHUNK_DATA: u8 = 0;
const CHUNK_TRAILER: u8 = 1;

/// The Raft part of a snapshot header plus the storage header.
pub(crate) struct RangeSnapshotHeader {
    pub raft: SnapshotMeta,
    pub storage: SnapshotHeader,
}

impl RangeSnapshotHeader {
    fn encode(&self) -> Bytes {
        let storage = self.storage.encode();
        let conf = &self.raft.conf_state;
        let mut buf = BytesMut::new();
        buf.put_u8(HEADER_VERSION);
        buf.put_u64_le(self.raft.index);
        buf.put_u64_le(self.raft.term);
        buf.put_u32_le(conf.voters.len() as u32);
        conf.voters.iter().for_each(|v| buf.put_u64_le(*v));
        buf.put_u32_le(conf.learners.len() as u32);
        conf.learners.iter().for_each(|v| buf.put_u64_le(*v));
        buf.put_u32_le(storage.len() as u32);
        buf.put_slice(&storage);
        buf.freeze()
    }

    pub(crate) fn decode(data: &[u8]) -> Result<RangeSnapshotHeader, Error> {
        let bad = |what: &str| Error::Storage(format!("snapshot header: {what}"));
        let mut buf = data;
        if buf.remaining() < 21 || buf.get_u8() != HEADER_VERSION {
            return Err(bad("truncated or unknown version"));
        }
        let index = buf.get_u64_le();
        let term = buf.get_u64_le();
        let ids = |buf: &mut &[u8]| -> Result<Vec<u64>, Error> {
            if buf.remaining() < 4 {
                return Err(bad("truncated"));
            }
            let n = buf.get_u32_le() as usize;
            if buf.remaining() < n.saturating_mul(8) {
                return Err(bad("truncated member list"));
            }
            Ok((0..n).map(|_| buf.get_u64_le()).collect())
        };
        let voters = ids(&mut buf)?;
        let learners = ids(&mut buf)?;
        if buf.remaining() < 4 {
            return Err(bad("truncated"));
        }
        let len = buf.get_u32_le() as usize;
        if buf.remaining() != len {
            return Err(bad("storage header length"));
        }
        let storage = SnapshotHeader::decode(buf).map_err(|e| bad(&e.to_string()))?;
        Ok(RangeSnapshotHeader {
            raft: SnapshotMeta {
                index,
                term,
                conf_state: ConfState { voters, learners },
            },
            storage,
        })
    }
}

/// A range's data read from a RocksDB point-in-time snapshot, chunk by
/// chunk, ending with the storage trailer.
pub(crate) struct RangeSnapshotSource {
    reader: SnapshotReader,
    header: Option<Bytes>,
    trailer_sent: bool,
}

impl RangeSnapshotSource {
    /// Open a reader of the range now and describe it for Raft.
    pub(crate) fn open(
        store: &StateStore,
        range_id: RangeId,
        start: &[u8],
        end: &[u8],
        conf_state: ConfState,
    ) -> Result<(RangeSnapshotSource, SnapshotMeta), Error> {
        let reader = store.snapshot_reader(range_id, start, end)?;
        let storage = reader.header().clone();
        let raft = SnapshotMeta {
            index: storage.index_applied,
            term: storage.term_applied,
            conf_state,
        };
        let header = RangeSnapshotHeader {
            raft: raft.clone(),
            storage,
        }
        .encode();
        Ok((
            RangeSnapshotSource {
                reader,
                header: Some(header),
                trailer_sent: false,
            },
            raft,
        ))
    }
}

fn tagged(tag: u8, body: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(body.len() + 1);
    buf.put_u8(tag);
    buf.put_slice(body);
    buf.freeze()
}

impl SnapshotSource for RangeSnapshotSource {
    fn header(&mut self) -> Result<Bytes, SourceError> {
        self.header
            .take()
            .ok_or_else(|| "header already taken".into())
    }

    fn next_chunk(&mut self) -> Result<Option<Bytes>, SourceError> {
        if let Some(chunk) = self.reader.next_chunk()? {
            return Ok(Some(tagged(CHUNK_DATA, &chunk.encode())));
        }
        if self.trailer_sent {
            return Ok(None);
        }
        self.trailer_sent = true;
        let trailer = self
            .reader
            .trailer()
            .ok_or("snapshot reader ended without a trailer")?;
        Ok(Some(tagged(CHUNK_TRAILER, &trailer.encode())))
    }
}

/// Apply a staged snapshot to the state store (clears the range, writes
/// the chunks, sets the applied index and descriptor atomically at the
/// end). Returns its header. On any failure the writer is aborted, so the
/// range is not left busy and a later snapshot can be applied.
pub(crate) fn apply_staged(
    store: &StateStore,
    staged: &StagedSnapshot,
) -> Result<RangeSnapshotHeader, Error> {
    let fail = |e: &dyn std::fmt::Display| Error::Storage(format!("staged snapshot: {e}"));
    let mut reader = staged.reader().map_err(|e| fail(&e))?;
    let header = RangeSnapshotHeader::decode(&reader.header().map_err(|e| fail(&e))?)?;
    let mut writer = store.snapshot_writer(header.storage.clone())?;
    let mut write_all = || -> Result<SnapshotTrailer, Error> {
        loop {
            let Some(chunk) = reader.next_chunk().map_err(|e| fail(&e))? else {
                return Err(Error::Storage(
                    "staged snapshot ended without a trailer".into(),
                ));
            };
            match chunk.first() {
                Some(&CHUNK_DATA) => {
                    // The transfer splits a source chunk larger than its
                    // chunk size into raw pieces: join them back.
                    let mut frame = BytesMut::from(&chunk[1..]);
                    let need = data_frame_len(&frame)?;
                    while frame.len() < need {
                        let Some(more) = reader.next_chunk().map_err(|e| fail(&e))? else {
                            return Err(Error::Storage(
                                "staged snapshot ended inside a chunk".into(),
                            ));
                        };
                        frame.extend_from_slice(&more);
                    }
                    writer.write_chunk(&SnapshotChunk::decode(&frame)?)?;
                }
                Some(&CHUNK_TRAILER) => return Ok(SnapshotTrailer::decode(&chunk[1..])?),
                _ => return Err(Error::Storage("staged snapshot: unknown chunk kind".into())),
            }
        }
    };
    match write_all() {
        Ok(trailer) => {
            writer.finish(&trailer)?;
            Ok(header)
        }
        Err(e) => {
            let _ = writer.abort();
            Err(e)
        }
    }
}

/// Length of a storage chunk frame (`[magic 4][seq 8][len 4][crc 4][data]`)
/// from its first bytes.
fn data_frame_len(start: &[u8]) -> Result<usize, Error> {
    const HEADER: usize = 20;
    if start.len() < HEADER {
        return Err(Error::Storage(format!(
            "staged snapshot: chunk piece of {} bytes is shorter than a chunk header",
            start.len()
        )));
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&start[12..16]);
    Ok(HEADER + u32::from_le_bytes(len) as usize)
}

/// The receiving side as the router's scheduler sees it.
pub(crate) struct EngineSink {
    /// Applied index per local range, kept by the raft loop.
    pub applied: Arc<RwLock<HashMap<RangeId, u64>>>,
    pub shards: Shards,
}

impl SnapshotSink for EngineSink {
    fn index_known(&self, range_id: RangeId) -> Option<u64> {
        self.applied.read().get(&range_id).copied()
    }

    /// A snapshot of a range with no replica here may create one (a new
    /// member); the raft loop decides (see `Node::create_from_snapshot`).
    fn on_staged(&self, snapshot: StagedSnapshot) -> Result<(), SourceError> {
        let shard = self.shards.placement.shard_of(snapshot.meta().range_id);
        self.shards.inboxes[shard]
            .try_send(Msg::SnapshotStaged(Box::new(snapshot)))
            .map_err(|_| "node mailbox full".into())
    }
}
