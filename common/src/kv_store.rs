//! The small replicated key-value store both consensus crates use in their tutorials, tests,
//! simulations and benchmarks (`raft::kv` and `paxos` re-export it): one vocabulary, so a test,
//! a history or a diagram reads the same on either protocol.
//!
//! Writes answer with the value the key held *before* them (as `kv`, the store people run,
//! does), reads with its current value. Its snapshot streams one frame per pair
//! ([`crate::state_machine::write_frame`]), never the whole map as one buffer.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::state_machine::{read_frame, write_frame, StateMachine, StateMachineError};

/// The largest frame (one key and its value) a [`KvStore`] snapshot may hold.
pub const KV_FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;

/// A command of the [`KvStore`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// Sets `key` to `value`; answers the previous value.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: String,
    },
    /// Appends `value` to the value of `key` (an absent key counts as empty); answers the
    /// previous value.
    Append {
        /// The key.
        key: String,
        /// What to append.
        value: String,
    },
    /// Reads `key` through the log (a read ordered like a write); answers its value.
    Get {
        /// The key.
        key: String,
    },
    /// Does nothing; answers [`KvOutput::Done`] (benchmarks' empty request).
    Nop,
}

/// A query of the [`KvStore`], answered without writing to the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvQuery {
    /// The value of one key.
    Get(String),
}

/// What a [`KvStore`] command or query answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOutput {
    /// A value: the previous one for a write, the current one for a read (`None`: absent).
    Value(Option<String>),
    /// A [`KvCommand::Nop`] was applied.
    Done,
}

impl KvOutput {
    /// The value answered (`None` for an absent key, and for [`KvOutput::Done`]).
    pub fn value(&self) -> Option<&str> {
        match self {
            KvOutput::Value(v) => v.as_deref(),
            KvOutput::Done => None,
        }
    }

    /// [`KvOutput::value`], owned.
    pub fn into_value(self) -> Option<String> {
        match self {
            KvOutput::Value(v) => v,
            KvOutput::Done => None,
        }
    }
}

/// An in-memory, ordered map from strings to strings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    map: BTreeMap<String, String>,
}

impl KvStore {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    /// Every key and value.
    pub fn data(&self) -> &BTreeMap<String, String> {
        &self.map
    }
}

impl StateMachine for KvStore {
    type Command = KvCommand;
    type Query = KvQuery;
    type Output = KvOutput;

    fn apply(&mut self, _index: u64, command: &KvCommand) -> KvOutput {
        match command {
            KvCommand::Put { key, value } => {
                KvOutput::Value(self.map.insert(key.clone(), value.clone()))
            }
            KvCommand::Append { key, value } => {
                let entry = self.map.entry(key.clone()).or_default();
                let before = entry.clone();
                entry.push_str(value);
                KvOutput::Value(Some(before))
            }
            KvCommand::Get { key } => KvOutput::Value(self.map.get(key).cloned()),
            KvCommand::Nop => KvOutput::Done,
        }
    }

    fn query(&self, query: &KvQuery) -> KvOutput {
        match query {
            KvQuery::Get(key) => KvOutput::Value(self.map.get(key).cloned()),
        }
    }

    fn snapshot(&self, out: &mut dyn Write) -> Result<(), StateMachineError> {
        for pair in &self.map {
            write_frame(out, &pair)?;
        }
        Ok(())
    }

    fn restore(&mut self, input: &mut dyn Read) -> Result<(), StateMachineError> {
        let mut map = BTreeMap::new();
        while let Some((k, v)) = read_frame::<(String, String)>(input, KV_FRAME_BYTES_MAX)? {
            map.insert(k, v);
        }
        self.map = map;
        Ok(())
    }

    fn command_bytes(command: &KvCommand) -> usize {
        match command {
            KvCommand::Put { key, value } | KvCommand::Append { key, value } => {
                key.len() + value.len() + 8
            }
            KvCommand::Get { key } => key.len() + 8,
            KvCommand::Nop => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> KvCommand {
        KvCommand::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn writes_answer_the_previous_value_and_reads_the_current_one() {
        let mut kv = KvStore::default();
        assert_eq!(kv.apply(1, &put("a", "1")), KvOutput::Value(None));
        assert_eq!(
            kv.apply(
                2,
                &KvCommand::Append {
                    key: "a".into(),
                    value: "2".into()
                }
            ),
            KvOutput::Value(Some("1".into()))
        );
        assert_eq!(
            kv.apply(3, &KvCommand::Get { key: "a".into() }),
            KvOutput::Value(Some("12".into()))
        );
        assert_eq!(kv.apply(4, &KvCommand::Nop), KvOutput::Done);
        assert_eq!(
            kv.query(&KvQuery::Get("a".into())),
            KvOutput::Value(Some("12".into()))
        );
    }

    #[test]
    fn snapshot_round_trips_and_refuses_a_cut_stream() {
        let mut kv = KvStore::default();
        kv.apply(1, &put("a", "1"));
        kv.apply(2, &put("b", "2"));
        let mut snap = Vec::new();
        kv.snapshot(&mut snap).unwrap();
        let mut other = KvStore::default();
        other.restore(&mut &snap[..]).unwrap();
        assert_eq!(other, kv);
        let first = snap.len() / 2;
        for cut in 1..snap.len() {
            let result = other.restore(&mut &snap[..cut]);
            // A cut at the frame boundary is a valid, smaller map; anywhere else an error.
            assert_eq!(result.is_ok(), cut == first, "cut at {cut}");
        }
        assert!(other.restore(&mut &[255u8, 255, 255, 255][..]).is_err());
    }
}
