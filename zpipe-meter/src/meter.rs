//! The running meter: shared counters, the control thread, and the copy hooks.
//!
//! The threads that move data only touch atomics ([`Shared::moved`]) and
//! their own token bucket, so counting costs next to nothing on the splice
//! path. One control thread, woken every [`TICK`], does everything else:
//! samples the rate, redraws or logs progress when due, prints a status
//! line on SIGUSR1, re-reads `--limit-file` on SIGUSR2, re-evaluates the
//! limit schedule every second, and (for [`crate::MeterStage`], which cannot
//! see descriptors) runs the stall watchdog. Copy loops on descriptors run
//! the watchdog themselves through their idle hooks, where they know which
//! side is waiting.

use crate::config::{MeterConfig, ProgressMode, LOG_INTERVAL, NUMERIC_INTERVAL, TTY_INTERVAL};
use crate::limiter::TokenBucket;
use crate::report::{self, Snapshot, Stats};
use crate::schedule::{self, Schedule};
use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use zpipe_core::cancel::Cancel;
use zpipe_core::fdio::{Idle, Side};
use zpipe_core::splice::CopyHooks;
use zpipe_core::Exit;

/// How often the control thread wakes up.
pub const TICK: Duration = Duration::from_millis(100);
/// How often the limit schedule is re-evaluated against the clock.
pub const SCHEDULE_CHECK: Duration = Duration::from_secs(1);
/// The span the current rate is measured over.
pub const RATE_WINDOW: Duration = Duration::from_secs(3);
/// The span peak rates are measured over.
pub const PEAK_WINDOW: Duration = Duration::from_secs(1);
/// Terminal width assumed when the terminal does not say.
pub const DEFAULT_COLUMNS: usize = 80;
/// A wait on input or output this long counts as one stall in the stats.
pub const STALL_NOTE: Duration = Duration::from_secs(1);

/// Where progress goes.
pub enum ProgressTarget {
    /// Standard error: a live line when it is a terminal, log lines otherwise.
    Stderr,
    /// Log lines to this writer (never a live line).
    Writer(Box<dyn Write + Send>),
}

impl std::fmt::Debug for ProgressTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProgressTarget::Stderr => "Stderr",
            ProgressTarget::Writer(_) => "Writer",
        })
    }
}

enum Display {
    Hidden,
    Log,
    Numeric,
    Tty { bar: indicatif::ProgressBar },
}

struct Output {
    display: Display,
    writer: Box<dyn Write + Send>,
}

impl Output {
    fn line(&mut self, text: &str) {
        match &self.display {
            Display::Tty { bar, .. } => bar.println(text),
            _ => {
                let _ = writeln!(self.writer, "{text}");
                let _ = self.writer.flush();
            }
        }
    }
}

#[derive(Default)]
struct Rates {
    samples: VecDeque<(Instant, u64)>,
    peak_mark: Option<(Instant, u64)>,
    peak: f64,
}

impl Rates {
    fn sample(&mut self, now: Instant, bytes: u64) {
        self.samples.push_back((now, bytes));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        let mark = *self.peak_mark.get_or_insert((now, bytes));
        let dt = now.duration_since(mark.0);
        if dt >= PEAK_WINDOW {
            self.peak = self
                .peak
                .max(bytes.saturating_sub(mark.1) as f64 / dt.as_secs_f64());
            self.peak_mark = Some((now, bytes));
        }
    }

    fn current(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                b.1.saturating_sub(a.1) as f64 / b.0.duration_since(a.0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

/// State shared by the data threads, the control thread and the handle.
pub(crate) struct Shared {
    pub(crate) cfg: MeterConfig,
    prefix: String,
    start: Instant,
    bytes: AtomicU64,
    pub(crate) spliced: AtomicU64,
    size: AtomicU64,
    fill: AtomicU64,
    peak_fill: AtomicU64,
    limit: AtomicU64,
    last_move_ns: AtomicU64,
    stalls: AtomicU64,
    pub(crate) emitting: AtomicBool,
    done: AtomicBool,
    rates: Mutex<Rates>,
    schedule: Mutex<Schedule>,
    out: Mutex<Output>,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Counts `n` bytes passed on.
    pub(crate) fn moved(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Relaxed);
        self.touch();
    }

    /// Notes that data moved (in either direction) now.
    pub(crate) fn touch(&self) {
        self.last_move_ns.store(self.now_ns(), Relaxed);
    }

    /// Bytes passed on so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }

    /// The limit in force now, bytes/s (0 = unlimited).
    pub(crate) fn limit(&self) -> u64 {
        self.limit.load(Relaxed)
    }

    pub(crate) fn set_size(&self, n: u64) {
        self.size
            .store(crate::config::sane_size(n).unwrap_or(0), Relaxed);
    }

    pub(crate) fn fill_add(&self, n: u64) {
        let f = self.fill.fetch_add(n, Relaxed) + n;
        self.peak_fill.fetch_max(f, Relaxed);
        self.touch();
    }

    pub(crate) fn fill_sub(&self, n: u64) {
        self.fill.fetch_sub(n, Relaxed);
    }

    pub(crate) fn fill(&self) -> u64 {
        self.fill.load(Relaxed)
    }

    fn since_last_move(&self) -> Duration {
        Duration::from_nanos(
            self.now_ns()
                .saturating_sub(self.last_move_ns.load(Relaxed)),
        )
    }

    /// The stall watchdog for a wait of `waited` on `side`.
    pub(crate) fn check_stall(&self, side: Side, waited: Duration) -> anyhow::Result<()> {
        match self.cfg.stall_timeout {
            Some(t) if waited >= t && self.since_last_move() >= t => Err(stall_error(side, t)),
            _ => Ok(()),
        }
    }

    fn recompute_limit(&self) {
        let sched = self.schedule.lock().unwrap_or_else(|e| e.into_inner());
        let limit = sched.limit_at(schedule::local_minute_now(), self.cfg.limit);
        self.limit.store(limit.unwrap_or(0), Relaxed);
    }

    fn snapshot(&self) -> Snapshot {
        let rate = self
            .rates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .current();
        Snapshot {
            bytes: self.bytes(),
            elapsed: self.start.elapsed(),
            rate,
            size: match self.size.load(Relaxed) {
                0 => None,
                n => Some(n),
            },
            limit: match self.limit() {
                0 => None,
                n => Some(n),
            },
            fill: self.cfg.buffer.map(|cap| (self.fill(), cap)),
        }
    }

    fn stats(&self, exit: Exit, reason: String) -> Stats {
        let snap = self.snapshot();
        let avg = snap.avg();
        let peak = self.rates.lock().unwrap_or_else(|e| e.into_inner()).peak;
        Stats {
            name: self.cfg.name.clone(),
            bytes: snap.bytes,
            spliced_bytes: self.spliced.load(Relaxed),
            seconds: snap.elapsed.as_secs_f64(),
            average_rate: avg,
            peak_rate: peak.max(avg),
            stalls: self.stalls.load(Relaxed),
            limit: snap.limit,
            size: snap.size,
            buffer: self.cfg.buffer,
            peak_fill: self.peak_fill.load(Relaxed),
            exit: exit.name().to_string(),
            exit_code: exit.code(),
            reason,
        }
    }

    fn progress_tick(&self) {
        let snap = self.snapshot();
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        match &mut out.display {
            Display::Hidden => {}
            Display::Log => {
                let line = report::log_line(&self.prefix, &snap);
                out.line(&line);
            }
            Display::Numeric => {
                let line = report::numeric_line(&snap);
                out.line(&line);
            }
            Display::Tty { bar } => {
                // One setter per tick, so every draw shows one whole line.
                let width = rustix::termios::tcgetwinsize(std::io::stderr())
                    .map(|w| usize::from(w.ws_col))
                    .ok()
                    .filter(|&w| w > 0)
                    .unwrap_or(DEFAULT_COLUMNS);
                bar.set_message(report::tty_line(self.cfg.name.as_deref(), &snap, width));
            }
        }
    }

    fn status_line(&self) {
        let line = report::log_line(&self.prefix, &self.snapshot());
        self.out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .line(&line);
    }

    fn reload_limit_file(&self) {
        let Some(path) = &self.cfg.limit_file else {
            return;
        };
        let msg = match crate::config::read_limit_file(path) {
            Ok(s) => {
                *self.schedule.lock().unwrap_or_else(|e| e.into_inner()) = s;
                self.recompute_limit();
                let limit = match self.limit() {
                    0 => "unlimited".to_string(),
                    n => n.to_string(),
                };
                format!("reloaded --limit-file {}: limit={limit}", path.display())
            }
            Err(e) => format!(
                "keeping the previous limits: {}",
                zpipe_core::exit::one_line(&e)
            ),
        };
        let line = format!("{} {}: {msg}", report::timestamp(), self.prefix);
        self.out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .line(&line);
    }
}

/// The error a stall becomes (exit 3), naming the side.
pub(crate) fn stall_error(side: Side, t: Duration) -> anyhow::Error {
    let secs = t.as_secs_f64();
    zpipe_core::exit::io(match side {
        Side::Input => format!("stalled: no input for {secs}s (upstream is not sending)"),
        Side::Output => {
            format!("stalled: downstream not reading for {secs}s (output is blocked)")
        }
    })
}

/// A started meter: owns the control thread and the signal registrations.
pub(crate) struct Meter {
    pub(crate) shared: Arc<Shared>,
    control: Option<JoinHandle<()>>,
    signals: Vec<signal_hook::SigId>,
}

impl Meter {
    /// Starts the control thread. With `watchdog`, a stall cancels that
    /// token with the stall error (used where no idle hook sees the waits).
    pub(crate) fn start(
        cfg: MeterConfig,
        target: ProgressTarget,
        watchdog: Option<Cancel>,
    ) -> anyhow::Result<Meter> {
        let schedule = cfg.load_schedule()?;
        let (writer, is_tty): (Box<dyn Write + Send>, bool) = match target {
            ProgressTarget::Stderr => {
                (Box::new(std::io::stderr()), std::io::stderr().is_terminal())
            }
            ProgressTarget::Writer(w) => (w, false),
        };
        let display = match cfg.progress {
            ProgressMode::Quiet => Display::Hidden,
            ProgressMode::Numeric => Display::Numeric,
            ProgressMode::Auto if is_tty => {
                let bar = indicatif::ProgressBar::with_draw_target(
                    None,
                    indicatif::ProgressDrawTarget::stderr(),
                );
                if let Ok(style) = indicatif::ProgressStyle::with_template("{wide_msg}") {
                    bar.set_style(style);
                }
                Display::Tty { bar }
            }
            ProgressMode::Auto => Display::Log,
        };
        let interval = cfg.interval.unwrap_or(match &display {
            Display::Tty { .. } => TTY_INTERVAL,
            Display::Numeric => NUMERIC_INTERVAL,
            _ => LOG_INTERVAL,
        });
        let shared = Arc::new(Shared {
            prefix: report::prefix(&cfg.tool, cfg.name.as_deref()),
            start: Instant::now(),
            bytes: AtomicU64::new(0),
            spliced: AtomicU64::new(0),
            size: AtomicU64::new(cfg.size.unwrap_or(0)),
            fill: AtomicU64::new(0),
            peak_fill: AtomicU64::new(0),
            limit: AtomicU64::new(0),
            last_move_ns: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            emitting: AtomicBool::new(false),
            done: AtomicBool::new(false),
            rates: Mutex::new(Rates::default()),
            schedule: Mutex::new(schedule),
            out: Mutex::new(Output { display, writer }),
            cfg,
        });
        shared.recompute_limit();
        let usr1 = Arc::new(AtomicBool::new(false));
        let usr2 = Arc::new(AtomicBool::new(false));
        let mut signals = Vec::new();
        if shared.cfg.signals {
            use signal_hook::consts::{SIGUSR1, SIGUSR2};
            signals.push(signal_hook::flag::register(SIGUSR1, usr1.clone())?);
            signals.push(signal_hook::flag::register(SIGUSR2, usr2.clone())?);
        }
        let s = shared.clone();
        let control = std::thread::Builder::new()
            .name("meter".into())
            .spawn(move || control_loop(&s, interval, &usr1, &usr2, watchdog))?;
        Ok(Meter {
            shared,
            control: Some(control),
            signals,
        })
    }

    fn stop(&mut self) {
        self.shared.done.store(true, Relaxed);
        if let Some(t) = self.control.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        for id in self.signals.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }

    /// A snapshot of the statistics while running.
    pub(crate) fn stats_now(&self) -> Stats {
        self.shared.stats(Exit::Success, "running".to_string())
    }

    /// Stops the control thread, prints the summary, writes `--json`.
    pub(crate) fn finish(&mut self, outcome: Result<(), &anyhow::Error>) -> anyhow::Result<Stats> {
        self.stop();
        let sh = &self.shared;
        if let Ok(mut rates) = sh.rates.lock() {
            let now = Instant::now();
            rates.sample(now, sh.bytes());
        }
        let (exit, reason) = match (zpipe_core::cancel::signal_received(), outcome) {
            (Some(sig), _) => {
                let e = if sig == signal_hook::consts::SIGINT {
                    Exit::Interrupted
                } else {
                    Exit::Terminated
                };
                let name = if e == Exit::Interrupted {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                (e, format!("stopped by {name}"))
            }
            (None, Ok(())) => (Exit::Success, "end of input".to_string()),
            (None, Err(e)) => (zpipe_core::exit::classify(e), zpipe_core::exit::one_line(e)),
        };
        let stats = sh.stats(exit, reason);
        let mut out = sh.out.lock().unwrap_or_else(|e| e.into_inner());
        // On failure the error line is the one line; a signal still gets a summary.
        let summary = matches!(exit, Exit::Success | Exit::Interrupted | Exit::Terminated);
        let out = &mut *out;
        match &mut out.display {
            Display::Hidden => {}
            Display::Log if summary => {
                let line = report::summary_log_line(&sh.prefix, &stats);
                out.line(&line);
            }
            Display::Numeric if exit == Exit::Success => {
                let snap = sh.snapshot();
                let _ = writeln!(out.writer, "{}", report::numeric_line(&snap));
            }
            Display::Tty { bar, .. } => {
                bar.finish_and_clear();
                if summary {
                    let _ = writeln!(out.writer, "{}", report::summary_human(&sh.prefix, &stats));
                }
            }
            _ => {}
        }
        let _ = out.writer.flush();
        if let Some(path) = &sh.cfg.json {
            let mut text = serde_json::to_string_pretty(&stats)?;
            text.push('\n');
            std::fs::write(path, text).map_err(|e| {
                zpipe_core::exit::io(format!("writing --json {}: {e}", path.display()))
            })?;
        }
        Ok(stats)
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.stop();
    }
}

fn control_loop(
    sh: &Shared,
    interval: Duration,
    usr1: &AtomicBool,
    usr2: &AtomicBool,
    watchdog: Option<Cancel>,
) {
    let mut next_progress = Instant::now() + interval;
    let mut next_schedule = Instant::now() + SCHEDULE_CHECK;
    let mut watching = watchdog.is_some() && sh.cfg.stall_timeout.is_some();
    while !sh.done.load(Relaxed) {
        std::thread::park_timeout(TICK);
        if sh.done.load(Relaxed) {
            break;
        }
        let now = Instant::now();
        sh.rates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sample(now, sh.bytes());
        if usr1.swap(false, Relaxed) {
            sh.status_line();
        }
        if usr2.swap(false, Relaxed) {
            sh.reload_limit_file();
        }
        if now >= next_schedule {
            sh.recompute_limit();
            next_schedule = now + SCHEDULE_CHECK;
        }
        if now >= next_progress {
            sh.progress_tick();
            next_progress = now + interval;
        }
        if watching {
            if let (Some(t), Some(cancel)) = (sh.cfg.stall_timeout, &watchdog) {
                if sh.since_last_move() >= t {
                    let side = if sh.emitting.load(Relaxed) {
                        Side::Output
                    } else {
                        Side::Input
                    };
                    sh.stalls.fetch_add(1, Relaxed);
                    cancel.fail(stall_error(side, t));
                    watching = false;
                }
            }
        }
    }
}

/// Copy hooks: limit through the token bucket, count, note stalls.
pub(crate) struct Hooks<'a> {
    shared: &'a Shared,
    bucket: TokenBucket,
    cancel: Cancel,
    noted: bool,
    counting: bool,
}

impl<'a> Hooks<'a> {
    pub(crate) fn new(shared: &'a Shared, cancel: &Cancel) -> Self {
        Hooks {
            shared,
            bucket: TokenBucket::new(),
            cancel: cancel.clone(),
            noted: false,
            counting: true,
        }
    }

    /// Hooks that neither pace nor count (someone upstream already does),
    /// only watch stalls.
    pub(crate) fn watch_only(shared: &'a Shared, cancel: &Cancel) -> Self {
        Hooks {
            counting: false,
            ..Hooks::new(shared, cancel)
        }
    }
}

impl Idle for Hooks<'_> {
    fn idle(&mut self, side: Side, waited: Duration) -> anyhow::Result<()> {
        if waited >= STALL_NOTE && !self.noted {
            self.noted = true;
            self.shared.stalls.fetch_add(1, Relaxed);
        }
        self.shared.check_stall(side, waited)
    }
}

impl CopyHooks for Hooks<'_> {
    fn grant(&mut self, want: usize) -> anyhow::Result<usize> {
        if !self.counting {
            return Ok(want);
        }
        let rate = self.shared.limit();
        self.bucket.grant(want, rate, &self.cancel)
    }

    fn moved(&mut self, n: usize) {
        self.noted = false;
        if self.counting {
            self.bucket.take(n);
            self.shared.moved(n);
        } else {
            self.shared.touch();
        }
    }
}

/// Input-side hooks for the buffer's reader: stalls only, no counting.
pub(crate) struct InputHooks<'a> {
    pub(crate) shared: &'a Shared,
    noted: bool,
}

impl<'a> InputHooks<'a> {
    pub(crate) fn new(shared: &'a Shared) -> Self {
        InputHooks {
            shared,
            noted: false,
        }
    }

    pub(crate) fn got(&mut self, n: usize) {
        self.noted = false;
        self.shared.fill_add(n as u64);
    }
}

impl Idle for InputHooks<'_> {
    fn idle(&mut self, side: Side, waited: Duration) -> anyhow::Result<()> {
        if waited >= STALL_NOTE && !self.noted {
            self.noted = true;
            self.shared.stalls.fetch_add(1, Relaxed);
        }
        self.shared.check_stall(side, waited)
    }
}
