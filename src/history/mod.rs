//! The pure core of the reading history: which tier — raw readings, 1-minute
//! or 1-hour aggregates — keeps what for how long and answers which query
//! ([`tier`]), the incremental aggregates a writer upserts per flush
//! ([`rollup`]), and the reduction of a query's points to at most the number
//! a chart asked for ([`mod@reduce`]) are pure, with times passed in; the
//! SQLite database they are stored in is [`store`].

pub mod merge;
pub mod metrics;
pub mod query;
pub mod queue;
pub mod reduce;
pub mod rollup;
pub mod service;
pub mod store;
pub mod tier;

#[cfg(test)]
pub(crate) mod test_dir;

pub use reduce::{reduce, Point};
pub use rollup::{Aggregate, BucketKey, Reading, Rollup};
pub use service::History;
pub use store::{Store, StoreError, StoredDevice};
pub use tier::{choose_tier, expired_before, Retention, Tier};
