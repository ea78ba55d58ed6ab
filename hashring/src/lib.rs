//! The `hashring` crate (to be written).
