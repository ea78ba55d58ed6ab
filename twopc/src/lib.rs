//! Two-phase commit (to be documented).

mod coordinator;
mod error;
mod node;
mod participant;
mod types;

pub use error::TwoPcError;
pub use node::TwoPcNode;
pub use types::*;
