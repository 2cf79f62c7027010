//! Placeholder: many nodes in one process.
