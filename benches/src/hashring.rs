//! Shootout adapter: hashring (to be written).
