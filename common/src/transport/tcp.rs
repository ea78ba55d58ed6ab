//! TCP transport (to be written).
