//! Keys and key distributions: uniform, YCSB's scrambled zipfian
//! (theta 0.99) and "latest" (skewed towards the newest records).
//!
//! Record `n` is the key `user` + `n` zero-padded to 12 digits, so key
//! order is record order and pre-split points and scan bounds are easy to
//! compute; the zipfian distribution scatters its hot records over the key
//! space by hashing (as YCSB does), so hot keys land in every range.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// Bytes in every key (`user` + 12 digits).
pub const KEY_BYTES: usize = 16;

/// The key of record `n`.
pub fn key_name(n: u64) -> Bytes {
    Bytes::from(format!("user{n:012}"))
}

/// The record number of a key made by [`key_name`], if it is one.
pub fn record_of(key: &[u8]) -> Option<u64> {
    let digits = key.strip_prefix(b"user")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The `ranges - 1` keys that cut records `0..records` into `ranges`
/// ranges of (almost) equal size, in order.
pub fn split_points(records: u64, ranges: u64) -> Vec<u64> {
    (1..ranges.max(1))
        .map(|i| ((i as u128 * records as u128) / ranges as u128) as u64)
        .collect()
}

/// How keys are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Every record equally likely.
    Uniform,
    /// YCSB's scrambled zipfian, theta 0.99: a few records are hot, spread
    /// over the key space by an FNV hash.
    Zipfian,
    /// Zipfian over recency: the newest records are the hottest.
    Latest,
}

impl Distribution {
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Uniform => "uniform",
            Distribution::Zipfian => "zipfian",
            Distribution::Latest => "latest",
        }
    }
}

/// YCSB's zipfian constant.
pub const ZIPFIAN_THETA: f64 = 0.99;
/// YCSB's scrambled zipfian draws from this many items, then hashes.
const SCRAMBLED_ITEMS: u64 = 10_000_000_000;
/// zeta(SCRAMBLED_ITEMS, 0.99), precomputed by YCSB.
const SCRAMBLED_ZETAN: f64 = 26.469_028_201_783_02;

/// `sum_{i=from+1}^{to} 1 / i^theta`, added to `initial`.
fn zeta(from: u64, to: u64, theta: f64, initial: f64) -> f64 {
    let mut sum = initial;
    for i in from..to {
        sum += 1.0 / ((i + 1) as f64).powf(theta);
    }
    sum
}

/// YCSB's ZipfianGenerator (Gray et al., "Quickly generating
/// billion-record synthetic databases"): item 0 is the most popular. The
/// item count may grow between draws; zeta is extended incrementally.
#[derive(Debug, Clone)]
pub struct Zipfian {
    theta: f64,
    alpha: f64,
    zeta2theta: f64,
    zetan: f64,
    eta: f64,
    count_for_zeta: u64,
}

impl Zipfian {
    /// A generator over `items` items (computes zeta: O(items)).
    pub fn new(items: u64, theta: f64) -> Zipfian {
        let zetan = zeta(0, items, theta, 0.0);
        Zipfian::with_zetan(items, theta, zetan)
    }

    fn with_zetan(items: u64, theta: f64, zetan: f64) -> Zipfian {
        let zeta2theta = zeta(0, 2, theta, 0.0);
        let mut z = Zipfian {
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta2theta,
            zetan,
            eta: 0.0,
            count_for_zeta: items,
        };
        z.eta = z.eta_for(items);
        z
    }

    fn eta_for(&self, items: u64) -> f64 {
        (1.0 - (2.0 / items as f64).powf(1.0 - self.theta)) / (1.0 - self.zeta2theta / self.zetan)
    }

    /// An item in `[0, items)`; 0 is the most likely.
    pub fn next(&mut self, rng: &mut Rng, items: u64) -> u64 {
        if items <= 1 {
            return 0;
        }
        if items > self.count_for_zeta {
            self.zetan = zeta(self.count_for_zeta, items, self.theta, self.zetan);
            self.count_for_zeta = items;
            self.eta = self.eta_for(items);
        } else if items < self.count_for_zeta {
            // Shrinking is rare (never in this tool): recompute.
            *self = Zipfian::new(items, self.theta);
        }
        let u = rng.next_f64();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        let ret = (items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        ret.min(items - 1)
    }
}

/// YCSB's 64-bit FNV-1a over the 8 bytes of `val` (low byte first).
pub fn fnv64(mut val: u64) -> u64 {
    let mut hash: u64 = 0xCBF2_9CE4_8422_2325;
    for _ in 0..8 {
        hash ^= val & 0xff;
        hash = hash.wrapping_mul(1_099_511_628_211);
        val >>= 8;
    }
    // YCSB takes Math.abs of the signed value.
    (hash as i64).unsigned_abs()
}

/// Picks record numbers. Build one with [`KeyChooser::new`] (which does the
/// O(records) zeta computation once) and clone it per client.
#[derive(Debug, Clone)]
pub enum KeyChooser {
    Uniform,
    Zipfian(Zipfian),
    Latest(Zipfian),
}

impl KeyChooser {
    pub fn new(distribution: Distribution, records: u64) -> KeyChooser {
        match distribution {
            Distribution::Uniform => KeyChooser::Uniform,
            Distribution::Zipfian => KeyChooser::Zipfian(Zipfian::with_zetan(
                SCRAMBLED_ITEMS,
                ZIPFIAN_THETA,
                SCRAMBLED_ZETAN,
            )),
            Distribution::Latest => KeyChooser::Latest(Zipfian::new(records.max(1), ZIPFIAN_THETA)),
        }
    }

    /// A record among `records` pre-loaded ones (uniform, zipfian), or for
    /// `latest` an offset back from the newest of `newest_count` records
    /// (0 = the newest); the caller maps offsets to keys.
    pub fn next(&mut self, rng: &mut Rng, records: u64, newest_count: u64) -> u64 {
        match self {
            KeyChooser::Uniform => rng.below(records.max(1)),
            KeyChooser::Zipfian(z) => fnv64(z.next(rng, SCRAMBLED_ITEMS)) % records.max(1),
            KeyChooser::Latest(z) => z.next(rng, newest_count.max(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_sort_like_numbers_and_parse_back() {
        assert_eq!(key_name(42).len(), KEY_BYTES);
        assert!(key_name(9) < key_name(10));
        assert!(key_name(99_999) < key_name(100_000));
        assert_eq!(record_of(&key_name(123_456)), Some(123_456));
        assert_eq!(record_of(b"other"), None);
    }

    #[test]
    fn split_points_are_even_and_ordered() {
        assert_eq!(split_points(100, 4), vec![25, 50, 75]);
        assert!(split_points(100, 1).is_empty());
        let p = split_points(1_000_000, 64);
        assert_eq!(p.len(), 63);
        assert!(p.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn uniform_stays_in_bounds_and_is_flat() {
        let mut rng = Rng::new(3);
        let mut chooser = KeyChooser::new(Distribution::Uniform, 1000);
        let mut counts = vec![0u32; 1000];
        for _ in 0..200_000 {
            let k = chooser.next(&mut rng, 1000, 1000);
            assert!(k < 1000);
            counts[k as usize] += 1;
        }
        let max = *counts.iter().max().unwrap_or(&0);
        let min = *counts.iter().min().unwrap_or(&0);
        assert!(min > 100 && max < 320, "min {min} max {max}");
    }

    #[test]
    fn zipfian_is_skewed_like_ycsb() {
        // Unscrambled: item 0 gets 1/zeta(n) of the draws.
        let n = 10_000;
        let mut z = Zipfian::new(n, ZIPFIAN_THETA);
        let mut rng = Rng::new(5);
        let draws = 200_000;
        let mut counts = vec![0u32; n as usize];
        for _ in 0..draws {
            let k = z.next(&mut rng, n);
            assert!(k < n);
            counts[k as usize] += 1;
        }
        let expected0 = draws as f64 / zeta(0, n, ZIPFIAN_THETA, 0.0);
        let got0 = counts[0] as f64;
        assert!(
            (got0 - expected0).abs() < expected0 * 0.05,
            "{got0} vs {expected0}"
        );
        // Top 1% of items take the bulk of the draws (~ 57% for theta 0.99).
        let top: u32 = counts[..(n / 100) as usize].iter().sum();
        assert!(top as f64 / draws as f64 > 0.5, "top 1%: {top}");
    }

    #[test]
    fn scrambled_zipfian_spreads_hot_keys_but_stays_skewed() {
        let records = 100_000;
        let mut chooser = KeyChooser::new(Distribution::Zipfian, records);
        let mut rng = Rng::new(11);
        let mut counts = std::collections::HashMap::<u64, u32>::new();
        let draws = 100_000;
        for _ in 0..draws {
            let k = chooser.next(&mut rng, records, records);
            assert!(k < records);
            *counts.entry(k).or_default() += 1;
        }
        let mut by_count: Vec<(u64, u32)> = counts.into_iter().collect();
        by_count.sort_by_key(|e| std::cmp::Reverse(e.1));
        // The hottest record gets 1/zeta(1e10, 0.99) = 3.8% of the draws
        // (YCSB's scrambled zipfian is flatter than a zipfian over the
        // records themselves)...
        let expected = draws as f64 / SCRAMBLED_ZETAN;
        let hottest = by_count[0].1 as f64;
        assert!(
            (hottest - expected).abs() < expected * 0.1,
            "hottest {hottest} vs {expected}"
        );
        // ...the ten hottest are not bunched at the start of the key space...
        let hot: Vec<u64> = by_count.iter().take(10).map(|e| e.0).collect();
        assert!(hot.iter().any(|&k| k > records / 2), "{hot:?}");
        // ...and it touches clearly fewer records than uniform draws do
        // (about 63% of the records for as many draws as records).
        let mut uniform = std::collections::HashSet::new();
        let mut u = KeyChooser::new(Distribution::Uniform, records);
        for _ in 0..draws {
            uniform.insert(u.next(&mut rng, records, records));
        }
        assert!(
            (by_count.len() as f64) < uniform.len() as f64 * 0.85,
            "{} vs uniform {}",
            by_count.len(),
            uniform.len()
        );
    }

    #[test]
    fn latest_prefers_the_newest_and_grows() {
        let mut chooser = KeyChooser::new(Distribution::Latest, 1_000);
        let mut rng = Rng::new(9);
        let mut newest = 0;
        for _ in 0..10_000 {
            let off = chooser.next(&mut rng, 1_000, 1_000);
            assert!(off < 1_000);
            if off == 0 {
                newest += 1;
            }
        }
        // P(offset 0) = 1 / zeta(1000, 0.99) ~ 0.13.
        assert!((1_000..1_700).contains(&newest), "{newest}");
        // The count may grow between draws.
        for _ in 0..1_000 {
            assert!(chooser.next(&mut rng, 1_000, 5_000) < 5_000);
        }
    }

    #[test]
    fn fnv_matches_ycsb() {
        // FNV-1a 64 of eight zero bytes (positive as a signed value here).
        let h = fnv64(0);
        assert_eq!(h, (0xa8c7_f832_281a_39c5u64 as i64).unsigned_abs());
        assert_ne!(fnv64(1), fnv64(2));
    }
}
