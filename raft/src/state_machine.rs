//! The application a Raft log drives: [`common::StateMachine`], the seam `raft` shares with
//! `paxos`.
//!
//! Every node applies the same committed commands in the same order (state machine safety,
//! §5.4.3), so every node's state machine goes through the same states; `apply` must therefore
//! be deterministic. The core builds the state machine with the factory in its
//! [`Setup`] (at start and after every restart), hands it each step's committed
//! commands as one batch, and streams snapshots through it into files
//! ([`common::snapshot`]). See [`common::state_machine`] for the whole contract.

pub use common::state_machine::{
    read_frame, write_frame, Setup, StateMachine, StateMachineError, StateMachineFactory,
};
