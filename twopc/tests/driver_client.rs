//! The async handle over `common`'s tokio driver and in-memory network, on tokio's paused clock:
//! the shared suite (`common::txn::suite::driver`) run on two-phase commit, and its blocking case.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use common::txn::suite::driver;
use common::txn::{TxId, Vote, Write};
use twopc::{Config, Message, TwoPcNode};

#[tokio::test(start_paused = true)]
async fn begin_write_commit_through_the_driver() {
    // A participant enlisted without writes votes read-only and leaves: it applies nothing.
    driver::begin_write_commit::<TwoPcNode>(Config::new, false).await;
}

/// A coordinator that prepares a participant and then falls silent: the participant's status
/// shows the transaction in doubt, its age growing, and blocked once a round of asking found
/// nobody who knows.
#[tokio::test(start_paused = true)]
async fn status_reports_in_doubt_transactions_and_their_age() {
    let tx = TxId::new(1, 0);
    let prepare = Message::Prepare {
        tx,
        writes: vec![Write::put("k", "v")],
        peers: vec![2],
    };
    let yes = Message::Vote {
        tx,
        vote: Vote::Yes,
    };
    let (participant, _silent) =
        driver::vote_then_silence::<TwoPcNode>(Config::new, prepare, yes).await;
    let first = participant.status().await.unwrap();
    assert_eq!(first.in_doubt.len(), 1);
    assert_eq!(first.in_doubt[0].tx, tx);
    // The coordinator stays silent (it drops the participant's decision requests).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = participant.status().await.unwrap();
    assert!(later.in_doubt[0].age_ticks > first.in_doubt[0].age_ticks + 10);
    assert!(later.in_doubt[0].blocked);
    assert_eq!(later.blocked, 1);
    participant.handle().shutdown().await.unwrap();
}

/// Undecodable bytes and messages from a non-member are rejected and counted; the node keeps
/// serving.
#[tokio::test(start_paused = true)]
async fn bad_input_is_rejected_counted_and_harmless() {
    let forged = Message::Prepare {
        tx: TxId::new(9, 0),
        writes: vec![Write::put("x", "1")],
        peers: vec![2],
    };
    driver::bad_input_is_rejected::<TwoPcNode>(Config::new, forged).await;
}
