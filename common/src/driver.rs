//! The tokio driver (to be written).
