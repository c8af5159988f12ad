//! A small seedable random-number generator (SplitMix64).
//!
//! The benchmark's op sequences must replay identically for a given seed
//! whatever version of a random-number crate is current, so the generator
//! is ten lines here rather than a dependency.

/// SplitMix64: 64-bit state, passes BigCrush, one multiply-xorshift chain
/// per output.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// The generator of client `client` of a run seeded with `seed`:
    /// independent streams, the same for the same pair.
    pub fn for_client(seed: u64, client: u64) -> Rng {
        let mut mix = Rng::new(seed ^ client.wrapping_mul(0xA076_1D64_78BD_642F));
        let state = mix.next_u64();
        Rng::new(state)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, n)` (`n` > 0), without modulo bias (Lemire).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let mut m = (self.next_u64() as u128) * (n as u128);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = (self.next_u64() as u128) * (n as u128);
            }
        }
        (m >> 64) as u64
    }

    /// Fill `buf` with random alphanumeric bytes (like YCSB's values: they
    /// do not compress much, so the WAL's lz4 does not flatter the numbers).
    pub fn fill_alphanumeric(&mut self, buf: &mut [u8]) {
        const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        for chunk in buf.chunks_mut(8) {
            let mut x = self.next_u64();
            for b in chunk {
                *b = CHARS[(x % CHARS.len() as u64) as usize];
                x /= CHARS.len() as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_clients_differ() {
        let a: Vec<u64> = (0..100)
            .map(|_| 0)
            .scan(Rng::for_client(7, 3), |r, _: u64| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..100)
            .map(|_| 0)
            .scan(Rng::for_client(7, 3), |r, _: u64| Some(r.next_u64()))
            .collect();
        let c: Vec<u64> = (0..100)
            .map(|_| 0)
            .scan(Rng::for_client(7, 4), |r, _: u64| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn below_stays_in_bounds_and_covers() {
        let mut rng = Rng::new(1);
        let mut seen = [0u32; 10];
        for _ in 0..100_000 {
            let v = rng.below(10);
            assert!(v < 10);
            seen[v as usize] += 1;
        }
        for count in seen {
            assert!((9_000..11_000).contains(&count), "{seen:?}");
        }
        for _ in 0..1000 {
            let f = rng.next_f64();
            assert!((0.0..1.0).contains(&f));
        }
    }
}
