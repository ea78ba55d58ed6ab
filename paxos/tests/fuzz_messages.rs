//! Fuzz target for what a Multi-Paxos replica reads from the network: message payloads decoded
//! with the codec's limits and handed to a replica, which rejects what makes no sense without
//! panicking. Run by `cargo test` with `bolero` (`FUZZ_SECS=n` for a longer run).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use common::codec::{Bincode, Codec};
use common::{Node, Outbox};
use paxos::{Config, KvCommand, KvStore, Membership, Message, PaxosNode};

/// Random inputs in the normal test run.
const ITERATIONS: usize = 3_000;
/// Longest random input.
const INPUT_BYTES_MAX: usize = 512;

/// A replica of a three-member configuration, and one alone in its configuration (which elects
/// itself and leads), each ticked into its steady state.
fn replicas() -> Vec<PaxosNode<KvStore>> {
    let mut out: Outbox<PaxosNode<KvStore>> = Outbox::new();
    let mut follower = PaxosNode::recover(Config::new(1, vec![1, 2, 3]).into(), vec![]).unwrap();
    let mut alone = PaxosNode::recover(Config::new(1, vec![1]).into(), vec![]).unwrap();
    for _ in 0..50 {
        follower.tick(&mut out);
        alone.tick(&mut out);
        let _ = out.take();
    }
    vec![follower, alone]
}

#[test]
fn message_payloads_never_panic_a_replica() {
    common::fuzz_bytes!(INPUT_BYTES_MAX, ITERATIONS, |bytes: &Vec<u8>| {
        if let Ok((m, _)) = Bincode.decode_prefix::<Membership>(bytes) {
            let again = Bincode.encode(&m).unwrap();
            assert_eq!(Bincode.decode::<Membership>(&again).unwrap(), m);
        }
        // A prefix is enough: random tails would otherwise fail every decode as trailing bytes.
        let Ok((message, _)) = Bincode.decode_prefix::<Message<KvCommand>>(bytes) else {
            return;
        };
        let mut out: Outbox<PaxosNode<KvStore>> = Outbox::new();
        for mut replica in replicas() {
            // From a member, and from a stranger.
            replica.handle_message(2, message.clone(), &mut out);
            replica.handle_message(99, message.clone(), &mut out);
            for _ in 0..10 {
                replica.tick(&mut out);
            }
            let _ = out.take();
        }
    });
}
