//! The replicated state machine: the one seam between an application and either consensus
//! crate (`raft`, `paxos`).
//!
//! - **The application builds it.** A core never calls `Default`: its configuration carries a
//!   [`Setup`] whose factory opens the state machine, at start and again after every crash. A
//!   state machine may hold a database handle.
//! - **Batches.** [`StateMachine::apply_batch`] gets every command committed by one step at once
//!   (a state machine over a database writes them in one transaction), then
//!   [`StateMachine::applied`] says which log position the batch reached, no-ops and
//!   configuration entries included.
//! - **Snapshots stream.** [`StateMachine::snapshot`] writes into an [`std::io::Write`] and
//!   [`StateMachine::restore`] reads from an [`std::io::Read`]; the bytes go to a snapshot file
//!   ([`crate::snapshot`]), never into one buffer. Errors are [`StateMachineError`]s.
//! - **Durable state machines skip replay.** One that persists its own applied index reports it
//!   through [`StateMachine::applied_index`]; recovery then neither restores a snapshot it has
//!   already gone past nor applies again the entries it applied before the crash.
//!
//! [`write_frame`] and [`read_frame`] give snapshot formats a length-prefixed, size-limited
//! framing for a stream of serialized items, so a state machine need not buffer its whole state
//! to encode it.

use std::fmt::Debug;
use std::io::{self, Read, Write};
use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};

use crate::codec::{Bincode, Codec};

/// Why a state machine could not write, read or open its state.
#[derive(Debug, thiserror::Error)]
pub enum StateMachineError {
    /// Reading or writing the snapshot stream (or the state machine's own files) failed. A
    /// stored snapshot whose checksum does not match also shows up here, as
    /// [`io::ErrorKind::InvalidData`].
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    /// A snapshot's bytes do not decode into a state.
    #[error("malformed snapshot: {0}")]
    Malformed(String),
    /// The application's own failure (a database error, say).
    #[error("{0}")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// An application replicated by `raft` or `paxos`: every node applies the same commands in the
/// same order, so every node's state machine goes through the same states.
///
/// `apply` must be deterministic: no clocks, no randomness, no I/O whose result can differ
/// between nodes. A state machine that cannot apply a committed command (its disk failed) must
/// not carry on with a state that differs from its peers': it panics, and the driver reports
/// the node stopped.
pub trait StateMachine: Send + 'static {
    /// A command written to the log; it crosses the network and the disk. `Sync` because a
    /// batch of commands is shared, not copied, between the log, the records and the messages
    /// to every follower.
    type Command: Clone + Debug + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static;
    /// A read-only query, answered without writing to the log.
    type Query: Clone + Debug + Send + 'static;
    /// What applying a command or answering a query returns. Serializable because Multi-Paxos
    /// keeps the last output of every client session in its snapshots.
    type Output: Clone + Debug + PartialEq + Serialize + DeserializeOwned + Send + 'static;

    /// Applies one committed command, at log position `index`. Positions start at 1 and grow by
    /// one per log entry (Raft: the log index; Multi-Paxos: the slot plus one), so an applied
    /// index of 0 means nothing applied.
    fn apply(&mut self, index: u64, command: &Self::Command) -> Self::Output;

    /// Applies a batch of committed commands, in order, pushing one output per command onto
    /// `outputs`. The default applies them one by one.
    fn apply_batch<'a, I>(&mut self, batch: I, outputs: &mut Vec<Self::Output>)
    where
        I: Iterator<Item = (u64, &'a Self::Command)>,
        Self::Command: 'a,
    {
        for (index, command) in batch {
            outputs.push(self.apply(index, command));
        }
    }

    /// Every log position up to `index` is applied (positions without a command included). A
    /// state machine that persists its applied index commits it here. The default does nothing.
    fn applied(&mut self, index: u64) {
        let _ = index;
    }

    /// The log position this state machine had applied when it was opened: 0 for one that
    /// starts empty every time (the default). Recovery skips a snapshot at or below it and
    /// does not apply again what it covers.
    fn applied_index(&self) -> u64 {
        0
    }

    /// Answers a query from the current state.
    fn query(&self, query: &Self::Query) -> Self::Output;

    /// Writes the whole state to `out`.
    fn snapshot(&self, out: &mut dyn Write) -> Result<(), StateMachineError>;

    /// Replaces the state with the one `input` holds (written by [`StateMachine::snapshot`]).
    /// The bytes come from disk or the network: a malformed snapshot is an error, never a panic.
    /// On an error the state machine is left in an unspecified state; the core either stops
    /// (at recovery) or restores again from another snapshot before using it.
    ///
    /// A state machine that reports [`StateMachine::applied_index`] writes that index into its
    /// snapshot and, restoring, first forgets its own index durably (so a crash mid-restore
    /// reopens as "nothing applied" and the core restores again), then records the snapshot's
    /// index with the last of the restored state (`benches::redb_kv` does this over redb).
    fn restore(&mut self, input: &mut dyn Read) -> Result<(), StateMachineError>;

    /// The approximate size of a command in bytes, for the cores' flow-control limits.
    fn command_bytes(command: &Self::Command) -> usize {
        let _ = command;
        std::mem::size_of::<Self::Command>()
    }
}

/// Builds a node's state machine; called at start and after every restart.
pub type StateMachineFactory<S> = Arc<dyn Fn() -> Result<S, StateMachineError> + Send + Sync>;

/// A core's configuration `C` together with the factory of its state machine `S`: the
/// `Node::Config` of the consensus cores.
///
/// `Setup::from(config)` uses `S::default()`; [`Setup::new`] takes any factory (one that opens a
/// database, say).
pub struct Setup<C, S> {
    /// The protocol's configuration.
    pub config: C,
    /// Builds the state machine.
    pub state_machine: StateMachineFactory<S>,
}

impl<C, S> Setup<C, S> {
    /// `config` with state machines built by `factory`.
    pub fn new(
        config: C,
        factory: impl Fn() -> Result<S, StateMachineError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            config,
            state_machine: Arc::new(factory),
        }
    }

    /// The same factory with another configuration.
    pub fn with_config<D>(&self, config: D) -> Setup<D, S> {
        Setup {
            config,
            state_machine: self.state_machine.clone(),
        }
    }
}

impl<C, S: Default + 'static> From<C> for Setup<C, S> {
    fn from(config: C) -> Self {
        Setup::new(config, || Ok(S::default()))
    }
}

impl<C: Clone, S> Clone for Setup<C, S> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            state_machine: self.state_machine.clone(),
        }
    }
}

impl<C: Debug, S> Debug for Setup<C, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup")
            .field("config", &self.config)
            .field("state_machine", &std::any::type_name::<S>())
            .finish()
    }
}

/// The largest item [`read_frame`] accepts by default (16 MiB): one key-value pair, one row.
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Writes `item` to `out` as one frame: a 4-byte little-endian length, then the item in the
/// workspace's bincode encoding. Snapshot formats write their state as a stream of such frames.
pub fn write_frame<T: Serialize + ?Sized>(
    out: &mut dyn Write,
    item: &T,
) -> Result<(), StateMachineError> {
    let bytes = Bincode
        .encode(item)
        .map_err(|e| StateMachineError::Malformed(format!("item does not encode: {e}")))?;
    let len = u32::try_from(bytes.len())
        .map_err(|_| StateMachineError::Malformed(format!("item of {} bytes", bytes.len())))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(&bytes)?;
    Ok(())
}

/// Reads one frame written by [`write_frame`]: `Ok(None)` at a clean end of the stream, an error
/// for a frame longer than `bytes_max`, one cut short, or one that does not decode.
pub fn read_frame<T: DeserializeOwned>(
    input: &mut dyn Read,
    bytes_max: usize,
) -> Result<Option<T>, StateMachineError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < len.len() {
        match input.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(StateMachineError::Malformed(
                    "stream ends inside a frame's length".into(),
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > bytes_max {
        return Err(StateMachineError::Malformed(format!(
            "frame of {len} bytes over the limit of {bytes_max}"
        )));
    }
    let mut buf = vec![0u8; len];
    input.read_exact(&mut buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            StateMachineError::Malformed(format!("stream ends inside a frame of {len} bytes"))
        }
        _ => e.into(),
    })?;
    Bincode
        .decode(&buf)
        .map(Some)
        .map_err(|e| StateMachineError::Malformed(format!("frame does not decode: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_refuse_bad_input() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &("a".to_string(), 1u64)).unwrap();
        write_frame(&mut buf, &("bb".to_string(), 2u64)).unwrap();
        let mut r = &buf[..];
        assert_eq!(
            read_frame::<(String, u64)>(&mut r, 100).unwrap(),
            Some(("a".into(), 1))
        );
        assert_eq!(
            read_frame::<(String, u64)>(&mut r, 100).unwrap(),
            Some(("bb".into(), 2))
        );
        assert_eq!(read_frame::<(String, u64)>(&mut r, 100).unwrap(), None);
        // Cut anywhere inside a frame: an error, never a panic or a silent end.
        let mut first = Vec::new();
        write_frame(&mut first, &("a".to_string(), 1u64)).unwrap();
        for cut in 1..buf.len() {
            let mut r = &buf[..cut];
            loop {
                match read_frame::<(String, u64)>(&mut r, 100) {
                    Ok(Some(_)) => continue,
                    Ok(None) => assert_eq!(cut, first.len(), "silent end at {cut}"),
                    Err(_) => assert_ne!(cut, first.len(), "error at a frame boundary"),
                }
                break;
            }
        }
        let mut r = &buf[..];
        assert!(matches!(
            read_frame::<(String, u64)>(&mut r, 2),
            Err(StateMachineError::Malformed(_))
        ));
    }
}
