//! The `--adapt` controller: picks the compression level by measuring what
//! each level delivers.
//!
//! The measure is the effective rate: uncompressed bytes of the blocks the
//! stage hands downstream, per second, counted for blocks compressed at the
//! current level only. It is what the user waits for, whatever the
//! bottleneck is: a slow link (a higher level sends the same data in fewer
//! bytes), the compressor's CPU, or a CPU-bound consumer on the same
//! machine (ssh over a fast link, where every cycle spent compressing is
//! taken from the cipher).
//!
//! After each window ([`MIN_WINDOW_BLOCKS`] blocks and [`MIN_WINDOW`]) the
//! controller looks at where the stage waited:
//!
//! - Behind a slow link the output blocks nearly all the time
//!   ([`LINK_BOUND_SHARE`]) and the workers idle, so a dearer level only
//!   sends fewer bytes: the controller climbs, doubling its step (up to
//!   [`MAX_STEP`]), until the workers become the bottleneck. Rates are no
//!   guide there, since successive windows hold data that compresses
//!   differently.
//! - Otherwise it records the rate of the current level and tries another
//!   level for one window: up first while the output side blocks it, down
//!   first while the workers are the bottleneck, and only down while
//!   neither blocks (the input is the bottleneck; on shared cores a cheaper
//!   level gives the stage before more CPU). A tried level is kept only if
//!   it delivered at least [`KEEP_MARGIN`] more than the level it came
//!   from; otherwise the controller goes back, and does not try that level
//!   again while its rate is fresh ([`STALE_AFTER`]).
//!
//! Trying a dearer level needs CPU to spare: while the output side blocks
//! the stage and the machine had less than [`SPARE_CORES_TO_PROBE`] idle
//! cores over the window (from `/proc/stat`), the consumer is taking the
//! CPU the compressor would need (ssh's cipher on the same cores, say), so
//! the controller tries down only, and leaves the starting level after
//! [`SHORT_WINDOW`].
//!
//! A level whose window was CPU-bound is not climbed into again while that
//! is fresh. The first window, while the buffers downstream fill, measures
//! nothing; it ends once the output blocks ([`BUFFERS_FULL_WAIT`]). So a
//! fast link or a CPU-bound consumer costs one probe window now and then, a level that makes such a transfer slower is not kept,
//! and a slow link reaches its level in a few windows. Level 0 means
//! storing blocks without compressing them, for ranges that allow it.

use std::time::{Duration, Instant};

/// Shortest time a window measures.
pub const MIN_WINDOW: Duration = Duration::from_millis(500);
/// Shortest window after which a machine without an idle core, away from
/// a slow link, leaves the starting level (see [`SPARE_CORES_TO_PROBE`]).
pub const SHORT_WINDOW: Duration = Duration::from_millis(100);
/// Output blocked this long in the first window means the buffers
/// downstream are full: the first window ends early.
pub const BUFFERS_FULL_WAIT: Duration = Duration::from_millis(20);
/// Fewest blocks a window measures.
pub const MIN_WINDOW_BLOCKS: u32 = 4;
/// Share of a window spent blocked on output that means the output side
/// (the link or whatever reads it) is the bottleneck.
pub const OUTPUT_BOUND_SHARE: f64 = 0.5;
/// Share of a window spent blocked on output that means a link far slower
/// than the compressor: the controller climbs without probing.
pub const LINK_BOUND_SHARE: f64 = 0.9;
/// Share of a window spent waiting for workers that means the compressor's
/// CPU is the bottleneck.
pub const CPU_BOUND_SHARE: f64 = 0.25;
/// How much faster a tried level must be to be kept.
pub const KEEP_MARGIN: f64 = 0.03;
/// Largest level change of one climb.
pub const MAX_STEP: i32 = 4;
/// How long a measured rate counts; a level known to be slower is not
/// tried again before its measure is this old.
pub const STALE_AFTER: Duration = Duration::from_secs(10);

/// Idle cores (averaged over a window) below which the machine has no CPU
/// to give a dearer level: the controller then tries down only.
pub const SPARE_CORES_TO_PROBE: f64 = 0.5;

/// Where the controller reads the machine's idle CPU time: a running total
/// of idle seconds over all cores, `None` when unknown.
pub type IdleSource = fn() -> Option<f64>;

/// The machine's idle CPU time so far (idle and iowait of all cores, in
/// seconds), from the first line of `/proc/stat`; `None` where there is
/// no such file.
pub fn machine_idle_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let mut fields = stat.lines().next()?.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    // user nice system idle iowait ...: in USER_HZ, 100 on Linux.
    let ticks: Vec<u64> = fields
        .take(5)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    Some((*ticks.get(3)? + *ticks.get(4)?) as f64 / 100.0)
}

/// True when the machine had fewer than [`SPARE_CORES_TO_PROBE`] idle
/// cores over a window (`spare`: idle cores, `None` when unknown).
fn no_spare_cpu(spare: Option<f64>) -> bool {
    spare.is_some_and(|s| s < SPARE_CORES_TO_PROBE)
}

/// Levels the controller may choose, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptRange {
    /// Lowest level (0: store blocks uncompressed).
    pub min: i32,
    /// Highest level.
    pub max: i32,
}

/// One window's counts.
#[derive(Debug, Default)]
struct Window {
    /// The hand-off of the block that opened the window.
    start: Option<Instant>,
    /// Counted blocks: their bytes, and the time between each one's
    /// hand-off and the previous one's.
    bytes: u64,
    time: Duration,
    blocks: u32,
    output_wait: Duration,
    cpu_wait: Duration,
    /// The machine's idle seconds when the window opened.
    idle_at_start: Option<f64>,
}

/// The controller's state between decisions.
#[derive(Debug)]
pub struct Adapt {
    range: AdaptRange,
    level: i32,
    window: Window,
    /// When the previous block went downstream.
    last_emit: Option<Instant>,
    /// Latest measured rate (bytes/s) of each level and when it was taken.
    rates: Vec<Option<(f64, Instant)>>,
    /// The level a probe came from, while one runs.
    probing_from: Option<i32>,
    /// Size of the last decision's climb behind a link, 0 when it was no
    /// climb; the next climb doubles it (up to [`MAX_STEP`]).
    climb: i32,
    /// When a window at each level was last CPU-bound.
    dear: Vec<Option<Instant>>,
    /// The first window (buffers filling downstream) has passed.
    warmed: bool,
    /// A measured window has decided the level at least once.
    decided: bool,
    /// Print each decision on stderr ([`TRACE_ENV`] set).
    trace: bool,
    /// Reads the machine's idle CPU time.
    idle: IdleSource,
}

/// Set (to anything) to print each of the controller's decisions on
/// stderr: the window's level, rate and waits, and the next level.
pub const TRACE_ENV: &str = "ZPIPE_ADAPT_TRACE";

impl Adapt {
    /// Starts at `level` (clamped into `range`).
    pub fn new(range: AdaptRange, level: i32, _now: Instant) -> Self {
        let span = (range.max - range.min).max(0) as usize + 1;
        Adapt {
            range,
            level: level.clamp(range.min, range.max),
            window: Window::default(),
            last_emit: None,
            rates: vec![None; span],
            probing_from: None,
            climb: 0,
            dear: vec![None; span],
            warmed: false,
            decided: false,
            trace: std::env::var_os(TRACE_ENV).is_some(),
            idle: machine_idle_secs,
        }
    }

    /// Reads the machine's idle CPU time from `idle` instead of
    /// `/proc/stat` (for tests).
    pub fn with_idle_source(mut self, idle: IdleSource) -> Self {
        self.idle = idle;
        self
    }

    /// The current level.
    pub fn level(&self) -> i32 {
        self.level
    }

    /// Records time spent blocked on the output side.
    pub fn output_waited(&mut self, d: Duration) {
        self.window.output_wait += d;
    }

    /// Records time spent waiting for busy workers.
    pub fn cpu_waited(&mut self, d: Duration) {
        self.window.cpu_wait += d;
    }

    /// Records that a block of `bytes` uncompressed bytes, compressed at
    /// `level`, went downstream at `now`; returns the level for the next
    /// blocks. Blocks not `counted` (ones no level shrinks) pass the time
    /// but do not measure the level.
    pub fn emitted(&mut self, level: i32, bytes: u64, counted: bool, now: Instant) -> i32 {
        let dt = self
            .last_emit
            .replace(now)
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        if level != self.level {
            // Compressed before the last change: says nothing about this level.
            return self.level;
        }
        let w = &mut self.window;
        let Some(start) = w.start else {
            // The window opens at its first block's hand-off.
            *w = Window {
                start: Some(now),
                idle_at_start: (self.idle)(),
                ..Window::default()
            };
            return self.level;
        };
        if counted {
            w.bytes += bytes;
            w.time += dt;
            w.blocks += 1;
        }
        let enough = w.blocks >= MIN_WINDOW_BLOCKS && w.time >= MIN_WINDOW;
        if !self.warmed {
            // The first window runs while the buffers downstream (pipes,
            // ssh, sockets) still fill: its rate is not the level's. Once
            // the output blocks they are full, and it ends there.
            let full = w.blocks >= MIN_WINDOW_BLOCKS && w.output_wait >= BUFFERS_FULL_WAIT;
            if enough || full {
                self.warmed = true;
                self.window = Window::default();
            }
            return self.level;
        }
        // The starting level, before any decision, may be judged early.
        let early = !self.decided
            && self.level > self.range.min
            && w.blocks >= MIN_WINDOW_BLOCKS
            && w.time >= SHORT_WINDOW;
        if !(enough || early) {
            return self.level;
        }
        let rate = w.bytes as f64 / w.time.as_secs_f64();
        let wall = now.saturating_duration_since(start).as_secs_f64().max(1e-9);
        let out = w.output_wait.as_secs_f64() / wall;
        let cpu = w.cpu_wait.as_secs_f64() / wall;
        let spare = w
            .idle_at_start
            .zip((self.idle)())
            .map(|(a, b)| (b - a).max(0.0) / wall);
        // On a machine with no idle core, away from a slow link, the only
        // way is down (see `decide`). The starting level is left after a
        // short window then: every block at it takes CPU from the
        // consumer. (Later levels were chosen by a measure and keep their
        // whole window: our own workers may be what keeps the cores busy.)
        let starved = out < LINK_BOUND_SHARE && no_spare_cpu(spare);
        if !(enough || starved) {
            return self.level;
        }
        let (was, blocks) = (self.level, w.blocks);
        self.decided = true;
        self.decide(rate, out, cpu, spare, now);
        if self.trace {
            let spare = spare.map_or("?".to_string(), |s| format!("{s:.2}"));
            eprintln!(
                "adapt: level {was}: {:.1} MB/s over {} blocks, output waits {:.0}%, cpu waits {:.0}%, idle cores {spare} -> level {}",
                rate / 1e6,
                blocks,
                out * 100.0,
                cpu * 100.0,
                self.level
            );
        }
        self.window = Window::default();
        self.level
    }

    fn slot(&mut self, level: i32) -> &mut Option<(f64, Instant)> {
        let i = self.index(level);
        &mut self.rates[i]
    }

    /// The fresh rate of `level`, if measured within [`STALE_AFTER`].
    fn fresh(&mut self, level: i32, now: Instant) -> Option<f64> {
        match *self.slot(level) {
            Some((r, at)) if now.saturating_duration_since(at) < STALE_AFTER => Some(r),
            _ => None,
        }
    }

    fn decide(&mut self, rate: f64, out: f64, cpu: f64, spare: Option<f64>, now: Instant) {
        let level = self.level;
        *self.slot(level) = Some((rate, now));
        let cpu_bound = cpu > CPU_BOUND_SHARE && cpu > out;
        if cpu_bound {
            let i = self.index(level);
            self.dear[i] = Some(now);
        }
        // Behind a link that keeps the stage waiting nearly all the time,
        // the workers idle: a dearer level costs nothing the transfer
        // needs and sends fewer bytes. Rates are no guide there (windows of
        // different data compress differently), so climb while it holds,
        // doubling the step, up to a level recently found CPU-bound.
        if out >= LINK_BOUND_SHARE && !cpu_bound {
            self.probing_from = None;
            let step = (self.climb * 2).clamp(1, MAX_STEP);
            let top = (level + 1..=(level + step).min(self.range.max))
                .take_while(|&l| !self.is_dear(l, now))
                .last();
            self.climb = top.map_or(0, |l| l - level);
            self.level = top.unwrap_or(level);
            return;
        }
        self.climb = 0;
        if let Some(from) = self.probing_from.take() {
            let kept = self
                .fresh(from, now)
                .map_or(true, |before| rate > before * (1.0 + KEEP_MARGIN));
            if !kept {
                self.level = from;
                return;
            }
        }
        // A neighbour is worth a try unless it is known to be slower.
        let mut worth = |l: i32| -> bool {
            l >= self.range.min
                && l <= self.range.max
                && self.fresh(l, now).map_or(true, |r| r > rate)
        };
        let (up, down) = (level + 1, level - 1);
        let next = if cpu_bound {
            [down, up].into_iter().find(|&l| worth(l))
        } else if out > OUTPUT_BOUND_SHARE && !no_spare_cpu(spare) {
            [up, down].into_iter().find(|&l| worth(l))
        } else {
            // Neither side blocks the stage, or the output does but the
            // machine has no idle core for a dearer level: the input or a
            // consumer on the same cores is the bottleneck.
            // When the machine's cores are shared (ssh, hashing and the
            // workers on two cores), the stage before starves because the
            // workers take its CPU, so a cheaper level may still be faster;
            // a dearer one cannot be. Try down only.
            Some(down).filter(|&l| worth(l))
        };
        if let Some(l) = next {
            self.probing_from = Some(level);
            self.level = l;
        }
    }

    /// True when a window at `level` was CPU-bound within [`STALE_AFTER`].
    fn is_dear(&self, level: i32, now: Instant) -> bool {
        self.dear[self.index(level)]
            .is_some_and(|at| now.saturating_duration_since(at) < STALE_AFTER)
    }

    /// Index of `level` (within the range) in the per-level tables.
    fn index(&self, level: i32) -> usize {
        (level - self.range.min) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RANGE: AdaptRange = AdaptRange { min: 0, max: 9 };
    const BLOCK: u64 = 4 << 20;

    /// Drives the controller with a model: `rate_of(level)` bytes/s, and
    /// the output or the workers blocking `out`/`cpu` of each window.
    /// Returns the level after `secs` seconds and the time spent per level.
    fn simulate(
        start: i32,
        secs: f64,
        rate_of: impl Fn(i32) -> f64,
        waits: impl Fn(i32) -> (f64, f64),
    ) -> (i32, Vec<f64>) {
        simulate_idle(start, secs, rate_of, waits, None)
    }

    /// Simulated time for tests that hand the controller blocks one by one.
    struct Clock {
        t0: Instant,
        t: Duration,
    }

    impl Clock {
        fn start() -> Self {
            Clock {
                t0: Instant::now(),
                t: Duration::ZERO,
            }
        }

        /// A controller at `level` on a machine of unknown idle time.
        fn adapt(&self, level: i32) -> Adapt {
            Adapt::new(RANGE, level, self.t0).with_idle_source(|| None)
        }

        /// One block at the current level taking `secs`, the output
        /// blocked `out` of it; returns the next level.
        fn step(&mut self, a: &mut Adapt, secs: f64, out: f64, counted: bool) -> i32 {
            self.t += Duration::from_secs_f64(secs);
            a.output_waited(Duration::from_secs_f64(secs * out));
            a.emitted(a.level(), BLOCK, counted, self.t0 + self.t)
        }
    }

    thread_local! {
        /// The simulated machine's idle seconds so far.
        static IDLE: std::cell::Cell<f64> = const { std::cell::Cell::new(0.0) };
    }

    fn simulated_idle() -> Option<f64> {
        Some(IDLE.with(|i| i.get()))
    }

    /// [`simulate`] on a machine with `idle` cores idle (`None`: unknown).
    fn simulate_idle(
        start: i32,
        secs: f64,
        rate_of: impl Fn(i32) -> f64,
        waits: impl Fn(i32) -> (f64, f64),
        idle: Option<f64>,
    ) -> (i32, Vec<f64>) {
        let t0 = Instant::now();
        let source: IdleSource = if idle.is_some() {
            simulated_idle
        } else {
            || None
        };
        let mut a = Adapt::new(RANGE, start, t0).with_idle_source(source);
        let mut t = 0.0;
        let mut spent = vec![0.0; 10];
        while t < secs {
            let l = a.level();
            let dt = BLOCK as f64 / rate_of(l);
            let (out, cpu) = waits(l);
            a.output_waited(Duration::from_secs_f64(dt * out));
            a.cpu_waited(Duration::from_secs_f64(dt * cpu));
            t += dt;
            IDLE.with(|i| i.set(i.get() + dt * idle.unwrap_or(0.0)));
            spent[l as usize] += dt;
            a.emitted(l, BLOCK, true, t0 + Duration::from_secs_f64(t));
        }
        (a.level(), spent)
    }

    #[test]
    fn a_slow_link_climbs_to_the_level_that_delivers_most() {
        // Link-bound: each level up sends the same data in fewer bytes,
        // until level 6 where the CPU becomes the limit.
        let rate = |l: i32| {
            if l <= 6 {
                20e6 * (1.0 + 0.05 * l as f64)
            } else {
                26e6 - 3e6 * (l - 6) as f64
            }
        };
        let waits = |l: i32| if l <= 6 { (0.9, 0.0) } else { (0.1, 0.8) };
        let (level, spent) = simulate(1, 120.0, rate, waits);
        assert!((5..=7).contains(&level), "ended at {level}");
        assert!(spent[6] > 60.0, "most time at the best level: {spent:?}");
    }

    #[test]
    fn behind_a_link_data_that_varies_does_not_stop_the_climb() {
        // Each window's data compresses differently (rates jump by 2x),
        // the link keeps the stage waiting 95% of the time: climb to the top.
        let t0 = Instant::now();
        let mut a = Adapt::new(RANGE, 1, t0);
        let mut t = 0.0;
        for i in 0..400 {
            let dt = if i % 7 < 3 { 0.1 } else { 0.2 };
            a.output_waited(Duration::from_secs_f64(dt * 0.95));
            t += dt;
            a.emitted(a.level(), BLOCK, true, t0 + Duration::from_secs_f64(t));
        }
        assert_eq!(a.level(), RANGE.max);
    }

    #[test]
    fn a_cpu_bound_consumer_keeps_the_cheapest_level() {
        // Loopback ssh: the output blocks, yet every level up is slower
        // (it takes CPU from the cipher); storing is the fastest.
        let rate = |l: i32| 300e6 * (1.0 - 0.08 * l as f64);
        let waits = |_| (0.8, 0.0);
        let (level, spent) = simulate(1, 60.0, rate, waits);
        assert!(level <= 1, "ended at {level}");
        let total: f64 = spent.iter().sum();
        assert!(spent[0] / total > 0.8, "mostly stored: {spent:?}");
    }

    #[test]
    fn busy_workers_lower_the_level() {
        let rate = |l: i32| 400e6 / (1.0 + l as f64);
        let waits = |_| (0.0, 0.6);
        let (level, _) = simulate(5, 30.0, rate, waits);
        assert_eq!(level, 0);
    }

    #[test]
    fn an_input_bound_stream_keeps_its_level() {
        // Probing the level below now and then (it is no faster) costs a
        // window every STALE_AFTER.
        let (level, spent) = simulate(3, 30.0, |_| 50e6, |_| (0.0, 0.0));
        assert_eq!(level, 3);
        assert!(spent[3] >= 27.0, "{spent:?}");
        assert!(spent[4] == 0.0, "no dearer level tried: {spent:?}");
    }

    #[test]
    fn a_starved_input_on_shared_cores_goes_down() {
        // Two cores shared with the stage before: neither side blocks, yet
        // each level down leaves that stage more CPU.
        let rate = |l: i32| 200e6 * (1.0 - 0.1 * l as f64);
        let (level, spent) = simulate(3, 30.0, rate, |_| (0.1, 0.1));
        assert_eq!(level, 0);
        assert!(spent[0] > 20.0, "{spent:?}");
    }

    #[test]
    fn uncounted_blocks_do_not_measure_a_level() {
        // Fast incompressible blocks between slow compressible ones: the
        // probe of level 4 must be judged on the compressible ones only.
        let mut clock = Clock::start();
        let mut a = clock.adapt(3);
        // Output-bound, but not behind a link that idles the workers.
        let mut step = |a: &mut Adapt, secs: f64, counted: bool| clock.step(a, secs, 0.7, counted);
        // Level 3: compressible blocks at 0.1 s each: probes level 4.
        while a.level() == 3 {
            step(&mut a, 0.1, true);
        }
        assert_eq!(a.level(), 4);
        // Level 4 is slower on compressible blocks (0.12 s) though many
        // fast incompressible blocks (0.01 s) pass meanwhile.
        for _ in 0..200 {
            if a.level() != 4 {
                break;
            }
            step(&mut a, 0.12, true);
            for _ in 0..5 {
                step(&mut a, 0.01, false);
            }
        }
        assert_eq!(a.level(), 3, "the slower level was not kept");
    }

    #[test]
    fn blocks_of_an_older_level_and_short_windows_decide_nothing() {
        let t0 = Instant::now();
        let mut a = Adapt::new(RANGE, 3, t0).with_idle_source(|| None);
        a.output_waited(Duration::from_secs(5));
        for i in 0..100 {
            assert_eq!(a.emitted(2, BLOCK, true, t0 + Duration::from_millis(i)), 3);
        }
        for i in 0..3 {
            assert_eq!(a.emitted(3, BLOCK, true, t0 + Duration::from_millis(i)), 3);
        }
    }

    #[test]
    fn a_consumer_on_busy_cores_is_not_given_a_dearer_level_to_try() {
        // ssh over loopback: the output blocks the stage 60% of the time,
        // but the cores are all busy, so compressing would only take CPU
        // from the cipher. With no idle core nothing above 0 is tried.
        let rate = |l: i32| 450e6 * (1.0 - 0.2 * l as f64);
        let waits = |_| (0.6, 0.0);
        let (level, spent) = simulate_idle(0, 20.0, rate, waits, Some(0.1));
        assert_eq!(level, 0);
        assert_eq!(spent[1..].iter().sum::<f64>(), 0.0, "{spent:?}");
        // With a core idle the same stage does try level 1 (and leaves it).
        let (level, spent) = simulate_idle(0, 20.0, rate, waits, Some(1.0));
        assert_eq!(level, 0);
        assert!(spent[1] > 0.0, "{spent:?}");
    }

    #[test]
    fn a_slow_link_climbs_even_when_the_cores_are_busy() {
        let rate = |l: i32| 12e6 * (1.0 + 0.1 * l as f64);
        let (level, _) = simulate_idle(0, 60.0, rate, |_| (0.95, 0.0), Some(0.0));
        assert!(level >= 5, "ended at {level}");
    }

    #[test]
    fn the_first_window_ends_once_the_output_blocks() {
        let mut clock = Clock::start();
        let mut a = clock.adapt(3);
        let mut step = |a: &mut Adapt, secs: f64, out: f64| clock.step(a, secs, out, true);
        // 50 ms of fast blocks while the buffers fill, the output already
        // blocking: the warm-up ends without waiting for MIN_WINDOW.
        for _ in 0..5 {
            assert_eq!(step(&mut a, 0.01, 0.9), 3);
        }
        // One full window behind a slow link then decides: a climb.
        let mut level = 3;
        for _ in 0..6 {
            level = step(&mut a, 0.1, 0.95);
        }
        assert!(level > 3, "no decision after the warm-up: {level}");
    }

    #[test]
    fn the_starting_level_on_busy_cores_is_left_after_a_short_window() {
        // Level 1 on a machine with no idle core: storing is chosen
        // within the warm-up and a short window.
        let rate = |l: i32| if l == 0 { 450e6 } else { 300e6 };
        let waits = |l: i32| if l == 0 { (0.6, 0.0) } else { (0.5, 0.25) };
        let (level, spent) = simulate_idle(1, 3.0, rate, waits, Some(0.1));
        assert_eq!(level, 0);
        assert!(spent[1] < 0.45, "{spent:?}");
        // With idle cores the same level gets a whole window first.
        let (_, spent) = simulate_idle(1, 3.0, rate, waits, Some(1.5));
        assert!(spent[1] >= 0.6, "{spent:?}");
    }

    #[test]
    fn the_machine_idle_counter_reads_and_grows() {
        let Some(a) = machine_idle_secs() else {
            return; // no /proc/stat here
        };
        std::thread::sleep(Duration::from_millis(50));
        let b = machine_idle_secs().expect("read once, reads again");
        assert!(b >= a, "{a} then {b}");
    }
}
