//! The coordinator's side of the skeleton: transaction ids and their durable reservation
//! ([`TxIds`]), and [`Coordination`], which admits a client's transaction (valid participants,
//! room) and announces decisions (counted, published, answered). What a coordinator does between
//! admission and decision is its protocol's.

use std::collections::BTreeMap;

use super::{AtomicCommit, Outcome, Response, TxError, TxId, TxnConfig, Write};
use crate::{NodeId, Outbox, RequestId};

/// How many transaction sequence numbers a coordinator reserves with one durable record.
pub const SEQ_BLOCK: u64 = 1024;

/// The coordinator's transaction numbering. Sequence numbers are reserved durably a block
/// ([`SEQ_BLOCK`]) at a time, before any message names one of them, so a restarted coordinator
/// skips every number it may have used and never hands out a [`TxId`] twice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxIds {
    next_seq: u64,
    seq_limit: u64,
}

impl TxIds {
    /// Replays a reservation record: numbers below `seq_limit` may have been used before the
    /// crash, so numbering continues past them.
    pub fn replay_reserved(&mut self, seq_limit: u64) {
        self.seq_limit = self.seq_limit.max(seq_limit);
        self.next_seq = self.seq_limit;
    }

    /// The next transaction id of coordinator `id`. When the reserved block is used up, the next
    /// block's reservation is persisted in this step, so it is durable before any message of the
    /// step names a number from it (the Outbox rule).
    pub fn allocate<N: AtomicCommit>(&mut self, id: NodeId, out: &mut Outbox<N>) -> TxId {
        if self.next_seq >= self.seq_limit {
            self.seq_limit = self.next_seq + SEQ_BLOCK;
            out.persist(N::reserved_record(self.seq_limit));
        }
        let tx = TxId::new(id, self.next_seq);
        self.next_seq += 1;
        tx
    }
}

/// What every coordinator keeps besides its transactions in progress: their numbering and the
/// count of decisions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coordination {
    /// Transaction numbering.
    pub ids: TxIds,
    /// Transactions decided commit.
    pub decided_committed: u64,
    /// Transactions decided abort.
    pub decided_aborted: u64,
}

impl Coordination {
    /// Admits a client's transaction and names it: refuses invalid participants
    /// ([`TxError::InvalidParticipants`]) and, with `open` transactions already in progress, a
    /// full coordinator ([`TxError::Busy`]), answering the client; otherwise allocates its id.
    pub fn begin<N: AtomicCommit>(
        &mut self,
        config: &TxnConfig,
        open: usize,
        request: RequestId,
        writes: &BTreeMap<NodeId, Vec<Write>>,
        out: &mut Outbox<N>,
    ) -> Option<TxId> {
        if !config.valid_participants(writes) {
            let named = writes.keys().copied().collect();
            out.respond(
                request,
                Response::Failed(TxError::InvalidParticipants(named)),
            );
            return None;
        }
        if open >= config.txs_max {
            out.respond(request, Response::Failed(TxError::Busy));
            return None;
        }
        Some(self.ids.allocate(config.id, out))
    }

    /// Announces that `tx` was decided: counts it, publishes the decision and answers the
    /// waiting client, if any (none after recovery).
    pub fn decided<N: AtomicCommit>(
        &mut self,
        tx: TxId,
        outcome: Outcome,
        request: Option<RequestId>,
        out: &mut Outbox<N>,
    ) {
        match outcome {
            Outcome::Committed => self.decided_committed += 1,
            Outcome::Aborted => self.decided_aborted += 1,
        }
        out.emit(N::decided_event(tx, outcome));
        if let Some(request) = request {
            out.respond(request, Response::Outcome { tx, outcome });
        }
    }
}
