//! Multi-Paxos with a stable leader, as a sans-IO core.
#![forbid(unsafe_code)]

pub mod config;
mod core;
pub mod error;
pub mod message;
pub mod state_machine;

pub use config::Config;
pub use core::{Event, Metrics, Replica, Request, Response};
pub use error::Error;
pub use message::{Ballot, Command, Message, Record, Session, Slot, Value};
pub use state_machine::{Counter, KvCommand, KvQuery, KvStore, StateMachine};
