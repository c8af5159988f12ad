//! Crash consistency with real process kills.
//!
//! The test binary re-executes itself as the child (`state_crash_child_entry`
//! runs only when `FLOTILLA_STATE_CHILD` is set), so no helper binary is
//! needed. The parent SIGKILLs the child at random moments and, after each
//! kill, reopens the store and checks the invariant of DESIGN.md: the state
//! equals the application of exactly the log prefix `1..=applied`. Every
//! fourth kill it also simulates a power cut on a copy of the directory
//! (the newest RocksDB WAL file cut at a random byte), which is the case
//! where unsynced applies really are lost.

use bytes::Bytes;
use flotilla_storage::state::{StateConfig, StateStore};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ENV_CHILD: &str = "FLOTILLA_STATE_CHILD";
const ENV_DIR: &str = "FLOTILLA_STATE_CHILD_DIR";
const READY: &str = "FLOTILLA-CHILD-READY";

/// The expected contents of one range: key → value.
type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Ranges of the apply test and the key prefix of each.
const RANGES: [(u64, &str); 2] = [(1, "a/"), (2, "b/")];

/// Entry point of the child process; a no-op in a normal test run.
#[test]
fn state_crash_child_entry() {
    let Ok(mode) = std::env::var(ENV_CHILD) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(ENV_DIR).expect("child needs a directory"));
    match mode.as_str() {
        "apply" => child_apply_forever(&dir),
        "snapshot" => child_apply_snapshot(&dir),
        other => panic!("unknown child mode {other}"),
    }
    std::process::exit(0);
}

fn spawn_child(mode: &str, dir: &Path) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "state_crash_child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_CHILD, mode)
        .env(ENV_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    // Wait until the child has opened the store, so kills land in the work.
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains(READY) => break,
            Some(_) => continue,
            None => panic!("child exited before it was ready"),
        }
    }
    // Keep draining stdout in the background so the child never blocks.
    std::thread::spawn(move || for _ in lines {});
    child
}

fn ready() {
    use std::io::Write;
    println!("{READY}");
    let _ = std::io::stdout().flush();
}

/// A small deterministic PRNG (xorshift64*): the seed is printed, so a
/// failure can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ----- the command log ---------------------------------------------------

/// Command `i` (from 1) of a range: add `i` to counter `i % 7` (a
/// read-modify-write, so a double apply shows), and put or delete a slot.
fn apply_command(state: &mut Model, prefix: &str, i: u64) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let counter = format!("{prefix}ctr/{}", i % 7).into_bytes();
    let old = state
        .get(&counter)
        .map(|v| u64::from_le_bytes(v.as_slice().try_into().expect("8-byte counter")))
        .unwrap_or(0);
    let new = (old + i).to_le_bytes().to_vec();
    let mut writes = vec![(counter, Some(new))];
    if i % 10 == 3 {
        writes.push((
            format!("{prefix}slot/{:03}", (i * 7) % 500).into_bytes(),
            None,
        ));
    } else {
        writes.push((
            format!("{prefix}slot/{:03}", i % 500).into_bytes(),
            Some(i.to_le_bytes().to_vec()),
        ));
    }
    for (k, v) in &writes {
        match v {
            Some(v) => state.insert(k.clone(), v.clone()),
            None => state.remove(k),
        };
    }
    writes
}

fn read_prefix(store: &StateStore, prefix: &str) -> Model {
    let end = format!("{}{}", &prefix[..prefix.len() - 1], '0');
    store
        .scan(prefix.as_bytes(), end.as_bytes(), usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(k, v): (Bytes, Bytes)| (k.to_vec(), v.to_vec()))
        .collect()
}

fn child_apply_forever(dir: &Path) {
    let store = StateStore::open(dir, StateConfig::default()).unwrap();
    let mut applied = Vec::new();
    let mut states = Vec::new();
    for (range_id, prefix) in RANGES {
        applied.push(
            store
                .applied_state(range_id)
                .unwrap()
                .map_or(0, |a| a.index),
        );
        // The child's working state is what the store says, nothing else:
        // if the store held data beyond `applied`, re-applying would be
        // visible in the counters.
        states.push(read_prefix(&store, prefix));
    }
    ready();
    let mut rng = Rng(applied[0] * 31 + applied[1] + 1);
    loop {
        let mut batch = store.apply_batch();
        for (slot, (range_id, prefix)) in RANGES.iter().enumerate() {
            let count = 1 + rng.below(5);
            for _ in 0..count {
                applied[slot] += 1;
                for (k, v) in apply_command(&mut states[slot], prefix, applied[slot]) {
                    match v {
                        Some(v) => batch.put(*range_id, &k, &v),
                        None => batch.delete(*range_id, &k),
                    }
                }
            }
            batch.set_applied(*range_id, applied[slot], 1);
        }
        batch.commit().unwrap();
    }
}

#[test]
fn state_apply_is_exactly_once_across_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let seed = 0x5eed_0001_u64 ^ std::process::id() as u64;
    println!("seed {seed}");
    let mut rng = Rng(seed | 1);
    let mut models: Vec<(u64, Model)> = vec![(0, BTreeMap::new()); RANGES.len()];
    let started = Instant::now();
    let kills = 20;
    for round in 0..kills {
        let mut child = spawn_child("apply", dir.path());
        std::thread::sleep(Duration::from_millis(20 + rng.below(300)));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        if round % 4 == 3 {
            check_power_cut(dir.path(), &mut rng, round, seed);
        }

        let store = StateStore::open(dir.path(), StateConfig::default()).unwrap();
        for (slot, (range_id, prefix)) in RANGES.iter().enumerate() {
            let applied = store
                .applied_state(*range_id)
                .unwrap()
                .map_or(0, |a| a.index);
            let (model_index, model) = &mut models[slot];
            // A process kill loses no completed write (the RocksDB WAL is in
            // the OS page cache), so applied never goes back here.
            assert!(applied >= *model_index, "round {round}: applied went back");
            while *model_index < applied {
                *model_index += 1;
                apply_command(model, prefix, *model_index);
            }
            let actual = read_prefix(&store, prefix);
            assert!(
                actual == *model,
                "round {round} range {range_id}: state differs from applying 1..={applied} (seed {seed})"
            );
        }
        println!("round {round}: applied {} / {}", models[0].0, models[1].0);
    }
    assert!(
        models.iter().all(|(index, _)| *index > 100),
        "the child made too little progress"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// Simulates a power cut on a copy of the store: the unsynced tail of the
/// newest RocksDB WAL file is lost at a random byte (possibly mid-record).
/// Point-in-time recovery must then yield, for every range, exactly the
/// application of `1..=applied` for some (smaller) `applied`.
fn check_power_cut(dir: &Path, rng: &mut Rng, round: u32, seed: u64) {
    let copy = tempfile::tempdir().unwrap();
    let mut newest_wal: Option<(u64, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let target = copy.path().join(&name);
        std::fs::copy(&path, &target).unwrap();
        if let Some(number) = name
            .strip_suffix(".log")
            .and_then(|n| n.parse::<u64>().ok())
        {
            if newest_wal.as_ref().is_none_or(|(n, _)| number > *n) {
                newest_wal = Some((number, target));
            }
        }
    }
    let (_, wal) = newest_wal.expect("a RocksDB WAL file");
    let len = std::fs::metadata(&wal).unwrap().len();
    let cut = rng.below(len + 1);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(cut)
        .unwrap();

    let store = StateStore::open(copy.path(), StateConfig::default()).unwrap();
    let mut applied_all = Vec::new();
    for (range_id, prefix) in RANGES {
        let applied = store
            .applied_state(range_id)
            .unwrap()
            .map_or(0, |a| a.index);
        let mut model = Model::new();
        for i in 1..=applied {
            apply_command(&mut model, prefix, i);
        }
        assert!(
            read_prefix(&store, prefix) == model,
            "power cut at byte {cut}/{len} of the WAL, round {round} range {range_id}: \
             state differs from applying 1..={applied} (seed {seed})"
        );
        applied_all.push(applied);
    }
    println!("round {round}: power cut at WAL byte {cut}/{len} -> applied {applied_all:?}");
}

// ----- snapshot apply killed mid-way --------------------------------------

const SNAP_RANGE: u64 = 5;
const SNAP_KEYS: u64 = 6_000;

fn snapshot_config() -> StateConfig {
    StateConfig {
        snapshot_chunk_bytes: 8 * 1024,
        snapshot_apply_batch_bytes: 32 * 1024,
        ..StateConfig::default()
    }
}

fn snap_value(i: u64) -> Vec<u8> {
    vec![(i % 251) as u8; 200 + (i % 300) as usize]
}

/// The child: streams range 5 from `dir/source` into `dir/target`, slowly
/// enough that a kill is likely to land mid-way.
fn child_apply_snapshot(dir: &Path) {
    let source = StateStore::open(dir.join("source"), snapshot_config()).unwrap();
    let target = StateStore::open(dir.join("target"), snapshot_config()).unwrap();
    let mut reader = source.snapshot_reader(SNAP_RANGE, b"m/", b"n/").unwrap();
    let mut writer = target.snapshot_writer(reader.header().clone()).unwrap();
    ready();
    while let Some(chunk) = reader.next_chunk().unwrap() {
        writer.write_chunk(&chunk).unwrap();
        std::thread::sleep(Duration::from_micros(300));
    }
    writer.finish(&reader.trailer().unwrap()).unwrap();
}

#[test]
fn state_snapshot_apply_killed_midway_recovers() {
    let dir = tempfile::tempdir().unwrap();
    {
        let source = StateStore::open(dir.path().join("source"), snapshot_config()).unwrap();
        let mut batch = source.apply_batch();
        for i in 0..SNAP_KEYS {
            batch.put(SNAP_RANGE, format!("m/{i:06}").as_bytes(), &snap_value(i));
        }
        batch.set_descriptor(SNAP_RANGE, b"d");
        batch.set_applied(SNAP_RANGE, 50, 3);
        batch.commit().unwrap();
    }
    let seed = 0x5eed_0002_u64 ^ std::process::id() as u64;
    println!("seed {seed}");
    let mut rng = Rng(seed | 1);
    let (mut completed, mut rolled_back) = (0, 0);
    for round in 0..8 {
        {
            // The target holds an older version of the range and a neighbour.
            let target = StateStore::open(dir.path().join("target"), snapshot_config()).unwrap();
            target.destroy_range(SNAP_RANGE, b"m/", b"n/").unwrap();
            let mut batch = target.apply_batch();
            batch.put(SNAP_RANGE, b"m/old", b"old");
            batch.put(9, b"z/neighbour", b"keep");
            batch.set_applied(SNAP_RANGE, 10, 1);
            batch.set_applied(9, 1 + round, 1);
            batch.commit().unwrap();
        }
        let mut child = spawn_child("snapshot", dir.path());
        // Even rounds kill early (the apply of ~260 chunks with a 300 µs
        // pause each takes well over 30 ms, so the kill lands mid-way); odd
        // rounds anywhere, including after completion.
        let window_ms = if round % 2 == 0 { 30 } else { 400 };
        std::thread::sleep(Duration::from_millis(rng.below(window_ms)));
        let _ = child.kill(); // it may have finished already
        child.wait().unwrap();

        let target = StateStore::open(dir.path().join("target"), snapshot_config()).unwrap();
        let state = target.range_state(SNAP_RANGE).unwrap();
        let data = target.scan(b"m/", b"n/", usize::MAX).unwrap();
        assert_eq!(state.snapshot_in_progress, None);
        assert_eq!(
            target.get(b"z/neighbour").unwrap().as_deref(),
            Some(&b"keep"[..])
        );
        match state.applied.map(|a| a.index) {
            Some(50) => {
                completed += 1;
                assert_eq!(data.len() as u64, SNAP_KEYS, "round {round}");
                assert_eq!(state.needs_snapshot, None);
                assert_eq!(&data[17].1[..], &snap_value(17)[..]);
            }
            Some(10) => {
                // Killed before the marker was written.
                assert_eq!(data.len(), 1, "round {round}");
            }
            None => {
                rolled_back += 1;
                assert!(
                    data.is_empty(),
                    "round {round}: rolled-back range holds data"
                );
                assert_eq!(state.needs_snapshot.map(|n| n.index), Some(50));
            }
            other => panic!("round {round}: unexpected applied index {other:?}"),
        }
    }
    println!("snapshot kills: {completed} completed, {rolled_back} rolled back");
    assert!(rolled_back >= 1, "no kill landed mid-apply (seed {seed})");
}
