//! The leader's volatile state: one leadership from its phase 1 on, and the bookkeeping of
//! each phase as promises, acceptances and read confirmations arrive (`proposer.rs` sends
//! the messages and routes the answers here).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use common::{NodeId, RequestId};

use crate::message::{Ballot, Command, PromisedEntry, Session, Slot, Value};

use super::reconfig;

/// A slot the leader proposed and has not yet seen chosen.
#[derive(Debug)]
pub(crate) struct InFlight<C> {
    /// Acceptors that accepted it (one bit per member).
    pub acks: u64,
    pub value: Value<C>,
}

/// What the leader gathered in phase 1.
#[derive(Debug)]
pub(crate) struct Promises<C> {
    /// Acceptor -> (its first undecided slot, what it accepted from there on).
    pub by_acceptor: BTreeMap<NodeId, (Slot, Vec<PromisedEntry<C>>)>,
}

/// A round confirming leadership for a batch of reads.
#[derive(Debug)]
pub(crate) struct ReadRound<Q> {
    pub round: u64,
    /// Every slot below this was proposed before the reads arrived.
    pub read_slot: Slot,
    pub acks: u64,
    pub reads: Vec<(RequestId, Q)>,
}

/// The leader's volatile state (lost on a crash; rebuilt by phase 1 of the next leadership).
#[derive(Debug)]
pub(crate) struct Leader<C, Q> {
    pub ballot: Ballot,
    /// `Some` while phase 1 runs.
    pub promises: Option<Promises<C>>,
    /// The slot phase 1 started from (the leader's first undecided slot at the time).
    pub from_slot: Slot,
    /// Every slot below is chosen.
    pub commit: Slot,
    /// The next free slot.
    pub next_slot: Slot,
    /// Slots `commit .. next_slot`.
    pub in_flight: VecDeque<InFlight<C>>,
    /// Commands waiting for a free slot.
    pub queue: VecDeque<(RequestId, Command<C>)>,
    /// Sessions of the commands this leadership holds: queued, or in a slot it proposed or
    /// re-proposed and has not applied yet. A retry of one of them takes no second slot.
    pub held: BTreeSet<Session>,
    /// Every slot below this was chosen before this leadership's phase 1 (the highest decided
    /// prefix its promises reported); it proposes client commands only once it has applied
    /// them, so that its session table covers every command chosen before it.
    pub phase1_start: Slot,
    /// A requested reconfiguration not yet proposed (it waits for room in the pipeline).
    pub reconfig: Option<Vec<NodeId>>,
    /// The slot of the stop-sign this leadership proposed or re-proposed: nothing is proposed
    /// after it (see `reconfig.rs`).
    pub stop_sign: Option<Slot>,
    /// The commit index last sent to followers.
    pub commit_sent: Slot,
    pub retransmit_in: u64,
    pub read_round: u64,
    pub reads_waiting: Vec<(RequestId, Q)>,
    pub read_probe: Option<ReadRound<Q>>,
    /// Confirmed reads waiting for the state machine to apply their slot.
    pub reads_ready: Vec<(Slot, RequestId, Q)>,
}

impl<C, Q> Leader<C, Q> {
    /// Whether phase 1 completed.
    pub(crate) fn is_active(&self) -> bool {
        self.promises.is_none()
    }

    pub(crate) fn in_flight(&self) -> u64 {
        self.next_slot - self.commit
    }

    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }

    /// A leadership of `ballot` entering phase 1 from `from_slot`, the leader's first
    /// undecided slot.
    pub(crate) fn new(ballot: Ballot, from_slot: Slot, retransmit_ticks: u64) -> Self {
        Leader {
            ballot,
            promises: Some(Promises {
                by_acceptor: BTreeMap::new(),
            }),
            from_slot,
            commit: from_slot,
            next_slot: from_slot,
            in_flight: VecDeque::new(),
            queue: VecDeque::new(),
            held: BTreeSet::new(),
            phase1_start: from_slot,
            reconfig: None,
            stop_sign: None,
            commit_sent: from_slot,
            retransmit_in: retransmit_ticks,
            read_round: 0,
            reads_waiting: Vec::new(),
            read_probe: None,
            reads_ready: Vec::new(),
        }
    }

    /// Phase 1b at the leader: records the promise `from` an acceptor, whose decided prefix
    /// ends at `decided` and whose window is `window` slots.
    pub(crate) fn record_promise(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        decided: Slot,
        accepted: Vec<PromisedEntry<C>>,
        window: u64,
    ) -> Promised {
        if ballot != self.ballot {
            return Promised::Ignored; // a promise for an older leadership
        }
        let Some(promises) = self.promises.as_mut() else {
            return Promised::Ignored; // phase 1 already completed
        };
        // Untrusted content: entries must be in increasing slot order, inside the acceptor's
        // window, and accepted under ballots below the one just promised.
        let well_formed = accepted.windows(2).all(|w| w[0].slot < w[1].slot)
            && accepted.iter().all(|e| {
                e.ballot < ballot
                    && e.slot >= decided.max(self.from_slot)
                    && e.slot < decided.saturating_add(window)
            });
        if !well_formed {
            return Promised::Malformed;
        }
        promises.by_acceptor.insert(from, (decided, accepted));
        Promised::Counted(promises.by_acceptor.len())
    }

    /// Phase 2b at the leader: acceptor `bit` accepted `count` slots from `slot` on. Returns
    /// the new commit index if slots became chosen (step 5 of the paper, as the leader sees
    /// it: a majority accepted).
    pub(crate) fn record_accepted(
        &mut self,
        bit: u64,
        ballot: Ballot,
        slot: Slot,
        count: u64,
        majority: u32,
    ) -> Option<Slot> {
        if ballot != self.ballot || !self.is_active() {
            return None; // an answer to an older leadership
        }
        let lo = slot.max(self.commit);
        let hi = slot.saturating_add(count).min(self.next_slot);
        for s in lo..hi {
            let i = (s - self.commit) as usize;
            self.in_flight[i].acks |= bit;
        }
        let mut advanced = false;
        while self
            .in_flight
            .front()
            .is_some_and(|f| f.acks.count_ones() >= majority)
        {
            self.in_flight.pop_front();
            self.commit += 1;
            advanced = true;
        }
        advanced.then_some(self.commit)
    }

    /// Acceptor `bit` confirmed `ballot` for read round `round`. `true` once a majority did:
    /// the round's reads are confirmed and wait for their slot to be applied.
    pub(crate) fn record_read_ack(
        &mut self,
        bit: u64,
        ballot: Ballot,
        round: u64,
        majority: u32,
    ) -> bool {
        if self.ballot != ballot {
            return false;
        }
        let Some(probe) = self.read_probe.as_mut() else {
            return false;
        };
        if probe.round != round {
            return false;
        }
        probe.acks |= bit;
        if probe.acks.count_ones() < majority {
            return false;
        }
        if let Some(done) = self.read_probe.take() {
            let read_slot = done.read_slot;
            self.reads_ready
                .extend(done.reads.into_iter().map(|(id, q)| (read_slot, id, q)));
        }
        true
    }
}

impl<C: Clone, Q> Leader<C, Q> {
    /// Rule 1 of `reconfig.rs`: a fresh stop-sign goes in the next free slot, after everything
    /// phase 1 found, and ends this leadership's slots. Returns it, to be sent.
    pub(crate) fn push_stop_sign(&mut self, members: Vec<NodeId>) -> Value<C> {
        let value = Value::StopSign {
            epoch: self.ballot.epoch + 1,
            members,
        };
        self.stop_sign = Some(self.next_slot);
        self.in_flight.push_back(InFlight {
            acks: 0,
            value: value.clone(),
        });
        self.next_slot += 1;
        value
    }

    /// Step 2(a) of the paper for every slot at once, once a majority promised: chooses what to
    /// propose in each slot from the promises, and makes those slots the in-flight window.
    /// Returns the first slot and the values, or `None` if phase 1 was over already.
    pub(crate) fn complete_phase1(&mut self) -> Option<(Slot, Vec<Value<C>>)> {
        let promises = self.promises.take()?;
        // Slots below the highest decided prefix reported are chosen already: learners fetch
        // them; the leader proposes from there on.
        let start = promises
            .by_acceptor
            .values()
            .map(|(d, _)| *d)
            .max()
            .unwrap_or(self.from_slot)
            .max(self.from_slot);
        // For each slot, the value accepted under the highest ballot (the paper's rule), among
        // ballots of this configuration only (older epochs' entries were never chosen: their
        // configuration had ended before these slots, see `reconfig.rs`).
        let epoch = self.ballot.epoch;
        let mut chosen: BTreeMap<Slot, (Ballot, Value<C>)> = BTreeMap::new();
        for (_, entries) in promises.by_acceptor.values() {
            for e in entries
                .iter()
                .filter(|e| e.slot >= start && e.ballot.epoch == epoch)
            {
                let better = chosen.get(&e.slot).is_none_or(|(b, _)| e.ballot > *b);
                if better {
                    chosen.insert(e.slot, (e.ballot, e.value.clone()));
                }
            }
        }
        // A stop-sign that stands ends this leadership's slots; a void one becomes a no-op.
        self.stop_sign = reconfig::settle_stop_signs(&mut chosen);
        let end = chosen.keys().next_back().map_or(start, |s| s + 1);
        // Holes below the last reported slot become no-ops so the log can be applied in order.
        let values: Vec<Value<C>> = (start..end)
            .map(|s| chosen.remove(&s).map_or(Value::Noop, |(_, v)| v))
            .collect();
        self.commit = start;
        self.commit_sent = start;
        self.next_slot = end;
        self.phase1_start = start;
        // Commands phase 1 found are this leadership's now: a retry of one attaches to it.
        for v in &values {
            if let Value::Batch { commands, .. } = v {
                self.held.extend(commands.iter().filter_map(|c| c.session));
            }
        }
        self.in_flight = values
            .iter()
            .map(|v| InFlight {
                acks: 0,
                value: v.clone(),
            })
            .collect();
        Some((start, values))
    }
}

/// What became of a promise that reached the leader.
pub(crate) enum Promised {
    /// For another leadership, or after phase 1: no effect.
    Ignored,
    /// Its content contradicts itself or the ballot: rejected.
    Malformed,
    /// Counted: this many acceptors promised so far.
    Counted(usize),
}
