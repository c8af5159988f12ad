//! Workloads (YCSB A–F, write-only, read-only) and the per-client op
//! stream: the same seed and client index always give the same sequence
//! of operations, keys and scan lengths.

use serde::{Deserialize, Serialize};

use crate::keys::{Distribution, KeyChooser};
use crate::rng::Rng;

/// A standard workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// YCSB A, update heavy: 50% read, 50% update, zipfian.
    A,
    /// YCSB B, read mostly: 95% read, 5% update, zipfian.
    B,
    /// YCSB C, read only: 100% read, zipfian.
    C,
    /// YCSB D, read latest: 95% read, 5% insert, latest.
    D,
    /// YCSB E, short ranges: 95% scan (1..=100 keys), 5% insert, zipfian.
    E,
    /// YCSB F, read-modify-write: 50% read, 50% read-modify-write, zipfian.
    F,
    /// 100% update (put of an existing key), uniform.
    WriteOnly,
    /// 100% read, uniform.
    ReadOnly,
}

/// The kinds of operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpKind {
    Read,
    Update,
    Insert,
    Scan,
    ReadModifyWrite,
}

impl OpKind {
    pub const ALL: [OpKind; 5] = [
        OpKind::Read,
        OpKind::Update,
        OpKind::Insert,
        OpKind::Scan,
        OpKind::ReadModifyWrite,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Update => "update",
            OpKind::Insert => "insert",
            OpKind::Scan => "scan",
            OpKind::ReadModifyWrite => "read-modify-write",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// Does the operation write (go through Raft and the WAL)?
    pub fn writes(self) -> bool {
        matches!(
            self,
            OpKind::Update | OpKind::Insert | OpKind::ReadModifyWrite
        )
    }
}

/// Proportions of each kind, in [`OpKind::ALL`] order, summing to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix(pub [f64; 5]);

impl Mix {
    pub fn proportion(&self, kind: OpKind) -> f64 {
        self.0[kind.index()]
    }

    /// Pick a kind for a uniform `u` in `[0, 1)`.
    pub fn pick(&self, u: f64) -> OpKind {
        let mut acc = 0.0;
        for kind in OpKind::ALL {
            acc += self.0[kind.index()];
            if u < acc {
                return kind;
            }
        }
        // Rounding: the last kind with a non-zero share.
        OpKind::ALL
            .into_iter()
            .rev()
            .find(|k| self.0[k.index()] > 0.0)
            .unwrap_or(OpKind::Read)
    }

    /// Is any share a write?
    pub fn writes(&self) -> bool {
        OpKind::ALL
            .iter()
            .any(|k| k.writes() && self.proportion(*k) > 0.0)
    }
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::A => "ycsb-a",
            Workload::B => "ycsb-b",
            Workload::C => "ycsb-c",
            Workload::D => "ycsb-d",
            Workload::E => "ycsb-e",
            Workload::F => "ycsb-f",
            Workload::WriteOnly => "write-only",
            Workload::ReadOnly => "read-only",
        }
    }

    /// Shares of read, update, insert, scan, read-modify-write.
    pub fn mix(self) -> Mix {
        match self {
            Workload::A => Mix([0.5, 0.5, 0.0, 0.0, 0.0]),
            Workload::B => Mix([0.95, 0.05, 0.0, 0.0, 0.0]),
            Workload::C => Mix([1.0, 0.0, 0.0, 0.0, 0.0]),
            Workload::D => Mix([0.95, 0.0, 0.05, 0.0, 0.0]),
            Workload::E => Mix([0.0, 0.0, 0.05, 0.95, 0.0]),
            Workload::F => Mix([0.5, 0.0, 0.0, 0.0, 0.5]),
            Workload::WriteOnly => Mix([0.0, 1.0, 0.0, 0.0, 0.0]),
            Workload::ReadOnly => Mix([1.0, 0.0, 0.0, 0.0, 0.0]),
        }
    }

    /// YCSB's request distribution for the workload.
    pub fn default_distribution(self) -> Distribution {
        match self {
            Workload::D => Distribution::Latest,
            Workload::WriteOnly | Workload::ReadOnly => Distribution::Uniform,
            _ => Distribution::Zipfian,
        }
    }
}

/// One planned operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    pub kind: OpKind,
    /// Record number of the key (the start key of a scan).
    pub record: u64,
    /// Keys a scan returns at most (0 for other kinds).
    pub scan_len: u32,
    /// Where in the shared value pool the written value starts.
    pub value_offset: u64,
}

/// The operations of one client. Inserted records are numbered
/// `records + k * clients + client` for the client's k-th insert, so
/// clients never collide and the sequence does not depend on timing.
/// `latest` reads go back from the client's own newest insert into the
/// pre-loaded records (a session that reads what it wrote recently); with
/// no inserts they prefer the highest pre-loaded records.
#[derive(Debug, Clone)]
pub struct OpStream {
    rng: Rng,
    mix: Mix,
    chooser: KeyChooser,
    client: u64,
    clients: u64,
    records: u64,
    inserts: u64,
    scan_max: u32,
    value_pool: u64,
}

impl OpStream {
    /// `chooser` is a clone of one built for the run (see [`KeyChooser::new`]).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        seed: u64,
        client: u64,
        clients: u64,
        mix: Mix,
        chooser: KeyChooser,
        records: u64,
        scan_max: u32,
        value_pool: u64,
    ) -> OpStream {
        OpStream {
            rng: Rng::for_client(seed, client),
            mix,
            chooser,
            client,
            clients: clients.max(1),
            records: records.max(1),
            inserts: 0,
            scan_max: scan_max.max(1),
            value_pool: value_pool.max(1),
        }
    }

    /// Records this client inserted so far.
    pub fn inserts(&self) -> u64 {
        self.inserts
    }

    fn inserted_record(&self, k: u64) -> u64 {
        self.records + k * self.clients + self.client
    }

    fn existing_record(&mut self) -> u64 {
        match self.chooser {
            KeyChooser::Latest(_) => {
                let newest = self.records + self.inserts;
                let offset = self.chooser.next(&mut self.rng, self.records, newest);
                if offset < self.inserts {
                    self.inserted_record(self.inserts - 1 - offset)
                } else {
                    self.records - 1 - (offset - self.inserts).min(self.records - 1)
                }
            }
            _ => self.chooser.next(&mut self.rng, self.records, self.records),
        }
    }

    /// The next operation.
    pub fn next_op(&mut self) -> Planned {
        let kind = self.mix.pick(self.rng.next_f64());
        let record = if kind == OpKind::Insert {
            let r = self.inserted_record(self.inserts);
            self.inserts += 1;
            r
        } else {
            self.existing_record()
        };
        let scan_len = if kind == OpKind::Scan {
            1 + self.rng.below(self.scan_max as u64) as u32
        } else {
            0
        };
        let value_offset = if kind.writes() {
            self.rng.below(self.value_pool)
        } else {
            0
        };
        Planned {
            kind,
            record,
            scan_len,
            value_offset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(w: Workload, seed: u64, client: u64) -> OpStream {
        let records = 10_000;
        OpStream::new(
            seed,
            client,
            8,
            w.mix(),
            KeyChooser::new(w.default_distribution(), records),
            records,
            100,
            1 << 20,
        )
    }

    #[test]
    fn mixes_sum_to_one_and_match_ycsb() {
        for w in [
            Workload::A,
            Workload::B,
            Workload::C,
            Workload::D,
            Workload::E,
            Workload::F,
            Workload::WriteOnly,
            Workload::ReadOnly,
        ] {
            let sum: f64 = w.mix().0.iter().sum();
            assert!((sum - 1.0).abs() < 1e-9, "{w:?}");
            let mut s = stream(w, 1, 0);
            let mut counts = [0u32; 5];
            let n = 20_000;
            for _ in 0..n {
                counts[s.next_op().kind.index()] += 1;
            }
            for kind in OpKind::ALL {
                let got = counts[kind.index()] as f64 / n as f64;
                let want = w.mix().proportion(kind);
                assert!((got - want).abs() < 0.02, "{w:?} {kind:?}: {got} vs {want}");
            }
        }
        assert!(Workload::A.mix().writes());
        assert!(!Workload::C.mix().writes());
        assert!(Workload::F.mix().writes());
    }

    #[test]
    fn same_seed_same_sequence_per_client() {
        for w in [Workload::A, Workload::D, Workload::E] {
            let a: Vec<Planned> = {
                let mut s = stream(w, 42, 3);
                (0..1000).map(|_| s.next_op()).collect()
            };
            let b: Vec<Planned> = {
                let mut s = stream(w, 42, 3);
                (0..1000).map(|_| s.next_op()).collect()
            };
            let other_client: Vec<Planned> = {
                let mut s = stream(w, 42, 4);
                (0..1000).map(|_| s.next_op()).collect()
            };
            let other_seed: Vec<Planned> = {
                let mut s = stream(w, 43, 3);
                (0..1000).map(|_| s.next_op()).collect()
            };
            assert_eq!(a, b);
            assert_ne!(a, other_client);
            assert_ne!(a, other_seed);
        }
    }

    #[test]
    fn inserts_are_disjoint_across_clients_and_latest_reads_them() {
        let mut seen = std::collections::HashSet::new();
        for client in 0..8 {
            let mut s = stream(Workload::D, 7, client);
            let mut read_inserted = 0;
            for _ in 0..5_000 {
                let op = s.next_op();
                match op.kind {
                    OpKind::Insert => {
                        assert!(op.record >= 10_000);
                        assert_eq!((op.record - 10_000) % 8, client);
                        assert!(seen.insert(op.record), "insert collision {}", op.record);
                    }
                    OpKind::Read => {
                        // Only keys that exist: pre-loaded or inserted by this client.
                        if op.record >= 10_000 {
                            assert_eq!((op.record - 10_000) % 8, client);
                            assert!((op.record - 10_000) / 8 < s.inserts());
                            read_inserted += 1;
                        }
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert!(
                read_inserted > 500,
                "latest must favour new records: {read_inserted}"
            );
        }
    }

    #[test]
    fn scans_have_lengths_in_range() {
        let mut s = stream(Workload::E, 1, 0);
        let mut max = 0;
        for _ in 0..5_000 {
            let op = s.next_op();
            if op.kind == OpKind::Scan {
                assert!((1..=100).contains(&op.scan_len));
                max = max.max(op.scan_len);
                assert!(op.record < 10_000);
            }
        }
        assert!(max > 90);
    }
}
