//! Transactions across partitions, the client side: [`TxDriver`] runs one transaction's
//! two-phase commit through the groups' logs, and [`Resolver`] finishes what drivers left
//! (see `txn/mod.rs` for the protocol). Both are sans-IO, like [`Router`] and
//! [`Mover`](super::Mover): the caller sends what `next_request` names and reports the answer
//! to `observe`.

use std::collections::{BTreeMap, VecDeque};

use common::groups::{GroupId, GroupResponse, GroupsRequest};
use common::txn::{Outcome, Tally, TxId, Vote};
use common::NodeId;
use raft::{Request, Response};

use super::layout::Layout;
use super::machine::{Refusal, ShardCommand, ShardOutput, ShardQuery};
use super::router::{Router, ShardRequest, ShardResponse};
use super::txn::{Compare, ReadValue, TxCommand, TxInDoubt, TxOutput, TxPart, TxRefusal, TxWrite};

/// A key's read, compares and writes in a transaction, before they are grouped by partition.
type KeyOps = (bool, Vec<Compare>, Vec<TxWrite>);

/// What a transaction does: the keys it reads (their values come back, true at the commit),
/// the conditions that must hold, and the writes applied if they do, on keys of any
/// partitions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxPlan {
    /// Keys to read.
    pub reads: Vec<String>,
    /// Conditions.
    pub compares: Vec<Compare>,
    /// Writes.
    pub writes: Vec<TxWrite>,
}

/// How a transaction ended, as its driver saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxResult {
    /// Every part applied its writes.
    Committed,
    /// Nothing was applied; the refusal that decided it, if a part refused.
    Aborted(Option<TxRefusal>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// One partition: commit in one entry.
    Single,
    /// Preparing part `i` (the coordinator's is part 0).
    Prepare(usize),
    /// Deciding in the coordinator group's log.
    Decide(Outcome),
    /// A read-only transaction: checking at the coordinator that no part was released.
    EndReadOnly,
    /// Telling part `i` the outcome.
    Finish(usize),
    /// Dropping the committed record.
    Forget,
    /// Ended.
    Done(TxResult),
}

/// Runs one transaction at a time: splits it into parts by partition, prepares the
/// coordinator's part and then the others', decides in the coordinator group's log, finishes
/// the parts and forgets the record; a transaction of one partition commits in one entry. It
/// follows leader hints and retries a step until it is answered (every step is idempotent).
/// A driver dropped half-way leaves nothing a [`Resolver`] cannot finish.
#[derive(Clone, Debug)]
pub struct TxDriver {
    router: Router,
    tx: Option<TxId>,
    pending_keys: Vec<(String, KeyOps)>,
    parts: Vec<(GroupId, TxPart)>,
    /// The parts' votes, counted by `common::txn`'s rule (as `twopc`'s coordinator counts).
    tally: Tally<GroupId>,
    prepared: Vec<(GroupId, u64)>,
    refusal: Option<TxRefusal>,
    phase: Step,
    outcome: Outcome,
    reads: Vec<ReadValue>,
    read_only: bool,
    read_only_result: Option<Outcome>,
}

impl TxDriver {
    /// A driver that reads the map from one of `seeds` (the map group's members).
    pub fn new(seeds: Vec<NodeId>) -> Self {
        Self {
            router: Router::new(seeds),
            tx: None,
            pending_keys: Vec::new(),
            parts: Vec::new(),
            tally: Tally::new([]),
            prepared: Vec::new(),
            refusal: None,
            phase: Step::Done(TxResult::Aborted(None)),
            outcome: Outcome::Aborted,
            reads: Vec::new(),
            read_only: false,
            read_only_result: None,
        }
    }

    /// The driver's router (its map and leader hints), for the client's other requests.
    pub fn router_mut(&mut self) -> &mut Router {
        &mut self.router
    }

    /// Starts transaction `tx`: `compares` must hold, then `writes` are applied, all or none.
    /// Forgets any transaction under way (which a [`Resolver`] then finishes). The driver
    /// needs the map: it reads it first if it has none.
    pub fn begin(&mut self, tx: TxId, compares: Vec<Compare>, writes: Vec<TxWrite>) {
        self.start(
            tx,
            TxPlan {
                reads: Vec::new(),
                compares,
                writes,
            },
        );
    }

    /// Starts transaction `tx` as [`TxDriver::begin`] does, with reads: once it commits,
    /// [`TxDriver::reads`] holds the values, all true at one moment (the transaction's
    /// serialization point). A transaction that only reads and compares keeps no record: once
    /// every part is prepared, one entry at the coordinator checks that no part was released
    /// meanwhile and ends it, and the other parts are released.
    pub fn start(&mut self, tx: TxId, plan: TxPlan) {
        self.tx = Some(tx);
        self.parts.clear();
        self.prepared.clear();
        self.refusal = None;
        self.outcome = Outcome::Aborted;
        self.reads.clear();
        self.read_only = plan.writes.is_empty();
        self.read_only_result = None;
        // Split once the map is known (`split`); until then the phase waits for it.
        let mut staged: BTreeMap<String, KeyOps> = BTreeMap::new();
        for k in plan.reads {
            staged.entry(k).or_default().0 = true;
        }
        for c in plan.compares {
            staged.entry(c.key.clone()).or_default().1.push(c);
        }
        for w in plan.writes {
            staged.entry(w.key.clone()).or_default().2.push(w);
        }
        self.pending_keys = staged.into_iter().collect();
        self.phase = Step::Prepare(0);
    }

    /// The result of the transaction, once it ended.
    pub fn result(&self) -> Option<&TxResult> {
        match &self.phase {
            Step::Done(r) if self.tx.is_some() => Some(r),
            _ => None,
        }
    }

    /// The values the transaction read, once it committed (in key order within each part).
    pub fn reads(&self) -> &[ReadValue] {
        &self.reads
    }

    /// The transaction under way or last ended.
    pub fn tx(&self) -> Option<TxId> {
        self.tx
    }

    /// Groups the pending keys into parts by partition, once the map is known.
    fn split(&mut self, layout: Layout) {
        let mut parts: BTreeMap<GroupId, TxPart> = BTreeMap::new();
        for (key, (read, compares, writes)) in std::mem::take(&mut self.pending_keys) {
            let part = parts
                .entry(Layout::group_of(layout.partition_of(&key)))
                .or_default();
            if read {
                part.reads.push(key);
            }
            part.compares.extend(compares);
            part.writes.extend(writes);
        }
        self.parts = parts.into_iter().collect();
        self.tally = Tally::new(self.parts.iter().map(|(g, _)| *g));
        if self.parts.len() == 1 {
            self.phase = Step::Single;
        }
    }

    /// The next request of the transaction, and where it goes; `None` once it ended.
    pub fn next_request(&mut self) -> Option<(NodeId, ShardRequest)> {
        let tx = self.tx?;
        if self.router.map().is_none() || self.router.needs_map() {
            return Some((self.router.map_node(), Router::map_request()));
        }
        if self.parts.is_empty() && !self.pending_keys.is_empty() {
            let layout = self.router.map()?.layout;
            self.split(layout);
        }
        let coordinator = self.parts.first()?.0;
        let participants: Vec<GroupId> = self.parts.iter().map(|(g, _)| *g).collect();
        let (group, command) = match &self.phase {
            Step::Done(_) => return None,
            Step::Single => (
                coordinator,
                TxCommand::OnePhase {
                    tx,
                    part: self.parts[0].1.clone(),
                },
            ),
            Step::Prepare(i) => {
                let (group, part) = self.parts.get(*i)?.clone();
                (
                    group,
                    TxCommand::Prepare {
                        tx,
                        part,
                        coordinator,
                        participants,
                    },
                )
            }
            Step::Decide(outcome) => (
                coordinator,
                TxCommand::Decide {
                    tx,
                    outcome: *outcome,
                    prepared: self.prepared.clone(),
                },
            ),
            Step::Finish(i) => {
                let group = self.parts.get(*i)?.0;
                let prepared_at = match self.outcome {
                    Outcome::Committed => self
                        .prepared
                        .iter()
                        .find(|(g, _)| *g == group)
                        .map(|(_, at)| *at),
                    Outcome::Aborted => None,
                };
                (
                    group,
                    TxCommand::Finish {
                        tx,
                        outcome: self.outcome,
                        prepared_at,
                    },
                )
            }
            Step::Forget => (coordinator, TxCommand::Forget { tx }),
            Step::EndReadOnly => (coordinator, TxCommand::EndReadOnly { tx }),
        };
        let node = self.router.pick(group);
        Some((
            node,
            GroupsRequest::Group(group, Request::Propose(ShardCommand::Tx(command))),
        ))
    }

    /// Learns from the answer (`None`: none came) to the request [`TxDriver::next_request`]
    /// named, sent to `node`.
    pub fn observe(
        &mut self,
        node: NodeId,
        request: &ShardRequest,
        answer: Option<&ShardResponse>,
    ) {
        let GroupsRequest::Group(group, _) = request else {
            return;
        };
        self.router.observe(*group, node, answer);
        let Some(GroupResponse::Group(
            _,
            Response::Applied {
                output: ShardOutput::Tx(out),
                ..
            },
        )) = answer
        else {
            return; // a map read, or no answer: the same step again
        };
        let last = self.parts.len().saturating_sub(1);
        self.phase = match (&self.phase, out) {
            (Step::Single, TxOutput::Decided { outcome, reads, .. }) => {
                self.reads = reads.clone();
                Step::Done(match outcome {
                    Outcome::Committed => TxResult::Committed,
                    Outcome::Aborted => TxResult::Aborted(None),
                })
            }
            // A one-phase commit answered "decided already": an earlier try of it committed
            // (a group that remembers the id as aborted answers with the abort instead).
            (Step::Single, TxOutput::No(TxRefusal::Decided(_))) => Step::Done(TxResult::Committed),
            (Step::Single, TxOutput::No(r)) => Step::Done(TxResult::Aborted(Some(r.clone()))),
            (Step::Prepare(i), TxOutput::Prepared { at, reads }) => {
                if *i > 0 {
                    self.prepared.retain(|(g, _)| g != group);
                    self.prepared.push((*group, *at));
                }
                self.reads
                    .retain(|(k, _)| !reads.iter().any(|(r, _)| r == k));
                self.reads.extend(reads.iter().cloned());
                // A repeated answer (`Err`: duplicate) changes nothing.
                let _ = self.tally.record(*group, Vote::Yes);
                match self.tally.outcome() {
                    // Every key is locked, if no resolver released a part meanwhile: the
                    // coordinator's pending record says so.
                    Some(Outcome::Committed) if self.read_only => Step::EndReadOnly,
                    Some(Outcome::Committed) => Step::Decide(Outcome::Committed),
                    None if *i < last => Step::Prepare(i + 1),
                    // Not reached (every part voted yes or one voted no): abort, never stall.
                    _ => Step::Decide(Outcome::Aborted),
                }
            }
            // One no aborts. The coordinator's part is prepared first: when it refuses,
            // nothing is held anywhere and there is nothing to decide.
            (Step::Prepare(0), TxOutput::No(r)) => Step::Done(TxResult::Aborted(Some(r.clone()))),
            (Step::Prepare(_), TxOutput::No(r)) => {
                self.refusal = Some(r.clone());
                Step::Decide(Outcome::Aborted)
            }
            (Step::EndReadOnly, TxOutput::Decided { outcome, .. }) => {
                if *outcome == Outcome::Aborted {
                    self.reads.clear();
                }
                // The other parts are released with an abort (there is nothing to commit).
                self.outcome = Outcome::Aborted;
                self.read_only_result = Some(*outcome);
                if last == 0 {
                    self.end()
                } else {
                    Step::Finish(1)
                }
            }
            (Step::Decide(_), TxOutput::Decided { outcome, .. }) => {
                self.outcome = *outcome;
                if last == 0 {
                    self.end()
                } else {
                    Step::Finish(1)
                }
            }
            (Step::Finish(i), TxOutput::Done) => {
                if *i < last {
                    Step::Finish(i + 1)
                } else if self.outcome == Outcome::Committed {
                    Step::Forget
                } else {
                    self.end()
                }
            }
            (Step::Forget, TxOutput::Done) => self.end(),
            (phase, _) => phase.clone(),
        };
    }

    fn end(&mut self) -> Step {
        if let Some(outcome) = self.read_only_result.take() {
            return Step::Done(match outcome {
                Outcome::Committed => TxResult::Committed,
                Outcome::Aborted => TxResult::Aborted(None),
            });
        }
        Step::Done(match self.outcome {
            Outcome::Committed => TxResult::Committed,
            Outcome::Aborted => TxResult::Aborted(self.refusal.take()),
        })
    }
}

/// What a [`Resolver`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolverStats {
    /// Groups scanned.
    pub scans: u64,
    /// Decisions it asked a coordinator group for (deciding abort unless decided already).
    pub decisions: u64,
    /// ... of which answered committed.
    pub found_committed: u64,
    /// Parts it finished.
    pub finished: u64,
    /// Committed records it forgot.
    pub forgotten: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Work {
    /// Decide `tx` in `coordinator`'s log (abort unless decided), then finish the part at
    /// `group` with what it answers.
    Decide {
        tx: TxId,
        coordinator: GroupId,
        group: GroupId,
    },
    /// Finish `tx`'s part at `group`.
    Finish {
        tx: TxId,
        group: GroupId,
        outcome: Outcome,
        prepared_at: Option<u64>,
    },
    /// Drop `tx`'s committed record at `coordinator`.
    Forget { tx: TxId, coordinator: GroupId },
}

/// Finishes transactions their drivers left: it scans every partition's group for prepared
/// parts and committed records ([`ShardQuery::InDoubt`]); one still there
/// `resolve_after` (virtual or real) time units after it was first seen is resolved: a
/// prepared part by deciding abort in its coordinator group's log (the answer is the real
/// outcome if the transaction was decided already) and finishing the part with it; a
/// committed record by finishing every other part and forgetting the record.
///
/// It keeps nothing a crash could lose: any number of resolvers may run, and one that starts
/// afresh sees the same groups. Deciding abort for a transaction whose driver is merely slow
/// is safe (the driver's commit is then refused), which is why `resolve_after` should be well
/// above a transaction's usual duration.
#[derive(Clone, Debug)]
pub struct Resolver {
    router: Router,
    resolve_after: u64,
    scan: u32,
    seen: BTreeMap<(GroupId, TxId), u64>,
    work: VecDeque<Work>,
    stats: ResolverStats,
}

impl Resolver {
    /// A resolver that reads the map from one of `seeds` and resolves what stays in doubt
    /// `resolve_after` time units.
    pub fn new(seeds: Vec<NodeId>, resolve_after: u64) -> Self {
        Self {
            router: Router::new(seeds),
            resolve_after,
            scan: 0,
            seen: BTreeMap::new(),
            work: VecDeque::new(),
            stats: ResolverStats::default(),
        }
    }

    /// What it did.
    pub fn stats(&self) -> &ResolverStats {
        &self.stats
    }

    /// Whether no resolution is under way.
    pub fn is_idle(&self) -> bool {
        self.work.is_empty()
    }

    /// The next request, and where it goes.
    pub fn next_request(&mut self) -> (NodeId, ShardRequest) {
        let Some(map) = self.router.map().filter(|_| !self.router.needs_map()) else {
            return (self.router.map_node(), Router::map_request());
        };
        let partitions = map.layout.partitions;
        let tx_request = |group: GroupId, command: TxCommand, router: &Router| {
            (
                router.pick(group),
                GroupsRequest::Group(group, Request::Propose(ShardCommand::Tx(command))),
            )
        };
        match self.work.front() {
            Some(Work::Decide {
                tx, coordinator, ..
            }) => tx_request(
                *coordinator,
                TxCommand::Decide {
                    tx: *tx,
                    outcome: Outcome::Aborted,
                    prepared: Vec::new(),
                },
                &self.router,
            ),
            Some(Work::Finish {
                tx,
                group,
                outcome,
                prepared_at,
            }) => tx_request(
                *group,
                TxCommand::Finish {
                    tx: *tx,
                    outcome: *outcome,
                    prepared_at: *prepared_at,
                },
                &self.router,
            ),
            Some(Work::Forget { tx, coordinator }) => {
                tx_request(*coordinator, TxCommand::Forget { tx: *tx }, &self.router)
            }
            None => {
                let group = Layout::group_of(self.scan % partitions.max(1));
                (
                    self.router.pick(group),
                    GroupsRequest::Group(group, Request::Read(ShardQuery::InDoubt)),
                )
            }
        }
    }

    /// Learns from the answer (`None`: none came) to `request`, sent to `node` at `now`.
    pub fn observe(
        &mut self,
        now: u64,
        node: NodeId,
        request: &ShardRequest,
        answer: Option<&ShardResponse>,
    ) {
        let GroupsRequest::Group(group, _) = request else {
            return;
        };
        self.router.observe(*group, node, answer);
        let output = match answer {
            Some(GroupResponse::Group(
                _,
                Response::Applied { output, .. } | Response::Read(output),
            )) => output,
            _ => return,
        };
        match (self.work.front().cloned(), output) {
            (None, ShardOutput::InDoubt(list)) => self.on_scan(now, *group, list),
            (
                Some(Work::Decide {
                    tx, group: part, ..
                }),
                ShardOutput::Tx(TxOutput::Decided {
                    outcome, prepared, ..
                }),
            ) => {
                self.work.pop_front();
                self.stats.decisions += 1;
                let prepared_at = prepared.iter().find(|(g, _)| *g == part).map(|(_, at)| *at);
                if *outcome == Outcome::Committed {
                    self.stats.found_committed += 1;
                }
                self.work.push_front(Work::Finish {
                    tx,
                    group: part,
                    outcome: *outcome,
                    prepared_at,
                });
            }
            (Some(Work::Finish { .. }), ShardOutput::Tx(TxOutput::Done)) => {
                self.work.pop_front();
                self.stats.finished += 1;
            }
            (Some(Work::Forget { .. }), ShardOutput::Tx(TxOutput::Done)) => {
                self.work.pop_front();
                self.stats.forgotten += 1;
            }
            (_, ShardOutput::Refused(Refusal::WrongGroup)) => self.work.clear(),
            _ => {}
        }
    }

    fn on_scan(&mut self, now: u64, group: GroupId, list: &[TxInDoubt]) {
        self.stats.scans += 1;
        self.scan = self.scan.wrapping_add(1);
        let mut still = Vec::new();
        for entry in list {
            let tx = match entry {
                TxInDoubt::Prepared { tx, .. } | TxInDoubt::Committed { tx, .. } => *tx,
            };
            still.push(tx);
            let first = *self.seen.entry((group, tx)).or_insert(now);
            if now.saturating_sub(first) < self.resolve_after {
                continue;
            }
            match entry {
                TxInDoubt::Prepared {
                    tx, coordinator, ..
                } => self.work.push_back(Work::Decide {
                    tx: *tx,
                    coordinator: *coordinator,
                    group,
                }),
                TxInDoubt::Committed { tx, prepared } => {
                    for (g, at) in prepared {
                        self.work.push_back(Work::Finish {
                            tx: *tx,
                            group: *g,
                            outcome: Outcome::Committed,
                            prepared_at: Some(*at),
                        });
                    }
                    self.work.push_back(Work::Forget {
                        tx: *tx,
                        coordinator: group,
                    });
                }
            }
        }
        self.seen
            .retain(|(g, tx), _| *g != group || still.contains(tx));
    }
}
