//! Helpers shared by the WAL integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use flotilla_raftgroup::{ConfState, Entry, HardState, LogStore};
use flotilla_storage::wal::Wal;

/// Everything observable about one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDump {
    pub first: u64,
    pub last: u64,
    pub truncated: (u64, u64),
    pub hard_state: HardState,
    pub conf_state: ConfState,
    pub entries: Vec<Entry>,
}

pub fn dump(wal: &Wal) -> BTreeMap<u64, GroupDump> {
    let mut out = BTreeMap::new();
    for id in wal.groups() {
        let log = wal.group(id);
        let first = log.first_index().unwrap();
        let last = log.last_index().unwrap();
        let entries = log.entries(first, last + 1, u64::MAX).unwrap();
        assert_eq!(
            entries.len() as u64,
            last + 1 - first,
            "group {id}: entries missing"
        );
        for entry in &entries {
            assert_eq!(log.term(entry.index).unwrap(), entry.term);
        }
        let (hard_state, conf_state) = log.initial_state().unwrap();
        out.insert(
            id,
            GroupDump {
                first,
                last,
                truncated: log.truncated_state(),
                hard_state,
                conf_state,
                entries,
            },
        );
    }
    out
}

/// A temp dir on tmpfs when available: crash tests reopen the WAL
/// thousands of times and only test logic, not the disk.
pub fn fast_tempdir() -> tempfile::TempDir {
    if Path::new("/dev/shm").is_dir() {
        if let Ok(dir) = tempfile::tempdir_in("/dev/shm") {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for item in std::fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        std::fs::copy(item.path(), to.join(item.file_name())).unwrap();
    }
}

pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    out.sort();
    out
}

pub fn entries(first: u64, count: u64, term: u64, size: usize, salt: u64) -> Vec<Entry> {
    (first..first + count)
        .map(|i| {
            let data: Vec<u8> = (0..size)
                .map(|k| (i * 31 + k as u64 * 7 + salt) as u8)
                .collect();
            Entry::new(term, i, data)
        })
        .collect()
}
