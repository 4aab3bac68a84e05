//! The token bucket behind `--limit`.
//!
//! Tokens are bytes. The bucket refills continuously from the clock at the
//! current rate and holds at most [`BURST`] worth of data, so after an idle
//! spell the stream may catch up by at most 100 ms of traffic. A caller asks
//! for a grant before moving data; the grant is at most one burst, and the
//! wait for it sleeps in steps of at most [`REFILL_STEP`], checking the
//! cancellation token between steps. The bucket starts empty, so the first
//! second is not a burst either. The rate may change between grants (a
//! schedule window opens, SIGUSR2 reloads the limit file).

use std::time::{Duration, Instant};
use zpipe_core::cancel::Cancel;

/// The most data the bucket holds, as time at the current rate.
pub const BURST: Duration = Duration::from_millis(100);
/// The longest a grant sleeps before refilling and looking at the token.
pub const REFILL_STEP: Duration = Duration::from_millis(100);

/// A token bucket in bytes.
#[derive(Debug)]
pub struct TokenBucket {
    rate: u64,
    tokens: f64,
    last: Instant,
}

impl Default for TokenBucket {
    fn default() -> Self {
        Self::new()
    }
}

impl TokenBucket {
    /// An empty bucket with no rate yet.
    pub fn new() -> Self {
        TokenBucket {
            rate: 0,
            tokens: 0.0,
            last: Instant::now(),
        }
    }

    fn capacity(rate: u64) -> f64 {
        (rate as f64 * BURST.as_secs_f64()).max(1.0)
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate as f64).min(Self::capacity(self.rate));
    }

    /// Waits until some of `want` bytes may move at `rate` bytes per second
    /// (0 = unlimited) and returns how many (≥ 1, ≤ `want`, ≤ one burst).
    /// Call [`TokenBucket::take`] with what actually moved.
    pub fn grant(&mut self, want: usize, rate: u64, cancel: &Cancel) -> anyhow::Result<usize> {
        loop {
            match self.try_grant(want, rate, Instant::now()) {
                Ok(n) => return Ok(n),
                Err(wait) => {
                    cancel.check()?;
                    std::thread::sleep(wait.min(REFILL_STEP));
                }
            }
        }
    }

    /// The grant decision at time `now`: how many bytes may move, or how
    /// long to wait until they may.
    pub fn try_grant(&mut self, want: usize, rate: u64, now: Instant) -> Result<usize, Duration> {
        let want = want.max(1);
        if rate == 0 {
            self.rate = 0;
            self.last = now;
            return Ok(want);
        }
        if rate != self.rate {
            // Tokens gathered under the old rate stay, capped to the new burst.
            self.refill(now);
            self.rate = rate;
            self.tokens = self.tokens.min(Self::capacity(rate));
        }
        let chunk = (want as f64).min(Self::capacity(rate).floor()).max(1.0);
        self.refill(now);
        if self.tokens >= chunk {
            Ok(chunk as usize)
        } else {
            Err(Duration::from_secs_f64((chunk - self.tokens) / rate as f64))
        }
    }

    /// Takes `n` bytes out of the bucket after they moved.
    pub fn take(&mut self, n: usize) {
        if self.rate != 0 {
            self.tokens -= n as f64;
        }
    }

    /// Grants and takes `len` bytes in pieces, calling `each(offset, n)`
    /// for each piece before it is taken (a stage pacing a whole block).
    pub fn pace(
        &mut self,
        len: usize,
        rate: impl Fn() -> u64,
        cancel: &Cancel,
        mut each: impl FnMut(usize, usize) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut off = 0;
        while off < len {
            let g = self.grant(len - off, rate(), cancel)?;
            each(off, g)?;
            self.take(g);
            off += g;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_grants_everything() {
        let mut b = TokenBucket::new();
        assert_eq!(b.grant(1 << 20, 0, &Cancel::new()).unwrap(), 1 << 20);
    }

    #[test]
    fn grants_are_capped_to_one_burst() {
        let mut b = TokenBucket::new();
        let g = b.grant(1 << 20, 1000, &Cancel::new()).unwrap();
        assert_eq!(g, 100);
    }

    #[test]
    fn rate_is_kept_over_half_a_second() {
        let rate = 4 << 20;
        let mut b = TokenBucket::new();
        let c = Cancel::new();
        let start = Instant::now();
        let mut moved = 0u64;
        while moved < rate / 2 {
            let g = b.grant(1 << 20, rate, &c).unwrap();
            b.take(g);
            moved += g as u64;
        }
        let secs = start.elapsed().as_secs_f64();
        let got = moved as f64 / secs;
        assert!(
            (got / rate as f64 - 1.0).abs() < 0.1,
            "rate {got} over {secs}s"
        );
    }

    /// Drives the bucket on a virtual clock: a steady stream that always
    /// wants a full block, sleeps that overshoot by up to 2 ms, and moves
    /// sometimes less than granted (a short splice).
    fn simulate(rate: u64, secs: u64) -> Vec<(Duration, u64)> {
        let start = Instant::now();
        let mut now = start;
        let mut b = TokenBucket::new();
        let mut total = 0u64;
        let mut log = vec![(Duration::ZERO, 0)];
        let mut i = 0u64;
        while now.duration_since(start) < Duration::from_secs(secs) {
            i += 1;
            match b.try_grant(1 << 20, rate, now) {
                Ok(g) => {
                    let moved = if i % 7 == 0 { g.div_ceil(2) } else { g };
                    b.take(moved);
                    total += moved as u64;
                    log.push((now.duration_since(start), total));
                    now += Duration::from_micros(50);
                }
                Err(wait) => {
                    now += wait.min(REFILL_STEP) + Duration::from_micros(i % 2000);
                }
            }
        }
        log
    }

    #[test]
    fn any_ten_second_window_is_within_two_percent() {
        for rate in [100_000u64, 5 << 20, 100 << 20, 1 << 30] {
            let log = simulate(rate, 40);
            let window = Duration::from_secs(10);
            let want = rate as f64 * window.as_secs_f64();
            let mut j = 0;
            for i in 0..log.len() {
                let (t0, b0) = log[i];
                if t0 + window > log.last().unwrap().0 {
                    break;
                }
                while j < log.len() && log[j].0 <= t0 + window {
                    j += 1;
                }
                let got = (log[j - 1].1 - b0) as f64;
                assert!(
                    (got / want - 1.0).abs() <= 0.02,
                    "rate {rate}: {got} bytes in the 10 s from {t0:?}, want {want}"
                );
            }
        }
    }

    #[test]
    fn burst_after_idle_is_at_most_100ms_of_data() {
        let rate = 10 << 20;
        let mut b = TokenBucket::new();
        let t0 = Instant::now();
        assert!(b.try_grant(1 << 30, rate, t0).is_err(), "starts empty");
        // After a long idle spell the bucket holds one burst, no more.
        let later = t0 + Duration::from_secs(60);
        let g = b.try_grant(1 << 30, rate, later).unwrap();
        assert_eq!(g as u64, rate / 10);
        b.take(g);
        assert!(b.try_grant(1, rate, later).is_err());
    }

    #[test]
    fn waiting_grant_stops_on_cancel() {
        let mut b = TokenBucket::new();
        let c = Cancel::new();
        c.cancel();
        assert!(b.grant(1000, 1, &c).is_err());
    }
}
