//! A small replicated key-value store: the state machine of the crate's tutorial, simulations
//! (its client histories are checked for linearizability) and benchmarks.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use common::state_machine::{read_frame, write_frame, FRAME_BYTES_MAX};
use serde::{Deserialize, Serialize};

use crate::{StateMachine, StateMachineError};

/// Commands of the [`KvStore`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: String,
    },
    /// Appends `value` to the value of `key` (an absent key counts as empty).
    Append {
        /// The key.
        key: String,
        /// What to append.
        value: String,
    },
    /// Does nothing (benchmarks' empty request).
    Nop,
}

/// Queries of the [`KvStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvQuery {
    /// Reads one key.
    Get(String),
}

/// Outputs of the [`KvStore`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOutput {
    /// The key's value after a command, or at a read (`None`: absent).
    Value(Option<String>),
    /// A [`KvCommand::Nop`] was applied.
    Done,
}

/// An in-memory, ordered key-value map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    map: BTreeMap<String, String>,
}

impl KvStore {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }
}

impl StateMachine for KvStore {
    type Command = KvCommand;
    type Query = KvQuery;
    type Output = KvOutput;

    fn apply(&mut self, _index: u64, command: &KvCommand) -> KvOutput {
        match command {
            KvCommand::Put { key, value } => {
                self.map.insert(key.clone(), value.clone());
                KvOutput::Value(Some(value.clone()))
            }
            KvCommand::Append { key, value } => {
                let v = self.map.entry(key.clone()).or_default();
                v.push_str(value);
                KvOutput::Value(Some(v.clone()))
            }
            KvCommand::Nop => KvOutput::Done,
        }
    }

    fn query(&self, query: &KvQuery) -> KvOutput {
        match query {
            KvQuery::Get(key) => KvOutput::Value(self.map.get(key).cloned()),
        }
    }

    fn snapshot(&self, out: &mut dyn Write) -> Result<(), StateMachineError> {
        // One frame per pair: the snapshot streams to its file, never built in memory.
        for pair in &self.map {
            write_frame(out, &pair)?;
        }
        Ok(())
    }

    fn restore(&mut self, input: &mut dyn Read) -> Result<(), StateMachineError> {
        let mut map = BTreeMap::new();
        while let Some((k, v)) = read_frame::<(String, String)>(input, FRAME_BYTES_MAX)? {
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
            KvCommand::Nop => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trip_and_bad_bytes() {
        let mut kv = KvStore::default();
        kv.apply(
            1,
            &KvCommand::Put {
                key: "a".into(),
                value: "1".into(),
            },
        );
        kv.apply(
            2,
            &KvCommand::Append {
                key: "a".into(),
                value: "2".into(),
            },
        );
        let mut snap = Vec::new();
        kv.snapshot(&mut snap).unwrap();
        let mut other = KvStore::default();
        other.restore(&mut &snap[..]).unwrap();
        assert_eq!(other.get("a"), Some("12"));
        for cut in 1..snap.len() {
            assert!(other.restore(&mut &snap[..cut]).is_err(), "cut at {cut}");
        }
        assert!(other.restore(&mut &[255u8, 255, 255, 255][..]).is_err());
    }
}
