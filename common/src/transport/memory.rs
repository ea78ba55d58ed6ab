//! In-memory network (to be written).
