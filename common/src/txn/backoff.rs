//! Retransmission pacing shared by the atomic-commit cores: exponential [`Backoff`] with a cap,
//! and a per-tick [`SendBudget`].
//!
//! # Why back off
//!
//! A commit protocol resends what was not answered: a vote request, a decision, a status query.
//! If it resends at a fixed rate, a slow network is hit hardest exactly when it is slowest: every
//! unanswered exchange keeps adding copies, the copies queue behind each other, answers come later
//! still, and more exchanges stay unanswered — a retransmission storm that can saturate the
//! network for good (the congestion collapse TCP's exponential retransmission backoff was designed
//! against; Jacobson, "Congestion avoidance and control", 1988). Doubling the wait after each
//! unanswered resend makes the copies of one exchange in flight at any time a small constant,
//! whatever the delay; the cap keeps a lost message from waiting unboundedly long for its resend
//! once the network is fast again.
//!
//! Backoff changes only *when* a message is resent, never whether: no decision rule depends on it,
//! so it cannot cost atomicity. Timeouts that decide (a vote timeout, 3PC's termination timeout)
//! are separate and do not back off, except where waiting longer is the safe side.
//!
//! ```
//! use common::txn::Backoff;
//!
//! let mut b = Backoff::new(2, 8);
//! let mut sent_at = Vec::new();
//! for t in 1..=40 {
//!     if b.tick() {
//!         b.sent();
//!         sent_at.push(t);
//!     }
//! }
//! // Waits of 2, 4, 8, then 8 (the cap) between resends.
//! assert_eq!(sent_at, [2, 6, 14, 22, 30, 38]);
//! ```

/// The pacing of one unanswered exchange: the first resend comes `base` ticks after the first
/// send, and each resend doubles the wait, up to `max` ticks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Backoff {
    base: u64,
    max: u64,
    interval: u64,
    waited: u64,
}

impl Backoff {
    /// Pacing for a message just sent: the first resend is due `base` ticks from now. `base` is
    /// taken as at least 1 and `max` as at least `base`.
    pub fn new(base: u64, max: u64) -> Self {
        let base = base.max(1);
        Self {
            base,
            max: max.max(base),
            interval: base,
            waited: 0,
        }
    }

    /// Pacing for a message not sent yet (a node that recovered an exchange from its log): due
    /// at the next tick.
    pub fn due_now(base: u64, max: u64) -> Self {
        let mut b = Self::new(base, max);
        b.waited = b.interval;
        b
    }

    /// One tick passed. Returns whether a resend is due. A due resend stays due until
    /// [`Backoff::sent`] is called (it may be deferred by a [`SendBudget`]).
    pub fn tick(&mut self) -> bool {
        self.waited = self.waited.saturating_add(1);
        self.is_due()
    }

    /// Whether a resend is due.
    pub fn is_due(&self) -> bool {
        self.waited >= self.interval
    }

    /// The resend went out: the next one waits twice as long (up to the cap).
    pub fn sent(&mut self) {
        self.waited = 0;
        self.interval = self.interval.saturating_mul(2).min(self.max);
    }

    /// The peer answered (the exchange made progress): back to the base interval, counted from
    /// now.
    pub fn reset(&mut self) {
        self.waited = 0;
        self.interval = self.base;
    }

    /// The current wait between two resends.
    pub fn interval(&self) -> u64 {
        self.interval
    }
}

/// How many retransmissions a node may still send during the current tick.
///
/// A node creates one per tick with its configured limit and asks it before each resend batch
/// (all the copies of one exchange, to each peer that has not answered). A batch that does not
/// fit is deferred, not dropped: its [`Backoff`] stays due and it goes out at a later tick. The
/// cores validate that the limit is at least the largest batch (one message per participant), so
/// every batch eventually fits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendBudget {
    left: usize,
}

impl SendBudget {
    /// A budget of `max` messages.
    pub fn new(max: usize) -> Self {
        Self { left: max }
    }

    /// Takes `n` messages from the budget if they fit; returns whether they did.
    pub fn take(&mut self, n: usize) -> bool {
        if n <= self.left {
            self.left -= n;
            true
        } else {
            false
        }
    }

    /// Messages left this tick.
    pub fn left(&self) -> usize {
        self.left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(3, 20);
        let mut gaps = Vec::new();
        let mut last = 0;
        for t in 1..=200u64 {
            if b.tick() {
                b.sent();
                gaps.push(t - last);
                last = t;
            }
        }
        assert_eq!(&gaps[..5], &[3, 6, 12, 20, 20]);
        assert!(gaps.iter().all(|g| *g <= 20));
        b.reset();
        assert_eq!(b.interval(), 3);
        assert!(!b.tick() && !b.tick() && b.tick());
    }

    #[test]
    fn a_deferred_resend_stays_due() {
        let mut b = Backoff::due_now(4, 8);
        assert!(b.is_due());
        assert!(b.tick() && b.tick(), "not sent: still due");
        b.sent();
        assert_eq!(b.interval(), 8);
        assert!(!b.is_due());
    }

    #[test]
    fn degenerate_bounds_are_clamped() {
        let b = Backoff::new(0, 0);
        assert_eq!(b.interval(), 1);
        let mut b = Backoff::new(5, 2);
        b.sent();
        assert_eq!(b.interval(), 5, "the cap is at least the base");
    }

    #[test]
    fn budget_is_all_or_nothing_per_batch() {
        let mut s = SendBudget::new(5);
        assert!(s.take(3));
        assert!(!s.take(3), "a batch that does not fit takes nothing");
        assert_eq!(s.left(), 2);
        assert!(s.take(2));
        assert!(!s.take(1));
    }
}
