//! A small replicated key-value store: the state machine of the crate's tutorial, simulations
//! (its client histories are checked for linearizability) and benchmarks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::StateMachine;

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
#[derive(Clone, Debug, PartialEq, Eq)]
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

    fn apply(&mut self, command: &KvCommand) -> KvOutput {
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

    fn snapshot(&self) -> Vec<u8> {
        // Length-prefixed pairs: a format simple enough to parse defensively by hand.
        let mut out = Vec::new();
        for (k, v) in &self.map {
            for s in [k, v] {
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
        out
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        let mut map = BTreeMap::new();
        let mut rest = snapshot;
        let take = |rest: &mut &[u8]| -> Result<String, String> {
            let (len, tail) = rest
                .split_first_chunk::<4>()
                .ok_or("truncated length prefix")?;
            let len = u32::from_le_bytes(*len) as usize;
            if tail.len() < len {
                return Err(format!("string of {len} bytes past the end"));
            }
            let (s, tail) = tail.split_at(len);
            *rest = tail;
            String::from_utf8(s.to_vec()).map_err(|e| e.to_string())
        };
        while !rest.is_empty() {
            let k = take(&mut rest)?;
            let v = take(&mut rest)?;
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
        kv.apply(&KvCommand::Put {
            key: "a".into(),
            value: "1".into(),
        });
        kv.apply(&KvCommand::Append {
            key: "a".into(),
            value: "2".into(),
        });
        let snap = kv.snapshot();
        let mut other = KvStore::default();
        other.restore(&snap).unwrap();
        assert_eq!(other.get("a"), Some("12"));
        assert!(other.restore(&snap[..snap.len() - 1]).is_err());
        assert!(other.restore(&[255, 255, 255, 255]).is_err());
    }
}
