//! The bank of the `bank_transfer_2pc` and `bank_transfer_3pc` examples, written once for any
//! atomic-commit protocol: concurrent transfers between accounts sharded over three
//! participants, a participant and then the coordinator crashed and restarted mid-run, and at the
//! end every participant rebuilt from its durable log alone with the sum of all balances asserted
//! unchanged. `threepc` includes this file, as it does `ledger.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::ledger::{delta, Ledger};
use common::codec::Bincode;
use common::driver::{self, DriverConfig, NodeHandle, Persistence};
use common::transport::memory::MemoryNetwork;
use common::txn::{AtomicCommit, Outcome, TxClient};
use common::{DetRng, MemStorage, NodeId};
use tokio::sync::watch;

/// A protocol the bank runs on: an atomic-commit node over the [`Ledger`] that can be configured
/// from its id and the members.
pub trait Bank: AtomicCommit<Resource = Ledger> {
    /// The configuration of node `id` in a cluster of `members`.
    fn config(id: NodeId, members: Vec<NodeId>) -> Self::Config;
}

const COORDINATOR: NodeId = 1;
const PARTICIPANTS: [NodeId; 3] = [2, 3, 4];
const ACCOUNTS: u64 = 12;
const OPENING_BALANCE: i64 = 1_000;
const CLIENTS: u64 = 6;
const TRANSFERS_PER_CLIENT: u64 = 60;
/// Attempts of one transfer that keeps aborting on lock conflicts or failing on a crash.
const ATTEMPTS_MAX: u32 = 50;
/// Bound on every wait for a condition.
const WAIT_MAX: Duration = Duration::from_secs(20);

fn members() -> Vec<NodeId> {
    let mut m = vec![COORDINATOR];
    m.extend(PARTICIPANTS);
    m
}

fn account(i: u64) -> String {
    format!("acct-{i:02}")
}

/// The shard of an account: a fixed assignment of accounts to participants.
fn shard(i: u64) -> NodeId {
    PARTICIPANTS[(i % PARTICIPANTS.len() as u64) as usize]
}

fn driver_config() -> DriverConfig {
    DriverConfig {
        tick: Duration::from_millis(2),
        // MemStorage never blocks: the node task calls it directly.
        persistence: Persistence::Inline,
        ..DriverConfig::default()
    }
}

/// Starts (or restarts) node `id` from whatever `storage` holds.
async fn start<B: Bank>(network: &MemoryNetwork, id: NodeId, storage: MemStorage) -> NodeHandle<B> {
    let transport = network.join(id).unwrap();
    driver::spawn_recovered::<B, _, _, _>(
        B::config(id, members()),
        transport,
        storage,
        Bincode,
        driver_config(),
    )
    .await
    .unwrap()
}

/// Crashes a node: it stops, loses its volatile state and every record it had not synced, and
/// restarts from its log alone.
async fn crash_and_restart<B: Bank>(
    network: &MemoryNetwork,
    handle: &NodeHandle<B>,
) -> NodeHandle<B> {
    let id = handle.id();
    let mut storage: MemStorage = handle.shutdown_and_take_storage().await.unwrap();
    storage.crash();
    start(network, id, storage).await
}

/// Waits, bounded, until `check` holds.
async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT_MAX;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[derive(Default)]
struct Tally {
    committed: AtomicU64,
    aborted: AtomicU64,
    unknown: AtomicU64,
}

/// One client: transfers between random accounts, retrying aborts and failures a bounded number
/// of times. Always takes the coordinator's current handle (it changes when it restarts).
async fn client<B: Bank>(seed: u64, coordinator: watch::Receiver<TxClient<B>>, tally: Arc<Tally>) {
    let mut rng = DetRng::new(seed);
    for _ in 0..TRANSFERS_PER_CLIENT {
        let from = rng.range_inclusive(0, ACCOUNTS - 1);
        let to = (from + rng.range_inclusive(1, ACCOUNTS - 1)) % ACCOUNTS;
        let amount = rng.range_inclusive(1, 50) as i64;
        for attempt in 0..ATTEMPTS_MAX {
            let tx_client = coordinator.borrow().clone();
            let mut tx = tx_client.begin();
            tx.write(shard(from), account(from), delta(-amount)).write(
                shard(to),
                account(to),
                delta(amount),
            );
            match tx.commit().await {
                Ok(Outcome::Committed) => {
                    tally.committed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                // A lock conflict (no-wait locking) or a vote timeout: nothing was applied.
                Ok(Outcome::Aborted) => {
                    tally.aborted.fetch_add(1, Ordering::Relaxed);
                }
                // The coordinator crashed under the request: the transfer may have committed
                // or not; retrying could apply it twice, so this client moves on. The protocol
                // still guarantees all-or-nothing at the participants.
                Err(error) => {
                    tally.unknown.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%error, attempt, "transfer outcome unknown");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(1 + rng.range_inclusive(0, 2))).await;
        }
    }
}

/// Opens the accounts: one transaction deposits the opening balance everywhere. Returns the
/// total the bank must hold from then on.
async fn open_accounts<B: Bank>(bank: &TxClient<B>) -> i64 {
    let mut open = bank.begin();
    for i in 0..ACCOUNTS {
        open.write(shard(i), account(i), delta(OPENING_BALANCE));
    }
    assert_eq!(open.commit().await.unwrap(), Outcome::Committed);
    OPENING_BALANCE * ACCOUNTS as i64
}

/// Stops every participant, rebuilds each from its durable log alone and adds up the balances.
async fn rebuilt_total<B: Bank>(participants: &[NodeHandle<B>]) -> i64 {
    let mut total = 0;
    for p in participants {
        let id = p.id();
        let mut storage: MemStorage = p.shutdown_and_take_storage().await.unwrap();
        storage.crash();
        let records = common::Storage::load(&mut storage)
            .unwrap()
            .iter()
            .map(|bytes| common::codec::Codec::decode(&Bincode, bytes).unwrap())
            .collect();
        let node = B::recover(B::config(id, members()), records).unwrap();
        let shard_total = node.resource().total();
        println!(
            "participant {id}: {:?} (sum {shard_total})",
            node.resource().balances()
        );
        total += shard_total;
    }
    total
}

/// Runs the bank on protocol `B`, crashing a participant and then the coordinator mid-run, and
/// asserts that the total balance, rebuilt from the participants' durable logs, is unchanged.
pub async fn run<B: Bank>() {
    let network = MemoryNetwork::new(42);
    let mut participants = Vec::new();
    for id in PARTICIPANTS {
        participants.push(start::<B>(&network, id, MemStorage::new()).await);
    }
    let coordinator = start::<B>(&network, COORDINATOR, MemStorage::new()).await;

    let bank = TxClient::new(coordinator.clone());
    let expected_total = open_accounts(&bank).await;
    println!(
        "{ACCOUNTS} accounts on {} shards, {expected_total} in total",
        PARTICIPANTS.len()
    );

    let (current, watched) = watch::channel(bank);
    let tally = Arc::new(Tally::default());
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        clients.spawn(client::<B>(c + 1, watched.clone(), tally.clone()));
    }

    // Crash a participant once some transfers went through, then the coordinator.
    let progressed = |n: u64| {
        let tally = tally.clone();
        move || {
            let tally = tally.clone();
            async move { tally.committed.load(Ordering::Relaxed) >= n }
        }
    };
    wait_for("first transfers", progressed(40)).await;
    println!("crashing participant 3 mid-run");
    participants[1] = crash_and_restart(&network, &participants[1]).await;
    wait_for("transfers after the participant restart", progressed(120)).await;
    println!("crashing coordinator 1 mid-run");
    let coordinator = crash_and_restart(&network, &coordinator).await;
    current.send_replace(TxClient::new(coordinator.clone()));

    while let Some(joined) = clients.join_next().await {
        joined.unwrap();
    }

    // Every transfer left open by the crash is decided: under 2PC by the restarted coordinator
    // (or, with no decision record, presumed abort), under 3PC by the termination protocol.
    for p in &participants {
        let p = p.clone();
        wait_for("no participant in doubt", move || {
            let p = p.clone();
            async move { B::undecided(&p.metrics().await.unwrap()) == 0 }
        })
        .await;
    }

    let total = rebuilt_total(&participants).await;
    coordinator.shutdown().await.unwrap();

    let (committed, aborted, unknown) = (
        tally.committed.load(Ordering::Relaxed),
        tally.aborted.load(Ordering::Relaxed),
        tally.unknown.load(Ordering::Relaxed),
    );
    println!(
        "{committed} transfers committed, {aborted} aborted and retried, {unknown} with an unknown outcome (coordinator crash)"
    );
    println!("total balance: {total} (expected {expected_total})");
    assert!(committed > 120, "the bank kept working through the crashes");
    assert_eq!(total, expected_total, "money was created or destroyed");
}
