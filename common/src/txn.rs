//! Types shared by the atomic-commit protocols (to be written).
