//! The async handle over `common`'s tokio driver and in-memory network, on tokio's paused clock:
//! the shared suite (`common::txn::suite::driver`) run on three-phase commit, and its
//! termination protocol ending what a silent coordinator left undecided.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use common::txn::suite::driver;
use common::txn::{TxId, Vote, Write};
use threepc::{Config, Message, State, ThreePcNode};

#[tokio::test(start_paused = true)]
async fn begin_write_commit_through_the_driver() {
    // 3PC has no read-only optimisation: a participant enlisted without writes takes part in
    // every phase and applies the (empty) transaction.
    driver::begin_write_commit::<ThreePcNode>(Config::new, true).await;
}

/// A coordinator that asks a participant to vote and then falls silent: the participant's
/// status shows the transaction Uncertain with its age growing; then the termination protocol
/// (the other participant is down too) aborts it without the coordinator.
#[tokio::test(start_paused = true)]
async fn status_reports_undecided_transactions_then_termination_ends_them() {
    let tx = TxId::new(1, 0);
    let can_commit = Message::CanCommit {
        tx,
        writes: vec![Write::put("k", "v")],
        participants: vec![2, 3],
    };
    let yes = Message::Vote {
        tx,
        vote: Vote::Yes,
    };
    let (participant, _silent) =
        driver::vote_then_silence::<ThreePcNode>(Config::new, can_commit, yes).await;
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
    let forged = Message::CanCommit {
        tx: TxId::new(9, 0),
        writes: vec![Write::put("x", "1")],
        participants: vec![2],
    };
    driver::bad_input_is_rejected::<ThreePcNode>(Config::new, forged).await;
}
