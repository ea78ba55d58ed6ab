//! The head-to-head shootout (to be written).
fn main() {}
