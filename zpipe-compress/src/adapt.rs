//! The `--adapt` controller: picks the compression level from where the
//! pipeline waits.
//!
//! The compress stage measures, per interval, how long it was blocked handing
//! finished frames downstream (the output side — a slow link — is the
//! bottleneck) and how long it waited for workers while it had input for
//! them (the CPU is the bottleneck). Output-blocked for more than half of
//! [`UP_STREAK`] intervals in a row: one level up. CPU-bound and hardly
//! output-blocked (waiting for workers at least twice as long as for the
//! output): one level down at once. Neither (input is the
//! bottleneck): unchanged. A fast link is never output-blocked for long (a
//! busy machine's scheduling delays block the hand-off for a moment, which
//! the streak filters out), so there the level can only fall from where it
//! started, and the stream never gets slower than the fixed level.

use std::time::{Duration, Instant};

/// How often the controller decides.
pub const ADAPT_INTERVAL: Duration = Duration::from_millis(200);
/// Share of an interval spent blocked on output that counts towards raising.
pub const OUTPUT_BOUND_SHARE: f64 = 0.5;
/// Output-bound intervals in a row that raise the level by one.
pub const UP_STREAK: u32 = 3;
/// Share of an interval spent waiting for workers that lowers the level.
pub const CPU_BOUND_SHARE: f64 = 0.25;
/// How many times the output-blocked share the CPU-wait share must be for a
/// CPU-bound interval to lower the level.
pub const CPU_OVER_OUTPUT: f64 = 2.0;

/// Levels the controller may choose, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptRange {
    /// Lowest level.
    pub min: i32,
    /// Highest level.
    pub max: i32,
}

/// The controller's state between decisions.
#[derive(Debug)]
pub struct Adapt {
    range: AdaptRange,
    level: i32,
    since: Instant,
    output_wait: Duration,
    cpu_wait: Duration,
    streak: u32,
}

impl Adapt {
    /// Starts at `level` (clamped into `range`).
    pub fn new(range: AdaptRange, level: i32, now: Instant) -> Self {
        Adapt {
            range,
            level: level.clamp(range.min, range.max),
            since: now,
            output_wait: Duration::ZERO,
            cpu_wait: Duration::ZERO,
            streak: 0,
        }
    }

    /// The current level.
    pub fn level(&self) -> i32 {
        self.level
    }

    /// Records time spent blocked on the output side.
    pub fn output_waited(&mut self, d: Duration) {
        self.output_wait += d;
    }

    /// Records time spent waiting for busy workers.
    pub fn cpu_waited(&mut self, d: Duration) {
        self.cpu_wait += d;
    }

    /// Decides once an interval has passed; returns the (possibly new) level.
    pub fn tick(&mut self, now: Instant) -> i32 {
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed < ADAPT_INTERVAL {
            return self.level;
        }
        let secs = elapsed.as_secs_f64();
        let out = self.output_wait.as_secs_f64() / secs;
        let cpu = self.cpu_wait.as_secs_f64() / secs;
        if out > OUTPUT_BOUND_SHARE {
            self.streak += 1;
            if self.streak >= UP_STREAK {
                self.level = (self.level + 1).min(self.range.max);
                self.streak = 0;
            }
        } else {
            self.streak = 0;
            if cpu > CPU_BOUND_SHARE && cpu > CPU_OVER_OUTPUT * out {
                self.level = (self.level - 1).max(self.range.min);
            }
        }
        self.since = now;
        self.output_wait = Duration::ZERO;
        self.cpu_wait = Duration::ZERO;
        self.level
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RANGE: AdaptRange = AdaptRange { min: 1, max: 9 };

    #[test]
    fn blocked_output_raises_the_level_up_to_the_maximum() {
        let t0 = Instant::now();
        let mut a = Adapt::new(RANGE, 3, t0);
        for i in 1..=40 {
            a.output_waited(ADAPT_INTERVAL * 9 / 10);
            a.tick(t0 + ADAPT_INTERVAL * i);
        }
        assert_eq!(a.level(), 9);
    }

    #[test]
    fn busy_workers_lower_the_level_down_to_the_minimum() {
        let t0 = Instant::now();
        let mut a = Adapt::new(RANGE, 3, t0);
        for i in 1..=5 {
            a.cpu_waited(ADAPT_INTERVAL / 2);
            a.tick(t0 + ADAPT_INTERVAL * i);
        }
        assert_eq!(a.level(), 1);
    }

    #[test]
    fn isolated_output_stalls_do_not_raise_the_level() {
        let t0 = Instant::now();
        let mut a = Adapt::new(RANGE, 3, t0);
        for i in 1..=30 {
            if i % UP_STREAK != 0 {
                a.output_waited(ADAPT_INTERVAL * 9 / 10);
            }
            a.tick(t0 + ADAPT_INTERVAL * i);
        }
        assert_eq!(a.level(), 3);
    }

    #[test]
    fn input_bound_keeps_the_level_and_short_intervals_do_nothing() {
        let t0 = Instant::now();
        let mut a = Adapt::new(RANGE, 3, t0);
        a.output_waited(ADAPT_INTERVAL);
        assert_eq!(a.tick(t0 + ADAPT_INTERVAL / 2), 3);
        let mut b = Adapt::new(RANGE, 3, t0);
        assert_eq!(b.tick(t0 + ADAPT_INTERVAL * 3), 3);
    }
}
