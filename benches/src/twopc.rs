//! Shootout adapter: twopc (to be written).
