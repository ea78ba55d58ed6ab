//! The `twopc` crate (to be written).
