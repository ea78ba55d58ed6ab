//! The `threepc` crate (to be written).
