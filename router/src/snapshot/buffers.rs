//! Accounting of the bytes the scheduler holds in memory.
//!
//! Every buffer that holds snapshot data — a chunk read from the source, an
//! encoded frame waiting for the lane, a frame queued for a receiving
//! transfer, a chunk being decompressed — is registered here for as long as
//! it lives, through a [`Held`] guard. Tests read [`BufferGauge::peak_bytes`]
//! to check the memory bound stated in the module docs, independently of
//! the allocator and of RSS.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Current and peak bytes held in snapshot buffers of one node.
#[derive(Debug, Default)]
pub struct BufferGauge {
    current: AtomicU64,
    peak: AtomicU64,
}

impl BufferGauge {
    /// A gauge at zero.
    pub fn new() -> Arc<BufferGauge> {
        Arc::new(BufferGauge::default())
    }

    /// Registers `bytes` until the returned guard is dropped.
    ///
    /// ```
    /// use flotilla_router::snapshot::BufferGauge;
    /// let gauge = BufferGauge::new();
    /// let held = gauge.hold(100);
    /// assert_eq!(gauge.current_bytes(), 100);
    /// drop(held);
    /// assert_eq!((gauge.current_bytes(), gauge.peak_bytes()), (0, 100));
    /// ```
    pub fn hold(self: &Arc<Self>, bytes: usize) -> Held {
        let bytes = bytes as u64;
        let now = self.current.fetch_add(bytes, Ordering::AcqRel) + bytes;
        self.peak.fetch_max(now, Ordering::AcqRel);
        Held {
            gauge: Arc::clone(self),
            bytes,
        }
    }

    /// Bytes held right now.
    pub fn current_bytes(&self) -> u64 {
        self.current.load(Ordering::Acquire)
    }

    /// Most bytes ever held at once.
    pub fn peak_bytes(&self) -> u64 {
        self.peak.load(Ordering::Acquire)
    }
}

/// A registration in a [`BufferGauge`]; releases its bytes when dropped.
#[derive(Debug)]
pub struct Held {
    gauge: Arc<BufferGauge>,
    bytes: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gauge.current.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}
