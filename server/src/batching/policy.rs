//! The batching policy as a pure struct: given the queue's state and the clock, when does a batch close, and
//! which queued requests are dropped. No channels, no threads, so every rule is unit tested below.
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchPolicy {
    pub max_batch_size: usize,
    pub max_queue_delay: Duration,
}

/// What the queue actor should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The queue is empty: wait for a request.
    Idle,
    /// Every instance is busy and a batch is already waiting for one: wait until an instance frees up.
    WaitForModel,
    /// Wait for more requests, an idle instance, or `until`, whichever comes first.
    WaitUntil(Instant),
    /// Close a batch of the first `n` queued requests now.
    Close(usize),
}

/// What the model side looks like to the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelState {
    /// At least one instance is waiting for work.
    pub idle: bool,
    /// A batch handed over now would be taken (an instance is idle, or the one-batch prefetch slot is free).
    pub can_accept: bool,
}

impl BatchPolicy {
    /// Decides from the number of live queued requests and when the oldest of them arrived.
    pub fn decide(
        &self,
        queued: usize,
        oldest: Option<Instant>,
        model: ModelState,
        now: Instant,
    ) -> Decision {
        let Some(oldest) = oldest.filter(|_| queued > 0) else {
            return Decision::Idle;
        };
        if !model.can_accept {
            return Decision::WaitForModel;
        }
        let full = queued >= self.max_batch_size;
        let due = oldest + self.max_queue_delay;
        // An idle model runs what is there at once: waiting would only add latency at low load.
        if full || model.idle || now >= due {
            return Decision::Close(queued.min(self.max_batch_size));
        }
        Decision::WaitUntil(due)
    }
}

/// Why a queued request is not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The client went away (its reply channel is closed).
    Cancelled,
    /// Its deadline passed while it waited.
    DeadlineExceeded,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Cancelled => "cancelled",
            DropReason::DeadlineExceeded => "deadline_exceeded",
        }
    }
}

/// Whether a queued request should still be run; `None` means keep it. An expired request counts as a
/// deadline drop even if its client has also gone (the client most likely left *because* of the deadline).
pub fn skip_reason(cancelled: bool, deadline: Option<Instant>, now: Instant) -> Option<DropReason> {
    if deadline.is_some_and(|d| now >= d) {
        Some(DropReason::DeadlineExceeded)
    } else if cancelled {
        Some(DropReason::Cancelled)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUSY: ModelState = ModelState {
        idle: false,
        can_accept: true,
    };
    const IDLE: ModelState = ModelState {
        idle: true,
        can_accept: true,
    };
    const SATURATED: ModelState = ModelState {
        idle: false,
        can_accept: false,
    };

    fn policy() -> BatchPolicy {
        BatchPolicy {
            max_batch_size: 4,
            max_queue_delay: Duration::from_millis(10),
        }
    }

    #[test]
    fn empty_queue_is_idle() {
        let now = Instant::now();
        assert_eq!(policy().decide(0, None, IDLE, now), Decision::Idle);
        assert_eq!(policy().decide(0, Some(now), IDLE, now), Decision::Idle);
    }

    #[test]
    fn lone_request_on_idle_model_runs_at_once() {
        let now = Instant::now();
        assert_eq!(policy().decide(1, Some(now), IDLE, now), Decision::Close(1));
    }

    #[test]
    fn busy_model_waits_for_the_delay() {
        let now = Instant::now();
        let due = now + Duration::from_millis(10);
        assert_eq!(
            policy().decide(2, Some(now), BUSY, now),
            Decision::WaitUntil(due)
        );
    }

    #[test]
    fn delay_elapsed_closes_partial_batch() {
        let start = Instant::now();
        let later = start + Duration::from_millis(10);
        assert_eq!(
            policy().decide(3, Some(start), BUSY, later),
            Decision::Close(3)
        );
    }

    #[test]
    fn full_batch_closes_without_waiting() {
        let now = Instant::now();
        assert_eq!(policy().decide(4, Some(now), BUSY, now), Decision::Close(4));
    }

    #[test]
    fn batch_is_capped_at_max_size() {
        let now = Instant::now();
        assert_eq!(
            policy().decide(11, Some(now), IDLE, now),
            Decision::Close(4)
        );
    }

    #[test]
    fn saturated_model_holds_the_queue_even_when_full_or_due() {
        let start = Instant::now();
        let later = start + Duration::from_secs(1);
        assert_eq!(
            policy().decide(9, Some(start), SATURATED, later),
            Decision::WaitForModel
        );
    }

    #[test]
    fn batch_size_one_never_waits() {
        let p = BatchPolicy {
            max_batch_size: 1,
            max_queue_delay: Duration::from_secs(5),
        };
        let now = Instant::now();
        assert_eq!(p.decide(1, Some(now), BUSY, now), Decision::Close(1));
    }

    #[test]
    fn zero_delay_closes_immediately_under_load() {
        let p = BatchPolicy {
            max_batch_size: 8,
            max_queue_delay: Duration::ZERO,
        };
        let now = Instant::now();
        assert_eq!(p.decide(2, Some(now), BUSY, now), Decision::Close(2));
    }

    #[test]
    fn cancelled_request_is_skipped() {
        assert_eq!(
            skip_reason(true, None, Instant::now()),
            Some(DropReason::Cancelled)
        );
    }

    #[test]
    fn expired_request_is_skipped() {
        let now = Instant::now();
        assert_eq!(
            skip_reason(false, Some(now), now),
            Some(DropReason::DeadlineExceeded)
        );
        assert_eq!(
            skip_reason(false, Some(now + Duration::from_millis(1)), now),
            None
        );
    }

    #[test]
    fn live_request_without_deadline_is_kept() {
        assert_eq!(skip_reason(false, None, Instant::now()), None);
    }

    #[test]
    fn deadline_wins_over_cancellation() {
        let now = Instant::now();
        assert_eq!(
            skip_reason(true, Some(now), now),
            Some(DropReason::DeadlineExceeded)
        );
    }
}
