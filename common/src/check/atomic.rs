//! Atomic-commit history checker (to be written).
