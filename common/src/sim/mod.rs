//! Deterministic simulator (to be written).
