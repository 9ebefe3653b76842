//! When a pulling node does things: the wait before its first poll (a
//! random delay within the bundle's boot spread, so a fleet booted together
//! does not log in at once), between polls (a random phase, then the period
//! ±2%), after failures (doubling, jittered), and the jitter they share.
//! Functions of durations and a random number only: no I/O, no state.

use std::time::Duration;

use common::fleet;
use common::openbao::client::random_fraction;

/// `d` scaled by a random factor in `[1 - spread, 1 + spread]`.
pub(crate) fn jitter(d: Duration, spread: f64) -> Duration {
    let r = random_fraction();
    d.mul_f64(1.0 - spread + 2.0 * spread * r)
}

/// Spread of the steady poll period (±2%). Staleness after a publish is at
/// most one period, so this bounds it (poll + 2%); the spread of the nodes'
/// polls over the period comes from the random phase each node takes after
/// its first poll (`next_wait`), not from a wide jitter.
const POLL_JITTER: f64 = 0.02;

/// The wait before the next poll: after the first poll a uniform random
/// phase in `(0, poll]` (nodes booted together then poll evenly over the
/// period instead of in a burst), then the period ±2%; after failures the
/// jittered backoff (which re-randomizes the phase).
pub(crate) fn next_wait(poll: Duration, failures: u32, first: bool) -> Duration {
    if failures > 0 {
        backoff(poll, failures)
    } else if first {
        jitter(poll / 2, 1.0).max(Duration::from_millis(1))
    } else {
        jitter(poll, POLL_JITTER)
    }
}

/// The wait after `failures` failed polls in a row: doubling from the poll
/// interval, at most [`fleet::MAX_BACKOFF_POLLS`] intervals (and
/// [`fleet::MAX_BACKOFF_SECS`]), jittered by [`fleet::BACKOFF_JITTER`]
/// (the controller counts a failing node as live for that long:
/// [`fleet::longest_retry_secs`]).
pub(crate) fn backoff(poll: Duration, failures: u32) -> Duration {
    let base = poll
        .saturating_mul(1 << failures.min(fleet::MAX_BACKOFF_POLLS.ilog2()))
        .min(Duration::from_secs(fleet::MAX_BACKOFF_SECS));
    jitter(base, fleet::BACKOFF_JITTER)
}

/// The wait before the first poll: uniform in `[0, boot spread]` for a
/// node that must log in (the bundle's `boot_spread_secs`, at most
/// `MAX_BOOT_SPREAD_SECS`), else a short one (within half the poll, at
/// most a second).
pub(crate) fn boot_delay(poll: Duration, boot_spread_secs: u64, has_token: bool) -> Duration {
    let spread = Duration::from_secs(boot_spread_secs.min(fleet::MAX_BOOT_SPREAD_SECS));
    if spread.is_zero() || has_token {
        jitter(poll.min(Duration::from_secs(2)) / 4, 1.0)
    } else {
        jitter(spread / 2, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_take_a_random_phase_then_keep_the_period_within_2_percent() {
        let poll = Duration::from_secs(10);
        let (mut early, mut late) = (false, false);
        for _ in 0..400 {
            let steady = next_wait(poll, 0, false);
            assert!(
                steady >= Duration::from_millis(9800) && steady <= Duration::from_millis(10200),
                "{steady:?}"
            );
            let phase = next_wait(poll, 0, true);
            assert!(phase > Duration::ZERO && phase <= poll, "{phase:?}");
            early |= phase < Duration::from_secs(2);
            late |= phase > Duration::from_secs(8);
            let after_error = next_wait(poll, 1, false);
            assert!(after_error >= Duration::from_secs(10), "{after_error:?}");
        }
        assert!(early && late, "the phase is not spread over the period");
    }

    #[test]
    fn jitter_and_backoff_stay_in_bounds() {
        let poll = Duration::from_secs(10);
        for _ in 0..200 {
            let j = jitter(poll, 0.2);
            assert!(
                j >= Duration::from_secs(8) && j <= Duration::from_secs(12),
                "{j:?}"
            );
            let b = backoff(poll, 10);
            assert!(
                b >= Duration::from_secs(40) && b <= Duration::from_secs(120),
                "{b:?}"
            );
            // The controller's bound for a failing node's silence.
            assert!(b <= Duration::from_secs(fleet::longest_retry_secs(10)));
        }
    }
}
