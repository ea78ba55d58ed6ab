//! The atomic-commit checker: agreement, durability of reported commits, exactly-once
//! application.
//!
//! Feed it what was observed during a run (simulated or real) and ask it whether atomic commit
//! held (Bernstein, Hadzilacos & Goodman, ch. 7, rules AC1–AC2):
//!
//! - **Agreement** (AC1): no transaction is committed at one participant and aborted at another,
//!   and no participant changes its mind. Checkable after every step
//!   ([`AtomicChecker::check_agreement`]).
//! - **Validity of reports**: a transaction reported committed to the client is aborted nowhere;
//!   one reported aborted is committed nowhere.
//! - **Durability**: a commit reported to the client is applied at every participant that writes,
//!   once the run has settled (everyone recovered and quiet): [`AtomicChecker::check_final`].
//! - **Exactly once**: a participant applies each committed transaction's writes once, never
//!   twice, and never those of a transaction that did not commit.
//!
//! ```
//! use common::check::atomic::{AtomicChecker, AtomicViolation};
//! use common::txn::{Outcome, TxId};
//!
//! let t = TxId::new(1, 0);
//! let mut check = AtomicChecker::new();
//! check.client_outcome(t, Outcome::Committed, &[2, 3]);
//! check.participant_outcome(2, t, Outcome::Committed);
//! check.participant_outcome(3, t, Outcome::Committed);
//! check.check_agreement().unwrap();
//! check.set_applied(2, [t]);
//! check.set_applied(3, []); // participant 3 lost the commit
//! assert_eq!(
//!     check.check_final(),
//!     Err(AtomicViolation::CommitNotApplied { tx: t, participant: 3 })
//! );
//! ```

use std::collections::{BTreeMap, BTreeSet};

use crate::txn::{Outcome, TxId};
use crate::NodeId;

/// A broken atomic-commit property, with the evidence.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AtomicViolation {
    /// `tx` committed at `committed_at` and aborted at `aborted_at`.
    #[error("{tx} committed at {committed_at} but aborted at {aborted_at}")]
    Split {
        /// The transaction.
        tx: TxId,
        /// A participant that committed it.
        committed_at: NodeId,
        /// A participant that aborted it.
        aborted_at: NodeId,
    },
    /// A participant reported two different outcomes for `tx`.
    #[error("{tx}: participant {participant} reported both outcomes")]
    ChangedMind {
        /// The transaction.
        tx: TxId,
        /// The participant.
        participant: NodeId,
    },
    /// The client was told `reported`, but `participant` ended the other way.
    #[error("{tx} reported {reported} to the client but participant {participant} disagrees")]
    ReportContradicted {
        /// The transaction.
        tx: TxId,
        /// What the client was told.
        reported: Outcome,
        /// A participant that ended the other way.
        participant: NodeId,
    },
    /// The client was told two different outcomes for `tx`.
    #[error("{tx}: the client was told both outcomes")]
    ReportChanged {
        /// The transaction.
        tx: TxId,
    },
    /// A commit reported to the client is not applied at one of its participants.
    #[error("{tx} reported committed but not applied at participant {participant}")]
    CommitNotApplied {
        /// The transaction.
        tx: TxId,
        /// The participant missing it.
        participant: NodeId,
    },
    /// A participant applied `tx` more than once.
    #[error("{tx} applied {times} times at participant {participant}")]
    AppliedTwice {
        /// The transaction.
        tx: TxId,
        /// The participant.
        participant: NodeId,
        /// How many times.
        times: usize,
    },
    /// A participant applied a transaction that was aborted (by a participant or the client
    /// report).
    #[error("{tx} applied at participant {participant} but it aborted")]
    AppliedButAborted {
        /// The transaction.
        tx: TxId,
        /// The participant.
        participant: NodeId,
    },
}

/// Collects observed outcomes and applied transactions and checks atomic commit (see the module
/// documentation).
#[derive(Clone, Debug, Default)]
pub struct AtomicChecker {
    /// Outcome of each transaction at each participant that reported one.
    outcomes: BTreeMap<TxId, BTreeMap<NodeId, Outcome>>,
    /// The first violation seen while recording (a participant changing its mind).
    recorded_violation: Option<AtomicViolation>,
    /// What the client was told, and the participants that write.
    reports: BTreeMap<TxId, (Outcome, BTreeSet<NodeId>)>,
    /// The transactions each participant applied, in order (set by `set_applied`).
    applied: BTreeMap<NodeId, Vec<TxId>>,
}

impl AtomicChecker {
    /// An empty checker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Participant `participant` ended `tx` with `outcome`. Reporting the same outcome again is
    /// harmless (participants re-announce after recovery).
    pub fn participant_outcome(&mut self, participant: NodeId, tx: TxId, outcome: Outcome) {
        let at = self.outcomes.entry(tx).or_default();
        match at.get(&participant) {
            Some(&earlier) if earlier != outcome => {
                self.recorded_violation
                    .get_or_insert(AtomicViolation::ChangedMind { tx, participant });
            }
            _ => {
                at.insert(participant, outcome);
            }
        }
    }

    /// The client was told `outcome` for `tx`, whose writing participants are `participants`
    /// (the ones that must apply a commit).
    pub fn client_outcome(&mut self, tx: TxId, outcome: Outcome, participants: &[NodeId]) {
        match self.reports.get(&tx) {
            Some((earlier, _)) if *earlier != outcome => {
                self.recorded_violation
                    .get_or_insert(AtomicViolation::ReportChanged { tx });
            }
            _ => {
                self.reports
                    .insert(tx, (outcome, participants.iter().copied().collect()));
            }
        }
    }

    /// The transactions `participant` has applied so far, oldest first (replaces what was set
    /// before for it: pass the participant's whole history).
    pub fn set_applied(&mut self, participant: NodeId, applied: impl IntoIterator<Item = TxId>) {
        self.applied
            .insert(participant, applied.into_iter().collect());
    }

    /// How many transactions have a reported client outcome.
    pub fn reported(&self) -> usize {
        self.reports.len()
    }

    /// How many reported outcomes are commits.
    pub fn reported_committed(&self) -> usize {
        self.reports
            .values()
            .filter(|(o, _)| *o == Outcome::Committed)
            .count()
    }

    /// Agreement and validity of reports, on what was observed so far. Holds at every instant of
    /// a correct run, so a simulator may call it after every step.
    pub fn check_agreement(&self) -> Result<(), AtomicViolation> {
        if let Some(v) = &self.recorded_violation {
            return Err(v.clone());
        }
        for (&tx, at) in &self.outcomes {
            let committed = at.iter().find(|(_, o)| **o == Outcome::Committed);
            let aborted = at.iter().find(|(_, o)| **o == Outcome::Aborted);
            if let (Some((&c, _)), Some((&a, _))) = (committed, aborted) {
                return Err(AtomicViolation::Split {
                    tx,
                    committed_at: c,
                    aborted_at: a,
                });
            }
            if let Some((reported, _)) = self.reports.get(&tx) {
                if let Some((&p, _)) = at.iter().find(|(_, o)| *o != reported) {
                    return Err(AtomicViolation::ReportContradicted {
                        tx,
                        reported: *reported,
                        participant: p,
                    });
                }
            }
        }
        self.check_applied_once()
    }

    fn aborted_somewhere(&self, tx: TxId) -> bool {
        self.outcomes
            .get(&tx)
            .is_some_and(|at| at.values().any(|o| *o == Outcome::Aborted))
            || matches!(self.reports.get(&tx), Some((Outcome::Aborted, _)))
    }

    fn check_applied_once(&self) -> Result<(), AtomicViolation> {
        for (&participant, applied) in &self.applied {
            let mut counts: BTreeMap<TxId, usize> = BTreeMap::new();
            for &tx in applied {
                *counts.entry(tx).or_default() += 1;
            }
            for (tx, times) in counts {
                if times > 1 {
                    return Err(AtomicViolation::AppliedTwice {
                        tx,
                        participant,
                        times,
                    });
                }
                if self.aborted_somewhere(tx) {
                    return Err(AtomicViolation::AppliedButAborted { tx, participant });
                }
            }
        }
        Ok(())
    }

    /// Everything [`check_agreement`](Self::check_agreement) checks, plus durability: every
    /// commit reported to the client is applied at each of its participants. Call it once the run
    /// has settled (crashed nodes restarted, network healed, in-doubt transactions resolved) and
    /// every participant's history was given to [`set_applied`](Self::set_applied).
    pub fn check_final(&self) -> Result<(), AtomicViolation> {
        self.check_agreement()?;
        for (&tx, (outcome, participants)) in &self.reports {
            if *outcome != Outcome::Committed {
                continue;
            }
            for &p in participants {
                let applied = self.applied.get(&p).is_some_and(|list| list.contains(&tx));
                if !applied {
                    return Err(AtomicViolation::CommitNotApplied { tx, participant: p });
                }
            }
        }
        Ok(())
    }
}
