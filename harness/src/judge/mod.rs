//! Stage 3, judge (no Docker): what the merged timeline says.
//!
//! - [`expect`]: expectations and fault conditions judged over the timeline, and the per-pair
//!   figures of the report.
//! - [`schedule`]: when faults and their undos fire, a pure function of the time and of which
//!   checks hold.

pub mod expect;
pub mod schedule;
