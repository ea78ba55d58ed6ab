//! A key-value state machine on an embedded database (`redb`): the example of a state machine
//! whose state lives on disk, not in memory, behind the seam both consensus crates share
//! ([`common::StateMachine`]).
//!
//! - **Batches are transactions.** [`StateMachine::apply_batch`] writes a step's commands in one
//!   write transaction, which also records the applied index and the number of commands applied
//!   ([`RedbQuery::Applies`]). Commits use redb's eventual durability: a crash may roll the
//!   database back to an earlier commit, but always a consistent one (state, index and count
//!   together), and the core then restores the snapshot or replays the log from the index the
//!   database reports ([`StateMachine::applied_index`]).
//! - **Restart without replay.** Reopened, it reports the index it had applied; the core neither
//!   restores an older snapshot nor applies those entries again.
//! - **Snapshots stream from a read transaction.** The snapshot is the applied index followed by
//!   one frame per pair; memory stays at one pair however large the table. Restoring clears the
//!   applied index first (a crash mid-restore then reopens as "restore again"), writes the pairs
//!   in transactions of at most [`RESTORE_TXN_BYTES`], and records the snapshot's index last.
//! - **Memory is bounded** by redb's page cache ([`RedbKv::open`]'s `cache_bytes`) and one write
//!   transaction, not by the state's size.

// redb's error is large; here it only travels on the cold path to a fatal stop.
#![allow(clippy::result_large_err)]

use std::io::{Read, Write};
use std::path::Path;

use common::state_machine::{read_frame, write_frame, StateMachine, StateMachineError};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const DATA: TableDefinition<&str, &[u8]> = TableDefinition::new("data");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const APPLIED: &str = "applied";
const APPLIES: &str = "applies";
/// The largest frame a snapshot may hold (one key and value).
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Bytes of pairs restored per write transaction.
pub const RESTORE_TXN_BYTES: usize = 16 * 1024 * 1024;

/// A command of [`RedbKv`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RedbCommand {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// The value (as bytes on the wire, not a sequence of numbers).
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: String,
    },
}

/// A query of [`RedbKv`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedbQuery {
    /// The value of a key.
    Get(String),
    /// How many commands this database has applied since it was created (replays included: a
    /// restart that replayed entries would show here).
    Applies,
    /// Number of keys.
    Len,
}

/// What a command or query returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RedbOutput {
    /// A command took effect.
    Done,
    /// A value (`None`: absent).
    Value(#[serde(with = "serde_bytes")] Option<Vec<u8>>),
    /// A count.
    Count(u64),
}

/// The state machine: a redb database file.
pub struct RedbKv {
    db: Database,
    applied: u64,
}

impl std::fmt::Debug for RedbKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbKv")
            .field("applied", &self.applied)
            .finish()
    }
}

fn db_error(e: impl std::error::Error + Send + Sync + 'static) -> StateMachineError {
    StateMachineError::Other(Box::new(e))
}

/// A database failure while applying a committed command leaves this replica unable to follow
/// its peers: stop the node (see [`StateMachine`]).
#[allow(clippy::panic)]
fn fatal(e: impl std::fmt::Display) -> ! {
    panic!("redb state machine failed while applying committed commands: {e}")
}

impl RedbKv {
    /// Opens (creating if needed) the database at `path`, with a page cache of `cache_bytes`.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Self, StateMachineError> {
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(db_error)?;
        let txn = db.begin_write().map_err(db_error)?;
        let applied = {
            txn.open_table(DATA).map_err(db_error)?;
            let meta = txn.open_table(META).map_err(db_error)?;
            let applied = meta
                .get(APPLIED)
                .map_err(db_error)?
                .map_or(0, |v| v.value());
            applied
        };
        txn.commit().map_err(db_error)?;
        Ok(Self { db, applied })
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadOnlyTable<&str, &[u8]>, &redb::ReadOnlyTable<&str, u64>) -> T,
    ) -> Result<T, StateMachineError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let data = txn.open_table(DATA).map_err(db_error)?;
        let meta = txn.open_table(META).map_err(db_error)?;
        Ok(f(&data, &meta))
    }
}

impl Drop for RedbKv {
    /// One last durable commit makes every eventual one before it durable, so a clean shutdown
    /// reopens exactly where it stopped.
    fn drop(&mut self) {
        let flushed = (|| -> Result<(), redb::Error> {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::Immediate);
            txn.commit()?;
            Ok(())
        })();
        if let Err(e) = flushed {
            tracing::warn!(error = %e, "redb state machine: final commit failed");
        }
    }
}

impl StateMachine for RedbKv {
    type Command = RedbCommand;
    type Query = RedbQuery;
    type Output = RedbOutput;

    fn apply(&mut self, index: u64, command: &RedbCommand) -> RedbOutput {
        let mut outputs = Vec::with_capacity(1);
        self.apply_batch(std::iter::once((index, command)), &mut outputs);
        outputs.pop().unwrap_or(RedbOutput::Done)
    }

    fn apply_batch<'a, I>(&mut self, batch: I, outputs: &mut Vec<RedbOutput>)
    where
        I: Iterator<Item = (u64, &'a RedbCommand)>,
    {
        let result = (|| -> Result<(), redb::Error> {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::Eventual);
            {
                let mut data = txn.open_table(DATA)?;
                let mut meta = txn.open_table(META)?;
                let mut applies = meta.get(APPLIES)?.map_or(0, |v| v.value());
                let mut last = self.applied;
                for (index, command) in batch {
                    match command {
                        RedbCommand::Put { key, value } => {
                            data.insert(key.as_str(), value.as_slice())?;
                        }
                        RedbCommand::Delete { key } => {
                            data.remove(key.as_str())?;
                        }
                    }
                    applies += 1;
                    last = last.max(index);
                    outputs.push(RedbOutput::Done);
                }
                meta.insert(APPLIES, applies)?;
                meta.insert(APPLIED, last)?;
            }
            txn.commit()?;
            Ok(())
        })();
        if let Err(e) = result {
            fatal(e);
        }
    }

    fn applied(&mut self, index: u64) {
        if index <= self.applied {
            return;
        }
        // Entries without a command (no-ops, configuration) still move the index.
        let result = (|| -> Result<(), redb::Error> {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::Eventual);
            txn.open_table(META)?.insert(APPLIED, index)?;
            txn.commit()?;
            Ok(())
        })();
        if let Err(e) = result {
            fatal(e);
        }
        self.applied = index;
    }

    fn applied_index(&self) -> u64 {
        self.applied
    }

    fn query(&self, query: &RedbQuery) -> RedbOutput {
        let answer = self.read(|data, meta| -> Result<RedbOutput, redb::StorageError> {
            Ok(match query {
                RedbQuery::Get(key) => {
                    RedbOutput::Value(data.get(key.as_str())?.map(|v| v.value().to_vec()))
                }
                RedbQuery::Applies => {
                    RedbOutput::Count(meta.get(APPLIES)?.map_or(0, |v| v.value()))
                }
                RedbQuery::Len => RedbOutput::Count(redb::ReadableTableMetadata::len(data)?),
            })
        });
        match answer {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => fatal(e),
            Err(e) => fatal(e),
        }
    }

    fn snapshot(&self, out: &mut dyn Write) -> Result<(), StateMachineError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let data = txn.open_table(DATA).map_err(db_error)?;
        let meta = txn.open_table(META).map_err(db_error)?;
        let applied = meta
            .get(APPLIED)
            .map_err(db_error)?
            .map_or(0, |v| v.value());
        write_frame(out, &applied)?;
        for item in data.iter().map_err(db_error)? {
            let (k, v) = item.map_err(db_error)?;
            write_frame(out, &(k.value(), serde_bytes::Bytes::new(v.value())))?;
        }
        Ok(())
    }

    fn restore(&mut self, input: &mut dyn Read) -> Result<(), StateMachineError> {
        let applied: u64 = read_frame(input, FRAME_BYTES_MAX)?
            .ok_or_else(|| StateMachineError::Malformed("empty snapshot".into()))?;
        // First: forget the applied index and the old pairs, durably. A crash from here on
        // reopens at index 0, and the core restores the snapshot again.
        let txn = self.db.begin_write().map_err(db_error)?;
        txn.delete_table(DATA).map_err(db_error)?;
        txn.open_table(DATA).map_err(db_error)?;
        txn.open_table(META)
            .map_err(db_error)?
            .insert(APPLIED, 0)
            .map_err(db_error)?;
        txn.commit().map_err(db_error)?;
        self.applied = 0;
        loop {
            let txn = self.db.begin_write().map_err(db_error)?;
            let mut bytes = 0;
            let mut done = false;
            {
                let mut data = txn.open_table(DATA).map_err(db_error)?;
                while bytes < RESTORE_TXN_BYTES {
                    match read_frame::<(String, serde_bytes::ByteBuf)>(input, FRAME_BYTES_MAX)? {
                        Some((k, v)) => {
                            bytes += k.len() + v.len();
                            data.insert(k.as_str(), v.as_slice()).map_err(db_error)?;
                        }
                        None => {
                            done = true;
                            break;
                        }
                    }
                }
                if done {
                    txn.open_table(META)
                        .map_err(db_error)?
                        .insert(APPLIED, applied)
                        .map_err(db_error)?;
                }
            }
            txn.commit().map_err(db_error)?;
            if done {
                break;
            }
        }
        self.applied = applied;
        Ok(())
    }

    fn command_bytes(command: &RedbCommand) -> usize {
        match command {
            RedbCommand::Put { key, value } => key.len() + value.len() + 16,
            RedbCommand::Delete { key } => key.len() + 16,
        }
    }
}
