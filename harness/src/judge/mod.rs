//! Stage 3, judge (no Docker): what the merged timeline says.
//!
//! - [`expect`]: expectations and fault conditions judged over the timeline, and the per-pair
//!   figures of the report.
//! - [`schedule`]: when faults and their undos fire, a pure function of the time and of which
//!   checks hold.
//! - [`live`]: the live view of a running lab (`p2plab up`): nodes and pairs as the events tell
//!   them, drawn as a board or as plain lines.

pub mod expect;
pub mod live;
pub mod schedule;
