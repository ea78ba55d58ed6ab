//! The one retry policy every client in the workspace follows to find a leader.
//!
//! A client of a replicated group sends its request to the node it believes leads. The answer
//! is either the result, or one of three ways of failing that say where to go next:
//!
//! - **redirected**: the node is not the leader and may name the one it knows
//!   ([`FollowLeader::redirected`]). A named leader that the client knows is tried at once; with
//!   no name (an election is likely under way) the client moves to the next node after a wait;
//! - **failed**: the node refused or could not be reached before anything was sent
//!   ([`FollowLeader::failed`]): next node, after a wait;
//! - **lost**: the attempt itself timed out or its connection broke after sending
//!   ([`FollowLeader::lost`]): next node at once, since the attempt already spent its timeout.
//!
//! Waits grow exponentially from [`RetryLimits::backoff_min`] to [`RetryLimits::backoff_max`]
//! with jitter, so a crowd of clients that lost their leader together does not return in step;
//! a redirect to a named leader resets them. After [`RetryLimits::attempts_max`] attempts the
//! policy gives up ([`Retry::GiveUp`]). The policy only decides: it never sleeps or sends, so
//! the async clients (`raft::RaftClient`, `paxos::PaxosClient`, `kv::net::KvClient`) share it and a
//! test can check its decisions without a clock.
//!
//! The delays come from [`backon`]'s exponential builder; following the leader is this module's
//! own small piece.
//!
//! ```
//! use std::time::Duration;
//! use common::retry::{FollowLeader, Retry, RetryLimits};
//!
//! let limits = RetryLimits { attempts_max: 4, ..RetryLimits::default() };
//! let mut policy = FollowLeader::new(vec![1, 2, 3], 1, limits);
//! assert_eq!(policy.target(), 1);
//! // Node 1 says node 3 leads: go there at once.
//! assert_eq!(policy.redirected(Some(3)), Retry::After { target: 3, wait: Duration::ZERO });
//! // Node 3 knows no leader: try the next node after a wait.
//! let Retry::After { target, wait } = policy.redirected(None) else { panic!() };
//! assert_eq!(target, 1);
//! assert!(wait >= limits.backoff_min);
//! assert_eq!(policy.lost(), Retry::After { target: 2, wait: Duration::ZERO });
//! assert_eq!(policy.failed(), Retry::GiveUp);
//! ```

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

use crate::NodeId;

/// How many attempts a client makes before giving up, by default.
pub const ATTEMPTS_MAX_DEFAULT: usize = 64;
/// The first wait after an attempt that found no leader, by default.
pub const BACKOFF_MIN_DEFAULT: Duration = Duration::from_millis(5);
/// The longest wait between two attempts, by default.
pub const BACKOFF_MAX_DEFAULT: Duration = Duration::from_millis(200);

/// The limits of [`FollowLeader`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryLimits {
    /// Attempts at most, the first one included.
    pub attempts_max: usize,
    /// The first wait after an attempt that found no leader.
    pub backoff_min: Duration,
    /// The longest wait (before jitter, which adds up to the wait again).
    pub backoff_max: Duration,
}

impl Default for RetryLimits {
    fn default() -> Self {
        Self {
            attempts_max: ATTEMPTS_MAX_DEFAULT,
            backoff_min: BACKOFF_MIN_DEFAULT,
            backoff_max: BACKOFF_MAX_DEFAULT,
        }
    }
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Try `target` after `wait` (zero: at once).
    After {
        /// The node to try next.
        target: NodeId,
        /// How long to wait first.
        wait: Duration,
    },
    /// The attempts are spent.
    GiveUp,
}

/// The leader-following retry policy of one request (see the module documentation).
#[derive(Debug)]
pub struct FollowLeader {
    members: Vec<NodeId>,
    target: NodeId,
    attempts: usize,
    limits: RetryLimits,
    backoff: ExponentialBackoff,
}

impl FollowLeader {
    /// A policy over `members` that starts at `first` (the leader the client last knew; any
    /// member if it knows none).
    pub fn new(members: Vec<NodeId>, first: NodeId, limits: RetryLimits) -> Self {
        Self {
            members,
            target: first,
            attempts: 1,
            backoff: Self::backoff(&limits),
            limits,
        }
    }

    fn backoff(limits: &RetryLimits) -> ExponentialBackoff {
        ExponentialBuilder::new()
            .with_min_delay(limits.backoff_min)
            .with_max_delay(limits.backoff_max.max(limits.backoff_min))
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// The node to send the current attempt to.
    pub fn target(&self) -> NodeId {
        self.target
    }

    /// Attempts made so far, the current one included.
    pub fn attempts(&self) -> usize {
        self.attempts
    }

    /// Adds a member learned on the way (a node added at run time), so a redirect to it is
    /// followed.
    pub fn learn(&mut self, id: NodeId) {
        if !self.members.contains(&id) {
            self.members.push(id);
        }
    }

    /// The target said it does not lead; `hint` is the leader it named, if any.
    pub fn redirected(&mut self, hint: Option<NodeId>) -> Retry {
        match hint.filter(|l| *l != self.target && self.members.contains(l)) {
            Some(leader) => {
                self.backoff = Self::backoff(&self.limits);
                self.next(leader, false)
            }
            None => {
                let next = self.next_in_turn();
                self.next(next, true)
            }
        }
    }

    /// The target refused, or could not be reached before the request was sent.
    pub fn failed(&mut self) -> Retry {
        let next = self.next_in_turn();
        self.next(next, true)
    }

    /// The attempt timed out or broke after the request was sent.
    pub fn lost(&mut self) -> Retry {
        let next = self.next_in_turn();
        self.next(next, false)
    }

    fn next_in_turn(&self) -> NodeId {
        match self.members.iter().position(|m| *m == self.target) {
            Some(i) => self.members[(i + 1) % self.members.len()],
            None => self.members.first().copied().unwrap_or(self.target),
        }
    }

    fn next(&mut self, target: NodeId, wait: bool) -> Retry {
        if self.attempts >= self.limits.attempts_max {
            return Retry::GiveUp;
        }
        self.attempts += 1;
        self.target = target;
        let wait = if wait {
            self.backoff.next().unwrap_or(self.limits.backoff_max)
        } else {
            Duration::ZERO
        };
        Retry::After { target, wait }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(attempts_max: usize) -> RetryLimits {
        RetryLimits {
            attempts_max,
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(40),
        }
    }

    #[test]
    fn a_named_leader_is_followed_at_once_and_an_unknown_one_is_not() {
        let mut p = FollowLeader::new(vec![1, 2, 3], 1, limits(10));
        assert_eq!(
            p.redirected(Some(2)),
            Retry::After {
                target: 2,
                wait: Duration::ZERO
            }
        );
        // A node the client does not know, or the target itself, is no hint.
        let Retry::After { target, wait } = p.redirected(Some(9)) else {
            panic!("gave up early")
        };
        assert_eq!(target, 3);
        assert!(wait >= Duration::from_millis(10));
        let Retry::After { target, .. } = p.redirected(Some(3)) else {
            panic!("gave up early")
        };
        assert_eq!(target, 1, "a node naming itself while refusing is skipped");
        p.learn(9);
        assert_eq!(
            p.redirected(Some(9)),
            Retry::After {
                target: 9,
                wait: Duration::ZERO
            }
        );
    }

    #[test]
    fn waits_grow_to_the_maximum_and_reset_on_a_redirect() {
        let mut p = FollowLeader::new(vec![1, 2, 3], 1, limits(100));
        let mut waits = Vec::new();
        for _ in 0..6 {
            let Retry::After { wait, .. } = p.failed() else {
                panic!("gave up early")
            };
            waits.push(wait);
        }
        // Jitter adds up to the base again: base 10, 20, 40, 40, ... ms.
        for (wait, base) in waits.iter().zip([10u64, 20, 40, 40, 40, 40]) {
            let base = Duration::from_millis(base);
            assert!(
                *wait >= base && *wait <= base * 2,
                "{wait:?} against {base:?}"
            );
        }
        assert!(matches!(p.redirected(Some(2)), Retry::After { .. }));
        let Retry::After { wait, .. } = p.failed() else {
            panic!("gave up early")
        };
        assert!(
            wait <= Duration::from_millis(20),
            "reset after a redirect: {wait:?}"
        );
    }

    #[test]
    fn a_lost_attempt_moves_on_without_waiting_and_the_limit_holds() {
        let mut p = FollowLeader::new(vec![4, 5], 5, limits(3));
        assert_eq!(
            p.lost(),
            Retry::After {
                target: 4,
                wait: Duration::ZERO
            }
        );
        assert_eq!(p.attempts(), 2);
        assert!(matches!(p.failed(), Retry::After { target: 5, .. }));
        assert_eq!(p.lost(), Retry::GiveUp);
        assert_eq!(p.attempts(), 3);
    }

    #[test]
    fn a_start_outside_the_members_begins_with_the_first_member() {
        let mut p = FollowLeader::new(vec![7, 8], 1, limits(5));
        assert!(matches!(p.lost(), Retry::After { target: 7, .. }));
    }
}
