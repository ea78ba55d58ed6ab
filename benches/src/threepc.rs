//! Shootout adapter: threepc (to be written).
