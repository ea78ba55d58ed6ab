//! History checkers (to be written).

pub mod atomic;
