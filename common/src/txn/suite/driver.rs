//! The async part of the shared test suite (feature `sim`): an atomic-commit protocol's client
//! and node under `common`'s tokio driver and in-memory network. Each protocol crate's
//! `tests/driver_client.rs` calls these on tokio's paused clock, with its node type.

// A test suite: a failed expectation is a panic, as in a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;

use crate::codec::{decode_frame, encode_frame, Bincode, Header};
use crate::driver::{self, DriverConfig, Persistence};
use crate::transport::memory::{MemoryNetwork, MemoryTransport};
use crate::transport::Transport;
use crate::txn::{AtomicCommit, ClientError, Outcome, TxClient, TxError};
use crate::{MemStorage, Node, NodeId};

/// The cluster of the driver tests.
pub const MEMBERS: [NodeId; 4] = [1, 2, 3, 4];

/// Builds node `id`'s configuration from the member list.
pub type ConfigFn<N> = fn(NodeId, Vec<NodeId>) -> <N as Node>::Config;

/// Starts node `id` of [`MEMBERS`] on `network` with in-memory storage, and a client of it.
///
/// # Panics
///
/// If the configuration is invalid or the id is taken on the network (a broken test).
pub fn spawn<N: AtomicCommit>(
    network: &MemoryNetwork,
    id: NodeId,
    config: ConfigFn<N>,
) -> TxClient<N> {
    let core = N::recover(config(id, MEMBERS.to_vec()), vec![]).expect("a valid configuration");
    let transport = network.join(id).expect("a free node id");
    let driver_config = DriverConfig {
        persistence: Persistence::Inline,
        ..DriverConfig::default()
    };
    let handle = driver::spawn(core, transport, MemStorage::new(), Bincode, driver_config)
        .expect("the driver starts");
    TxClient::new(handle)
}

/// Waits, bounded on the paused clock, until node `client`'s metrics satisfy `done`.
async fn eventually<N: AtomicCommit>(
    client: &TxClient<N>,
    done: impl Fn(&N::Metrics) -> bool,
) -> bool {
    for _ in 0..100 {
        if client.handle().metrics().await.is_ok_and(|m| done(&m)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Begin, write, commit through the driver: a transaction at three participants commits; one
/// with a delete and an enlisted participant without writes commits too, and each node applies
/// what it should (`enlisted_applies`: whether the participant without writes applies the
/// transaction too, rather than leaving it early); invalid participants are refused with a
/// typed error.
///
/// # Panics
///
/// When the protocol does not behave so (this is a test).
pub async fn begin_write_commit<N: AtomicCommit>(config: ConfigFn<N>, enlisted_applies: bool) {
    let network = MemoryNetwork::new(7);
    let nodes: Vec<TxClient<N>> = MEMBERS
        .iter()
        .map(|&id| spawn(&network, id, config))
        .collect();
    let client = &nodes[0];
    let mut tx = client.begin();
    tx.write(2, "alice", "90")
        .write(3, "bob", "110")
        .write(4, "audit", "1");
    assert_eq!(tx.commit().await.unwrap(), Outcome::Committed);
    // A participant enlisted without writes, and a delete.
    let mut tx = client.begin();
    tx.delete(2, "alice").enlist(3);
    let (id, outcome) = tx.commit_with_id().await.unwrap();
    assert_eq!((id.coordinator, outcome), (1, Outcome::Committed));
    let enlisted = if enlisted_applies { 2 } else { 1 };
    for (i, applied) in [(1, 2), (2, enlisted), (3, 1)] {
        // Participants ack after the client's answer: wait for the condition, bounded.
        let ok = eventually(&nodes[i], |m| N::counters(m).applied == applied).await;
        assert!(ok, "node {} applied {applied}", i + 1);
    }
    let mut tx = client.begin();
    tx.write(1, "self", "x");
    assert!(matches!(
        tx.commit().await,
        Err(ClientError::Refused(TxError::InvalidParticipants(_)))
    ));
    for n in &nodes {
        n.handle().shutdown().await.unwrap();
    }
}

/// Node 2 alone, with a stand-in coordinator 1 on the network that sends it `vote_request`
/// and checks that the answer is `expected_vote`, then falls silent (it reads nothing more).
/// Returns the participant's client, with the transaction undecided there, and the stand-in's
/// transport (kept, so the node's messages to it are not refused).
///
/// # Panics
///
/// When the participant does not answer so (this is a test).
pub async fn vote_then_silence<N: AtomicCommit>(
    config: ConfigFn<N>,
    vote_request: N::Message,
    expected_vote: N::Message,
) -> (TxClient<N>, MemoryTransport)
where
    N::Message: PartialEq,
{
    let network = MemoryNetwork::new(9);
    let participant = spawn(&network, 2, config);
    let mut coordinator = network.join(1).unwrap();
    let header = Header {
        protocol: N::PROTOCOL,
        version: N::WIRE_VERSION,
        from: 1,
        to: 2,
    };
    let frame: Bytes = encode_frame(&Bincode, &header, &vote_request).unwrap();
    coordinator.send(2, frame).unwrap();
    let inbound = tokio::time::timeout(Duration::from_secs(5), coordinator.recv())
        .await
        .unwrap()
        .unwrap();
    let (_, vote): (Header, N::Message) =
        decode_frame(&Bincode, N::PROTOCOL, N::WIRE_VERSION, &inbound.frame).unwrap();
    assert_eq!(vote, expected_vote);
    let metrics = participant.handle().metrics().await.unwrap();
    assert_eq!(N::counters(&metrics).undecided, 1);
    (participant, coordinator)
}

/// Undecodable bytes and `forged`, a message from non-member 9, are rejected and counted by
/// node 2; the node keeps serving.
///
/// # Panics
///
/// When the protocol does not behave so (this is a test).
pub async fn bad_input_is_rejected<N: AtomicCommit>(config: ConfigFn<N>, forged: N::Message) {
    let network = MemoryNetwork::new(11);
    let nodes: Vec<TxClient<N>> = MEMBERS
        .iter()
        .map(|&id| spawn(&network, id, config))
        .collect();
    let rogue = network.join(9).unwrap();
    rogue
        .send(2, Bytes::from_static(b"\xff\xffnot a frame"))
        .unwrap();
    let header = Header {
        protocol: N::PROTOCOL,
        version: N::WIRE_VERSION,
        from: 9,
        to: 2,
    };
    rogue
        .send(2, encode_frame(&Bincode, &header, &forged).unwrap())
        .unwrap();
    let mut counted = false;
    for _ in 0..100 {
        let frames = nodes[1].handle().stats().frames_rejected;
        let rejected = N::counters(&nodes[1].handle().metrics().await.unwrap()).rejected;
        if frames >= 1 && rejected >= 1 {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(counted, "garbage and the forged message were counted");
    let metrics = nodes[1].handle().metrics().await.unwrap();
    assert_eq!(N::counters(&metrics).undecided, 0);
    let mut tx = nodes[0].begin();
    tx.write(2, "k", "v").write(3, "k", "v");
    assert_eq!(tx.commit().await.unwrap(), Outcome::Committed);
    for n in &nodes {
        n.handle().shutdown().await.unwrap();
    }
}
