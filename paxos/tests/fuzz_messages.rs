//! Fuzz target for what a Multi-Paxos replica reads from the network: message payloads decoded
//! with the codec's limits and handed to a replica, which rejects what makes no sense without
//! panicking. Run by `cargo test` with `bolero` (`FUZZ_SECS=n` for a longer run).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use common::codec::{Bincode, Codec};
use common::{Node, Outbox};
use paxos::{Config, KvCommand, KvStore, Membership, Message, Replica};

/// Random inputs in the normal test run.
const ITERATIONS: usize = 3_000;
/// Longest random input.
const INPUT_BYTES_MAX: usize = 512;

fn fuzz_secs() -> Option<Duration> {
    std::env::var("FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
}

/// A replica of a three-member configuration, and one alone in its configuration (which elects
/// itself and leads), each ticked into its steady state.
fn replicas() -> Vec<Replica<KvStore>> {
    let mut out: Outbox<Replica<KvStore>> = Outbox::new();
    let mut follower = Replica::recover(Config::new(1, vec![1, 2, 3]), vec![]).unwrap();
    let mut alone = Replica::recover(Config::new(1, vec![1]), vec![]).unwrap();
    for _ in 0..50 {
        follower.tick(&mut out);
        alone.tick(&mut out);
        let _ = out.take();
    }
    vec![follower, alone]
}

#[test]
fn message_payloads_never_panic_a_replica() {
    let target = bolero::check!()
        .with_generator(bolero::produce::<Vec<u8>>().with().len(0..=INPUT_BYTES_MAX))
        .with_max_len(INPUT_BYTES_MAX);
    let target = match fuzz_secs() {
        Some(secs) => target.with_test_time(secs),
        None => target.with_iterations(ITERATIONS),
    };
    target.for_each(|bytes: &Vec<u8>| {
        if let Ok((m, _)) = Bincode.decode_prefix::<Membership>(bytes) {
            let again = Bincode.encode(&m).unwrap();
            assert_eq!(Bincode.decode::<Membership>(&again).unwrap(), m);
        }
        // A prefix is enough: random tails would otherwise fail every decode as trailing bytes.
        let Ok((message, _)) = Bincode.decode_prefix::<Message<KvCommand>>(bytes) else {
            return;
        };
        let mut out: Outbox<Replica<KvStore>> = Outbox::new();
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
