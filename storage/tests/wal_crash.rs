//! Crash consistency: the last segment cut at every byte of its final
//! batch, zero-filled, bit-flipped; damage before the tail refuses to open
//! (naming file and offset) unless salvage is chosen.

mod wal_common;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use flotilla_raftgroup::{ConfState, HardState};
use flotilla_storage::wal::{Wal, WalConfig, WalError, WriteBatch};
use wal_common::{copy_dir, dump, entries, fast_tempdir, segments, GroupDump};

type Dump = BTreeMap<u64, GroupDump>;

struct Written {
    /// State after each batch: `states[k]` = after `k` batches.
    states: Vec<Dump>,
    /// `(segment, offset)` where batch `k` was written.
    positions: Vec<(PathBuf, u64)>,
    /// End of the final batch.
    end: (PathBuf, u64),
}

fn config() -> WalConfig {
    WalConfig {
        segment_bytes_target: 16 << 10,
        ..WalConfig::small_for_tests()
    }
}

/// Writes `count` batches, the last of which uses every kind of op and is
/// `final_entry_bytes` large per entry.
fn write_log(dir: &Path, count: usize, final_entry_bytes: usize) -> Written {
    let wal = Wal::open(dir, config()).unwrap();
    let mut states = vec![dump(&wal)];
    let mut positions = Vec::new();
    let mut next_index = [1u64; 4];
    for k in 0..count {
        let mut batch = WriteBatch::new();
        let last = k + 1 == count;
        if last {
            // Every kind of op, several groups.
            batch
                .append(1, &entries(next_index[1], 2, 3, final_entry_bytes, 9))
                .unwrap();
            batch
                .append(2, &entries(next_index[2], 1, 3, final_entry_bytes, 8))
                .unwrap();
            batch.set_hard_state(
                1,
                HardState {
                    term: 3,
                    vote: 2,
                    commit: next_index[1],
                },
            );
            batch.set_conf_state(2, ConfState::with_voters([1, 2, 5]));
            batch.compact(1, next_index[1] - 1, 2);
            batch.install_snapshot(3, 500, 7);
        } else {
            let group = 1 + (k % 3) as u64;
            let term = if k < count / 2 { 1 } else { 2 };
            batch
                .append(
                    group,
                    &entries(next_index[group as usize], 2, term, 40, k as u64),
                )
                .unwrap();
            next_index[group as usize] += 2;
            batch.set_hard_state(
                group,
                HardState {
                    term,
                    vote: 1,
                    commit: k as u64,
                },
            );
        }
        positions.push(wal.write_position());
        wal.write(&batch, true).unwrap();
        states.push(dump(&wal));
    }
    let end = wal.write_position();
    drop(wal);
    // What was written is what is recovered.
    let reopened = Wal::open(dir, config()).unwrap();
    assert_eq!(&dump(&reopened), states.last().unwrap());
    drop(reopened);
    // Reopening created a new segment: remove it so the final batch's
    // segment is the last one again (a crash right after the final write).
    let created = segments(dir).pop().unwrap();
    assert!(created > end.0);
    std::fs::remove_file(created).unwrap();
    Written {
        states,
        positions,
        end,
    }
}

fn reopen(dir: &Path, salvage: bool) -> Result<Dump, WalError> {
    let wal = Wal::open(
        dir,
        WalConfig {
            salvage,
            ..config()
        },
    )?;
    Ok(dump(&wal))
}

fn flip(path: &Path, offset: u64, bit: u8) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    byte[0] ^= 1 << bit;
    file.write_all_at(&byte, offset).unwrap();
}

fn in_copy<T>(template: &Path, f: impl FnOnce(&Path) -> T) -> T {
    let scratch = fast_tempdir();
    copy_dir(template, scratch.path());
    f(scratch.path())
}

#[test]
fn torn_tail_at_every_byte_of_the_final_batch() {
    let template = fast_tempdir();
    let written = write_log(template.path(), 12, 48);
    let (final_path, start) = written.positions.last().unwrap().clone();
    assert_eq!(
        final_path, written.end.0,
        "final batch must not straddle a rotation"
    );
    let end = written.end.1;
    let name = final_path.file_name().unwrap().to_owned();
    let before = &written.states[written.states.len() - 2];
    let after = written.states.last().unwrap();
    assert!(end - start > 200, "final batch is {} bytes", end - start);
    for cut in start..=end {
        for zero_fill in [false, true] {
            let mut unchanged = false;
            let got = in_copy(template.path(), |dir| {
                let path = dir.join(&name);
                let original = std::fs::read(&path).unwrap();
                unchanged =
                    zero_fill && original[cut as usize..end as usize].iter().all(|&b| b == 0);
                let file = OpenOptions::new().write(true).open(&path).unwrap();
                if zero_fill {
                    // Preallocated file: the tail after the cut is zeros.
                    let len = file.metadata().unwrap().len();
                    file.write_all_at(&vec![0u8; (len - cut) as usize], cut)
                        .unwrap();
                } else {
                    file.set_len(cut).unwrap();
                }
                reopen(dir, false)
                    .unwrap_or_else(|e| panic!("cut {cut} zero_fill {zero_fill}: {e}"))
            });
            // Zero-filling bytes that were zero anyway changes nothing.
            let expected = if cut == end || unchanged {
                after
            } else {
                before
            };
            // A cut inside the final record's padding keeps the record.
            if !zero_fill && cut + 8 > end && &got == after {
                continue;
            }
            assert_eq!(
                &got, expected,
                "cut at {cut} (record {start}..{end}), zero_fill {zero_fill}"
            );
        }
    }
}

#[test]
fn bit_flips_in_the_final_batch_drop_only_it() {
    let template = fast_tempdir();
    let written = write_log(template.path(), 10, 48);
    let (path, start) = written.positions.last().unwrap().clone();
    let name = path.file_name().unwrap().to_owned();
    let before = &written.states[written.states.len() - 2];
    for offset in start..written.end.1 {
        let got = in_copy(template.path(), |dir| {
            flip(&dir.join(&name), offset, (offset % 8) as u8);
            reopen(dir, false).unwrap_or_else(|e| panic!("flip at {offset}: {e}"))
        });
        assert_eq!(&got, before, "flip at {offset}");
    }
}

#[test]
fn bit_flips_before_the_tail_refuse_to_open_naming_file_and_offset() {
    let template = fast_tempdir();
    let written = write_log(template.path(), 10, 48);
    let count = written.positions.len();
    let (path, start) = written.positions[count - 3].clone();
    let (next_path, end) = written.positions[count - 2].clone();
    assert_eq!(path, next_path);
    let name = path.file_name().unwrap().to_owned();
    for offset in start..end {
        let (err, salvaged) = in_copy(template.path(), |dir| {
            flip(&dir.join(&name), offset, ((offset * 5) % 8) as u8);
            let err = reopen(dir, false).expect_err("corruption in the middle must refuse to open");
            // The operator's explicit choice: cut at the first bad record.
            let salvaged = reopen(dir, true).unwrap();
            (err, salvaged)
        });
        match err {
            WalError::Corrupt {
                path: bad,
                offset: at,
                ..
            } => {
                assert_eq!(bad.file_name(), Some(name.as_os_str()), "flip at {offset}");
                assert_eq!(at, start, "flip at {offset}");
            }
            other => panic!("flip at {offset}: unexpected error {other}"),
        }
        assert_eq!(
            salvaged,
            written.states[count - 3],
            "salvage after flip at {offset}"
        );
    }
}

#[test]
fn damage_in_a_sealed_segment_is_corruption() {
    let template = fast_tempdir();
    let written = write_log(template.path(), 400, 48);
    let files = segments(template.path());
    assert!(
        files.len() >= 4,
        "want several segments, got {}",
        files.len()
    );
    // A batch in the first sealed segment after the oldest one.
    let (k, (path, offset)) = written
        .positions
        .iter()
        .enumerate()
        .find(|(_, (p, off))| *p == files[1] && *off > 64)
        .map(|(k, (p, off))| (k, (p.clone(), *off)))
        .unwrap();
    let name = path.file_name().unwrap().to_owned();
    for delta in [0u64, 5, 9, 15, 20, 40] {
        let (err, salvaged) = in_copy(template.path(), |dir| {
            flip(&dir.join(&name), offset + delta, 3);
            (reopen(dir, false).unwrap_err(), reopen(dir, true).unwrap())
        });
        match err {
            WalError::Corrupt {
                path: bad,
                offset: at,
                ..
            } => {
                assert_eq!(bad.file_name(), Some(name.as_os_str()));
                assert_eq!(at, offset);
            }
            other => panic!("unexpected {other}"),
        }
        assert_eq!(salvaged, written.states[k]);
    }
    // Truncating a sealed segment is corruption too.
    let err = in_copy(template.path(), |dir| {
        let file = OpenOptions::new()
            .write(true)
            .open(dir.join(&name))
            .unwrap();
        file.set_len(offset + 10).unwrap();
        reopen(dir, false).unwrap_err()
    });
    assert!(matches!(err, WalError::Corrupt { .. }), "{err}");
}

#[test]
fn torn_segment_creation_is_dropped() {
    let template = fast_tempdir();
    let written = write_log(template.path(), 5, 48);
    for keep in [0u64, 10, 32, 40, 60] {
        let got = in_copy(template.path(), |dir| {
            // A new segment whose header / checkpoint never fully reached disk.
            let mut next = segments(dir)
                .pop()
                .unwrap()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            let seq = u64::from_str_radix(&next[..16], 16).unwrap() + 1;
            next = format!("{seq:016x}.wal");
            let valid = {
                let wal = Wal::open(dir.join("probe"), config()).unwrap();
                std::fs::read(wal.write_position().0).unwrap()
            };
            std::fs::remove_dir_all(dir.join("probe")).unwrap();
            let mut torn = vec![0u8; 4096];
            let keep = keep.min(valid.len() as u64) as usize;
            torn[..keep].copy_from_slice(&valid[..keep]);
            std::fs::write(dir.join(next), torn).unwrap();
            reopen(dir, false).unwrap()
        });
        assert_eq!(&got, written.states.last().unwrap(), "keep {keep}");
    }
}
