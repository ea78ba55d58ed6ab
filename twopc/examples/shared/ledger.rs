//! A bank ledger as a resource manager ([`Resource`]) for the atomic-commit protocols: the bank
//! transfer examples of `twopc` and `threepc` both use it (`threepc` includes this file).
//!
//! A write is a **delta**: `value` holds an `i64` (8 bytes, little-endian) added to the
//! account's balance at commit. Deltas commute, so two transfers touching the same account never
//! overwrite each other: a blind `put` of a computed balance would lose updates between
//! concurrent transfers, since a transaction here has no read phase. Locks are no-wait, like
//! [`common::txn::MemKv`]: a prepare that finds an account locked by another prepared transfer
//! fails, the participant votes No and the client retries.
//!
//! Simplification: overdrafts are allowed (balances may go negative). A real bank would refuse
//! them at prepare; the shared [`PrepareError`] has no variant for it, and the examples' point is
//! the conserved total, which holds either way.

use std::collections::BTreeMap;

use common::txn::{PrepareError, Resource, ResourceError, StageError, TxId, Write};

/// Bytes of an encoded delta.
pub const DELTA_BYTES: usize = 8;
/// Transactions staged or prepared at once, at most.
pub const LEDGER_OPEN_TXS_MAX: usize = 4096;
/// Writes of one transaction at one participant, at most.
pub const LEDGER_WRITES_PER_TX_MAX: usize = 64;

/// The value of a write that adds `amount` to its account.
pub fn delta(amount: i64) -> Vec<u8> {
    amount.to_le_bytes().to_vec()
}

fn decode(write: &Write) -> Option<i64> {
    let bytes: [u8; DELTA_BYTES] = write.value.as_deref()?.try_into().ok()?;
    Some(i64::from_le_bytes(bytes))
}

#[derive(Debug)]
struct OpenTx {
    writes: Vec<Write>,
    deltas: Vec<(String, i64)>,
    prepared: bool,
}

/// Account balances with delta writes and no-wait locks.
#[derive(Debug, Default)]
pub struct Ledger {
    balances: BTreeMap<String, i64>,
    open: BTreeMap<TxId, OpenTx>,
    locks: BTreeMap<String, TxId>,
}

impl Ledger {
    /// Committed balances.
    pub fn balances(&self) -> &BTreeMap<String, i64> {
        &self.balances
    }

    /// The sum of the committed balances.
    pub fn total(&self) -> i64 {
        self.balances.values().sum()
    }

    fn unlock(&mut self, tx: TxId, deltas: &[(String, i64)]) {
        for (account, _) in deltas {
            if self.locks.get(account) == Some(&tx) {
                self.locks.remove(account);
            }
        }
    }
}

impl Resource for Ledger {
    fn stage(&mut self, tx: TxId, writes: Vec<Write>) -> Result<(), StageError> {
        // Bytes from the network: a value that is not exactly one delta is refused, typed.
        let mut deltas = Vec::with_capacity(writes.len());
        for w in &writes {
            let amount = decode(w).ok_or(StageError::TooLarge {
                tx,
                limit: DELTA_BYTES,
            })?;
            deltas.push((w.key.clone(), amount));
        }
        if !self.open.contains_key(&tx) && self.open.len() >= LEDGER_OPEN_TXS_MAX {
            return Err(StageError::Busy {
                limit: LEDGER_OPEN_TXS_MAX,
            });
        }
        let open = self.open.entry(tx).or_insert_with(|| OpenTx {
            writes: Vec::new(),
            deltas: Vec::new(),
            prepared: false,
        });
        if open.prepared {
            return Err(StageError::NotActive(tx));
        }
        let total = open.deltas.len() + deltas.len();
        if total > LEDGER_WRITES_PER_TX_MAX {
            return Err(StageError::TooManyWrites {
                tx,
                writes: total,
                limit: LEDGER_WRITES_PER_TX_MAX,
            });
        }
        open.deltas.extend(deltas);
        open.writes.extend(writes);
        Ok(())
    }

    fn prepare(&mut self, tx: TxId) -> Result<(), PrepareError> {
        let Some(open) = self.open.get(&tx) else {
            return Err(PrepareError::Unknown(tx));
        };
        if open.prepared {
            return Ok(());
        }
        for (account, _) in &open.deltas {
            if let Some(&holder) = self.locks.get(account) {
                if holder != tx {
                    return Err(PrepareError::Conflict {
                        key: account.clone(),
                        holder,
                    });
                }
            }
        }
        for (account, _) in &open.deltas {
            self.locks.insert(account.clone(), tx);
        }
        if let Some(open) = self.open.get_mut(&tx) {
            open.prepared = true;
        }
        Ok(())
    }

    fn commit(&mut self, tx: TxId) -> Result<(), ResourceError> {
        match self.open.remove(&tx) {
            Some(open) if open.prepared => {
                self.unlock(tx, &open.deltas);
                for (account, amount) in open.deltas {
                    *self.balances.entry(account).or_default() += amount;
                }
                Ok(())
            }
            Some(open) => {
                self.open.insert(tx, open);
                Err(ResourceError::NotPrepared(tx))
            }
            None => Err(ResourceError::NotPrepared(tx)),
        }
    }

    fn abort(&mut self, tx: TxId) {
        if let Some(open) = self.open.remove(&tx) {
            self.unlock(tx, &open.deltas);
        }
    }

    fn recover_prepared(&mut self, tx: TxId, writes: Vec<Write>) -> Result<(), ResourceError> {
        let deltas: Vec<(String, i64)> = writes
            .iter()
            .filter_map(|w| decode(w).map(|d| (w.key.clone(), d)))
            .collect();
        for (account, _) in &deltas {
            if let Some(&holder) = self.locks.get(account) {
                if holder != tx {
                    return Err(ResourceError::LockTaken {
                        tx,
                        key: account.clone(),
                        holder,
                    });
                }
            }
        }
        for (account, _) in &deltas {
            self.locks.insert(account.clone(), tx);
        }
        self.open.insert(
            tx,
            OpenTx {
                writes,
                deltas,
                prepared: true,
            },
        );
        Ok(())
    }

    fn staged(&self, tx: TxId) -> Option<&[Write]> {
        self.open.get(&tx).map(|o| o.writes.as_slice())
    }

    fn is_prepared(&self, tx: TxId) -> bool {
        self.open.get(&tx).is_some_and(|o| o.prepared)
    }
}
