//! The crate's key-value store passes the state-machine conformance suite of `common::testing`,
//! the same one a user's own state machine runs.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use raft::kv::{KvCommand, KvQuery, KvStore};

#[test]
fn kv_store_conforms() {
    let commands: Vec<KvCommand> = (0..40)
        .map(|i| match i % 3 {
            0 => KvCommand::Put {
                key: format!("k{}", i % 7),
                value: format!("v{i}"),
            },
            1 => KvCommand::Append {
                key: format!("k{}", i % 5),
                value: format!("+{i}"),
            },
            _ => KvCommand::Nop,
        })
        .collect();
    common::testing::state_machine_suite(
        || Ok(KvStore::default()),
        &commands,
        &KvQuery::Get("k1".into()),
    );
}
