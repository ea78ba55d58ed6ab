//! Fuzz targets for the bytes a `kv-node` reads from clients and from snapshots: the client
//! protocol's frames and the store's snapshot format. Bad bytes are typed errors, never panics;
//! what decodes re-encodes to itself. Run by `cargo test` with `bolero` (`FUZZ_SECS=n` for a
//! longer run).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use kv::net::{decode_reply, decode_request, encode_reply, encode_request};
use kv::KvMachine;

/// Random inputs per target in the normal test run.
const ITERATIONS: usize = 3_000;
/// Longest random input.
const INPUT_BYTES_MAX: usize = 1_024;

#[test]
fn client_frames_decode_or_fail_cleanly() {
    common::fuzz_bytes!(INPUT_BYTES_MAX, ITERATIONS, |bytes: &Vec<u8>| {
        if let Ok(request) = decode_request(bytes) {
            let again = encode_request(&request).unwrap();
            assert_eq!(decode_request(&again).unwrap(), request);
        }
        if let Ok(reply) = decode_reply(bytes) {
            let again = encode_reply(&reply).unwrap();
            assert_eq!(decode_reply(&again).unwrap(), reply);
        }
    });
}

#[test]
fn snapshots_restore_or_fail_cleanly() {
    use raft::StateMachine as _;
    common::fuzz_bytes!(INPUT_BYTES_MAX, ITERATIONS, |bytes: &Vec<u8>| {
        let mut store = KvMachine::default();
        if store.restore(&mut &bytes[..]).is_ok() {
            let mut again = Vec::new();
            store.snapshot(&mut again).unwrap();
            let mut copy = KvMachine::default();
            copy.restore(&mut &again[..]).unwrap();
            assert_eq!(copy, store);
        }
    });
}

#[test]
fn the_store_passes_the_state_machine_conformance_suite() {
    use kv::{KvCommand, KvOp, KvQuery};
    let commands: Vec<KvCommand> = (1..=40u64)
        .map(|seq| KvCommand {
            client: seq % 3 + 1,
            seq: seq / 3 + 1,
            op: match seq % 3 {
                0 => KvOp::Put {
                    key: format!("k{}", seq % 7),
                    value: format!("v{seq}"),
                },
                1 => KvOp::Delete {
                    key: format!("k{}", seq % 5),
                },
                _ => KvOp::Cas {
                    key: format!("k{}", seq % 7),
                    expected: None,
                    new: Some(format!("c{seq}")),
                },
            },
        })
        .collect();
    common::testing::state_machine_suite(
        || Ok(KvMachine::default()),
        &commands,
        &KvQuery::Scan {
            prefix: String::new(),
            limit: 100,
        },
    );
}
