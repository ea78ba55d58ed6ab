//! Durable write-ahead log (to be written).
