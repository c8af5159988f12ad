//! The range map and request routing.
//!
//! - [`RangeDescriptor`]: id, `[start, end)`, epoch `{version, conf_version}`
//!   (version bumps on split/merge, conf_version on membership change) and
//!   replicas, with a versioned encoding.
//! - [`RangeMap`]: key → range in O(log n), ordered iteration over the
//!   ranges a scan crosses, split/merge/membership updates that refuse an
//!   older epoch, and an invariant check (no overlap; coverage).
//! - [`Router`]: the map plus leader hints, typed [`RouteError`] outcomes
//!   and the node-side epoch check of incoming requests.
//! - [`retry`]: the client-side loop that follows hints with bounded
//!   attempts, back-off and a deadline.
//!
//! ```
//! use bytes::Bytes;
//! use flotilla_router::range::{RangeDescriptor, RangeMap, Router};
//!
//! let whole = RangeDescriptor::whole_key_space(1, vec![]);
//! let mut router = Router::new(RangeMap::with_range(whole.clone()).unwrap());
//! let (mut left, mut right) = (whole.clone(), whole);
//! left.end = Bytes::from_static(b"m");
//! left.epoch.version += 1;
//! right.id = 2;
//! right.start = Bytes::from_static(b"m");
//! right.epoch.version += 1;
//! router.map_mut().apply_split(left, right).unwrap();
//! assert_eq!(router.route(b"zebra").unwrap().range.id, 2);
//! router.map().check(true).unwrap();
//! ```

mod descriptor;
mod map;
mod retry;
mod route;

pub use descriptor::{
    DescriptorDecodeError, RangeDescriptor, RangeEpoch, ReplicaDescriptor, ReplicaRole,
};
pub use map::{RangeMap, RangeMapError};
pub use retry::{retry, Attempt, RetryError, RetryPolicy};
pub use route::{RouteError, RouteTarget, Router};
