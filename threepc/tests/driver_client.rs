//! The async handle over `common`'s tokio driver and in-memory network, on tokio's paused clock.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use bytes::Bytes;
use common::codec::{decode_frame, encode_frame, Bincode, Header};
use common::driver::{self, DriverConfig, Persistence};
use common::transport::memory::MemoryNetwork;
use common::transport::Transport;
use common::txn::{Outcome, TxId, Vote, Write};
use common::{protocol, MemStorage, Node, NodeId};
use threepc::{ClientError, Config, Message, State, ThreePcError, ThreePcNode, TxClient};

const MEMBERS: [NodeId; 4] = [1, 2, 3, 4];

fn driver_config() -> DriverConfig {
    DriverConfig {
        persistence: Persistence::Inline,
        ..DriverConfig::default()
    }
}

fn spawn(network: &MemoryNetwork, id: NodeId) -> TxClient {
    let core = ThreePcNode::recover(Config::new(id, MEMBERS.to_vec()), vec![]).unwrap();
    let transport = network.join(id).unwrap();
    TxClient::new(
        driver::spawn(core, transport, MemStorage::new(), Bincode, driver_config()).unwrap(),
    )
}

#[tokio::test(start_paused = true)]
async fn begin_write_commit_through_the_driver() {
    let network = MemoryNetwork::new(7);
    let nodes: Vec<TxClient> = MEMBERS.iter().map(|&id| spawn(&network, id)).collect();
    let client = &nodes[0];
    let mut tx = client.begin();
    tx.write(2, "alice", "90")
        .write(3, "bob", "110")
        .write(4, "audit", "1");
    assert_eq!(tx.commit().await.unwrap(), Outcome::Committed);
    // A participant without writes and a delete.
    let mut tx = client.begin();
    tx.delete(2, "alice").enlist(3);
    let (id, outcome) = tx.commit_with_id().await.unwrap();
    assert_eq!((id.coordinator, outcome), (1, Outcome::Committed));
    for (i, applied) in [(1, 2), (2, 2), (3, 1)] {
        // Participants ack after the client's answer: wait for the condition, bounded.
        let mut ok = false;
        for _ in 0..100 {
            if nodes[i].handle().metrics().await.unwrap().applied == applied {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(ok, "node {} applied {applied}", i + 1);
    }
    // Invalid participants are refused with a typed error.
    let mut tx = client.begin();
    tx.write(1, "self", "x");
    assert!(matches!(
        tx.commit().await,
        Err(ClientError::Refused(ThreePcError::InvalidParticipants(_)))
    ));
    for n in &nodes {
        n.handle().shutdown().await.unwrap();
    }
}

/// A coordinator that asks a participant to vote and then falls silent: the participant's
/// status shows the transaction Uncertain with its age growing; then the termination protocol
/// (the other participant is down too) aborts it without the coordinator.
#[tokio::test(start_paused = true)]
async fn status_reports_undecided_transactions_then_termination_ends_them() {
    let network = MemoryNetwork::new(9);
    let participant = spawn(&network, 2);
    let mut coordinator = network.join(1).unwrap();
    let tx = TxId::new(1, 0);
    let can_commit = Message::CanCommit {
        tx,
        writes: vec![Write::put("k", "v")],
        participants: vec![2, 3],
    };
    let header = Header {
        protocol: protocol::THREEPC,
        version: <ThreePcNode as Node>::WIRE_VERSION,
        from: 1,
        to: 2,
    };
    let frame: Bytes = encode_frame(&Bincode, &header, &can_commit).unwrap();
    coordinator.send(2, frame).unwrap();
    let inbound = tokio::time::timeout(Duration::from_secs(5), coordinator.recv())
        .await
        .unwrap()
        .unwrap();
    let (_, vote): (Header, Message) = decode_frame(
        &Bincode,
        protocol::THREEPC,
        <ThreePcNode as Node>::WIRE_VERSION,
        &inbound.frame,
    )
    .unwrap();
    assert_eq!(
        vote,
        Message::Vote {
            tx,
            vote: Vote::Yes
        }
    );
    let first = participant.status().await.unwrap();
    assert_eq!(first.in_doubt.len(), 1);
    assert_eq!(first.in_doubt[0].state, State::Uncertain);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let later = participant.status().await.unwrap();
    assert!(later.in_doubt[0].age_ticks > first.in_doubt[0].age_ticks + 5);
    // Wait (bounded, on the paused clock) for the termination protocol to decide.
    let mut done = false;
    for _ in 0..200 {
        if participant.status().await.unwrap().in_doubt.is_empty() {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(done, "the participant did not block");
    assert_eq!(participant.handle().metrics().await.unwrap().aborted, 1);
    participant.handle().shutdown().await.unwrap();
}

/// Undecodable bytes and messages from a non-member are rejected and counted; the node keeps
/// serving.
#[tokio::test(start_paused = true)]
async fn bad_input_is_rejected_counted_and_harmless() {
    let network = MemoryNetwork::new(11);
    let nodes: Vec<TxClient> = MEMBERS.iter().map(|&id| spawn(&network, id)).collect();
    let rogue = network.join(9).unwrap();
    rogue
        .send(2, Bytes::from_static(b"\xff\xffnot a frame"))
        .unwrap();
    let header = Header {
        protocol: protocol::THREEPC,
        version: <ThreePcNode as Node>::WIRE_VERSION,
        from: 9,
        to: 2,
    };
    let forged = Message::CanCommit {
        tx: TxId::new(9, 0),
        writes: vec![Write::put("x", "1")],
        participants: vec![2],
    };
    rogue
        .send(2, encode_frame(&Bincode, &header, &forged).unwrap())
        .unwrap();
    let mut counted = false;
    for _ in 0..100 {
        let frames = nodes[1].handle().stats().frames_rejected;
        let rejected = nodes[1].handle().metrics().await.unwrap().rejected;
        if frames >= 1 && rejected >= 1 {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(counted, "garbage and the forged message were counted");
    assert!(nodes[1]
        .handle()
        .metrics()
        .await
        .unwrap()
        .in_doubt
        .is_empty());
    let mut tx = nodes[0].begin();
    tx.write(2, "k", "v").write(3, "k", "v");
    assert_eq!(tx.commit().await.unwrap(), Outcome::Committed);
    for n in &nodes {
        n.handle().shutdown().await.unwrap();
    }
}
