//! The replicated state machine of a simulated replica (the payloads it
//! applied), its snapshot codec, and the fingerprint entries are compared by.

use bytes::Bytes;
use flotilla_raftgroup::{Entry, Index, Snapshot};

/// The payloads a replica applied. It is durable: it survives a crash with
/// its applied index, as the engine's state store does.
#[derive(Clone, Default, Debug)]
pub struct StateMachine {
    pub applied: Index,
    /// (index, payload) of every non-empty normal entry applied.
    pub entries: Vec<(Index, Bytes)>,
}

impl StateMachine {
    /// The state as it was when `index` was applied (`index <= applied`).
    pub fn at(&self, index: Index) -> StateMachine {
        StateMachine {
            applied: index.min(self.applied),
            entries: self
                .entries
                .iter()
                .filter(|(i, _)| *i <= index)
                .cloned()
                .collect(),
        }
    }

    pub fn encode(&self) -> Bytes {
        let mut out = Vec::new();
        out.extend_from_slice(&self.applied.to_le_bytes());
        for (index, data) in &self.entries {
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(data);
        }
        Bytes::from(out)
    }

    pub fn decode(data: &[u8]) -> StateMachine {
        let mut sm = StateMachine::default();
        if data.len() < 8 {
            return sm;
        }
        sm.applied = u64::from_le_bytes(data[0..8].try_into().expect("8 bytes"));
        let mut at = 8;
        while at + 12 <= data.len() {
            let index = u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"));
            let len =
                u32::from_le_bytes(data[at + 8..at + 12].try_into().expect("4 bytes")) as usize;
            at += 12;
            sm.entries
                .push((index, Bytes::copy_from_slice(&data[at..at + len])));
            at += len;
        }
        sm
    }

    /// Replace the state with a snapshot's.
    pub fn install(&mut self, snapshot: &Snapshot) {
        let mut restored = StateMachine::decode(&snapshot.data);
        restored.applied = snapshot.meta.index;
        *self = restored;
    }
}

/// The payload of proposal `id`.
pub fn payload(id: u64) -> Bytes {
    Bytes::from(id.to_le_bytes().to_vec())
}

/// Kind and payload of an entry, as compared across replicas.
pub fn entry_fingerprint(entry: &Entry) -> Bytes {
    let mut out = Vec::with_capacity(entry.data.len() + 1);
    out.push(entry.kind.to_u8());
    out.extend_from_slice(&entry.data);
    Bytes::from(out)
}
