//! Shootout adapter: demo (to be written).
