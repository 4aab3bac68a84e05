//! Statistics over repeated samples and the evaluation of targets (pure:
//! no I/O, unit-tested).
//!
//! A case has rows (its tool and the anchors it is compared to); each row
//! has one [`Sample`] per repetition. [`Summary`] condenses a row's samples
//! (min and median wall time, median CPU, maximum RSS); a [`Target`] is one
//! line of the issue's targets (`meter -q ≤ 1.0× pv -q`), evaluated on the
//! summaries to a [`Verdict`].

use serde::{Deserialize, Serialize};

/// One timed run of one row.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Wall time, seconds.
    pub wall_s: f64,
    /// User + system CPU of the local process tree (wait4 rusage), seconds.
    pub cpu_s: f64,
    /// CPU of every process of the run on both sides of an ssh link
    /// (cgroup-v1 cpuacct), seconds; `None` where not measured.
    pub cpu_all_s: Option<f64>,
    /// CPU of the zfs-fuse daemon during the run, seconds (zfs rows).
    pub daemon_cpu_s: Option<f64>,
    /// Peak RSS of the largest process of the local tree, KiB.
    pub rss_tree_kib: u64,
    /// Peak RSS of the measured tool itself, KiB (rows that wrap it).
    pub rss_tool_kib: Option<u64>,
    /// Bytes the row wrote at its end (file size or bytes counted).
    pub bytes_out: Option<u64>,
    /// Bytes sent on the shaped link (veth tx_bytes delta), slow links only.
    pub wire_bytes: Option<u64>,
}

/// The smallest value (NaN-free input expected); `None` when empty.
pub fn min(values: &[f64]) -> Option<f64> {
    values.iter().copied().reduce(f64::min)
}

/// The median: the middle value, or the mean of the two middle values for
/// an even count; `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// `a / b`, `None` when `b` is not a positive number.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && b.is_finite() && a.is_finite()).then(|| a / b)
}

/// A row's samples condensed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of samples.
    pub reps: usize,
    /// Fastest wall time, seconds.
    pub wall_min_s: f64,
    /// Median wall time, seconds.
    pub wall_median_s: f64,
    /// Median local CPU (user + sys of the tree), seconds.
    pub cpu_s: f64,
    /// Median CPU of both sides (cpuacct), seconds, when measured.
    pub cpu_all_s: Option<f64>,
    /// Median zfs-fuse daemon CPU, seconds, when measured.
    pub daemon_cpu_s: Option<f64>,
    /// Largest tree RSS over the samples, KiB.
    pub rss_tree_kib: u64,
    /// Largest tool RSS over the samples, KiB.
    pub rss_tool_kib: Option<u64>,
    /// Bytes out of the last sample.
    pub bytes_out: Option<u64>,
    /// Median bytes on the shaped link.
    pub wire_bytes: Option<u64>,
    /// Bytes the row reads (its input), for throughput.
    pub bytes_in: u64,
}

fn median_opt(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Option<Vec<f64>> = values.collect();
    v.and_then(|v| median(&v))
}

impl Summary {
    /// Condenses `samples` of a row reading `bytes_in` bytes; `None` when
    /// there are no samples.
    pub fn of(samples: &[Sample], bytes_in: u64) -> Option<Summary> {
        let walls: Vec<f64> = samples.iter().map(|s| s.wall_s).collect();
        let cpus: Vec<f64> = samples.iter().map(|s| s.cpu_s).collect();
        Some(Summary {
            reps: samples.len(),
            wall_min_s: min(&walls)?,
            wall_median_s: median(&walls)?,
            cpu_s: median(&cpus)?,
            cpu_all_s: median_opt(samples.iter().map(|s| s.cpu_all_s)),
            daemon_cpu_s: median_opt(samples.iter().map(|s| s.daemon_cpu_s)),
            rss_tree_kib: samples.iter().map(|s| s.rss_tree_kib).max()?,
            rss_tool_kib: samples.iter().filter_map(|s| s.rss_tool_kib).max(),
            bytes_out: samples.last()?.bytes_out,
            wire_bytes: median_opt(samples.iter().map(|s| s.wire_bytes.map(|b| b as f64)))
                .map(|b| b as u64),
            bytes_in,
        })
    }

    /// The CPU figure to compare: both sides when measured, else local.
    pub fn cpu_best_s(&self) -> f64 {
        self.cpu_all_s.unwrap_or(self.cpu_s)
    }

    /// The value of `metric` for this row (`None` when not measured).
    pub fn metric(&self, metric: Metric) -> Option<f64> {
        const GIB: f64 = (1u64 << 30) as f64;
        const MIB: f64 = 1024.0;
        match metric {
            Metric::WallMin => Some(self.wall_min_s),
            Metric::WallMedian => Some(self.wall_median_s),
            Metric::Cpu => Some(self.cpu_best_s()),
            Metric::CpuPerGib => {
                (self.bytes_in > 0).then(|| self.cpu_best_s() / (self.bytes_in as f64 / GIB))
            }
            Metric::RssToolMib => self.rss_tool_kib.map(|k| k as f64 / MIB),
            Metric::RssTreeMib => Some(self.rss_tree_kib as f64 / MIB),
            Metric::BytesOut => self.bytes_out.map(|b| b as f64),
            Metric::WireBytes => self.wire_bytes.map(|b| b as f64),
            Metric::GbPerS => {
                ratio(self.bytes_in as f64 / 1e9, self.wall_median_s).filter(|_| self.bytes_in > 0)
            }
            Metric::OutPerIn => self
                .bytes_out
                .and_then(|o| ratio(o as f64, self.bytes_in as f64)),
            Metric::MbPerS => {
                ratio(self.bytes_in as f64 / 1e6, self.wall_median_s).filter(|_| self.bytes_in > 0)
            }
        }
    }
}

/// What a target compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Fastest wall time.
    WallMin,
    /// Median wall time.
    WallMedian,
    /// Median CPU (both sides when measured).
    Cpu,
    /// Median CPU per GiB of input.
    CpuPerGib,
    /// Peak RSS of the tool, MiB.
    RssToolMib,
    /// Peak RSS of the tree, MiB.
    RssTreeMib,
    /// Output size.
    BytesOut,
    /// Bytes on the shaped link.
    WireBytes,
    /// Input bytes / median wall, GB/s (10^9).
    GbPerS,
    /// Input bytes / median wall, MB/s (10^6).
    MbPerS,
    /// Output bytes / input bytes.
    OutPerIn,
}

/// The comparison of a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// The value must be at most the limit.
    #[serde(rename = "<=")]
    Le,
    /// The value must be at least the limit.
    #[serde(rename = ">=")]
    Ge,
}

impl Op {
    /// `<=` or `>=`.
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Le => "<=",
            Op::Ge => ">=",
        }
    }
}

/// One target line: `value(a) [/ value(b)] OP limit`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// What the line says (`meter -q / pv -q (wall)`).
    pub label: String,
    /// The row and metric measured.
    pub row: String,
    /// Its metric.
    pub metric: Metric,
    /// The row divided by (its metric), for a ratio target.
    pub per: Option<(String, Metric)>,
    /// The comparison.
    pub op: Op,
    /// The limit.
    pub limit: f64,
}

impl Target {
    /// `row.metric / per.metric OP limit`.
    pub fn ratio(label: &str, row: &str, per: &str, metric: Metric, op: Op, limit: f64) -> Self {
        Target {
            label: label.into(),
            row: row.into(),
            metric,
            per: Some((per.into(), metric)),
            op,
            limit,
        }
    }

    /// `row.metric OP limit`.
    pub fn absolute(label: &str, row: &str, metric: Metric, op: Op, limit: f64) -> Self {
        Target {
            label: label.into(),
            row: row.into(),
            metric,
            per: None,
            op,
            limit,
        }
    }
}

/// The outcome of one target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE", tag = "verdict")]
pub enum Verdict {
    /// Met, with the value.
    Pass {
        /// The measured value.
        value: f64,
    },
    /// Missed, with the value.
    Fail {
        /// The measured value.
        value: f64,
    },
    /// Not measured (a row skipped or a metric missing), with the reason.
    Skip {
        /// Why.
        why: String,
    },
}

impl Verdict {
    /// `PASS`, `FAIL` or `SKIP`.
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Pass { .. } => "PASS",
            Verdict::Fail { .. } => "FAIL",
            Verdict::Skip { .. } => "SKIP",
        }
    }
}

/// Evaluates `target` against the summaries `lookup` finds by row name.
pub fn evaluate<'a>(target: &Target, lookup: impl Fn(&str) -> Option<&'a Summary>) -> Verdict {
    let value_of = |row: &str, metric: Metric| -> Result<f64, String> {
        let s = lookup(row).ok_or_else(|| format!("row `{row}` did not run"))?;
        s.metric(metric)
            .ok_or_else(|| format!("row `{row}` has no {metric:?}"))
    };
    let value = value_of(&target.row, target.metric).and_then(|a| match &target.per {
        None => Ok(a),
        Some((row, metric)) => {
            let b = value_of(row, *metric)?;
            ratio(a, b).ok_or_else(|| format!("row `{row}` measured 0"))
        }
    });
    match value {
        Err(why) => Verdict::Skip { why },
        Ok(value) => {
            let ok = match target.op {
                Op::Le => value <= target.limit,
                Op::Ge => value >= target.limit,
            };
            if ok {
                Verdict::Pass { value }
            } else {
                Verdict::Fail { value }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(wall: f64, cpu: f64, rss: u64) -> Sample {
        Sample {
            wall_s: wall,
            cpu_s: cpu,
            rss_tree_kib: rss,
            ..Sample::default()
        }
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(min(&[3.0, 1.5, 2.0]), Some(1.5));
        assert_eq!(min(&[]), None);
    }

    #[test]
    fn ratio_refuses_zero_divisors() {
        assert_eq!(ratio(1.0, 2.0), Some(0.5));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
    }

    #[test]
    fn summary_takes_min_median_and_max_rss() {
        let s = Summary::of(
            &[
                sample(3.0, 1.0, 100),
                sample(1.0, 3.0, 300),
                sample(2.0, 2.0, 200),
            ],
            1 << 30,
        )
        .unwrap();
        assert_eq!(s.reps, 3);
        assert_eq!(s.wall_min_s, 1.0);
        assert_eq!(s.wall_median_s, 2.0);
        assert_eq!(s.cpu_s, 2.0);
        assert_eq!(s.rss_tree_kib, 300);
        assert_eq!(s.metric(Metric::CpuPerGib), Some(2.0));
        assert_eq!(
            s.metric(Metric::GbPerS),
            Some((1u64 << 30) as f64 / 1e9 / 2.0)
        );
        assert!(Summary::of(&[], 0).is_none());
    }

    #[test]
    fn cpu_of_both_sides_wins_when_every_sample_has_it() {
        let mut a = sample(1.0, 1.0, 1);
        let mut b = sample(1.0, 1.0, 1);
        a.cpu_all_s = Some(4.0);
        b.cpu_all_s = Some(6.0);
        let s = Summary::of(&[a.clone(), b], 0).unwrap();
        assert_eq!(s.cpu_best_s(), 5.0);
        // One sample without it: the local figure is used.
        let s = Summary::of(&[a, sample(1.0, 1.0, 1)], 0).unwrap();
        assert_eq!(s.cpu_all_s, None);
        assert_eq!(s.cpu_best_s(), 1.0);
    }

    #[test]
    fn targets_pass_fail_and_skip() {
        let fast = Summary::of(&[sample(0.8, 1.0, 8 << 10)], 1 << 30).unwrap();
        let slow = Summary::of(&[sample(1.0, 1.0, 1 << 10)], 1 << 30).unwrap();
        let lookup = |name: &str| match name {
            "ours" => Some(&fast),
            "pv" => Some(&slow),
            _ => None,
        };
        let t = Target::ratio("ours / pv", "ours", "pv", Metric::WallMedian, Op::Le, 0.85);
        assert_eq!(evaluate(&t, lookup), Verdict::Pass { value: 0.8 });
        let t = Target::ratio("ours / pv", "ours", "pv", Metric::WallMedian, Op::Le, 0.75);
        assert_eq!(evaluate(&t, lookup).word(), "FAIL");
        let t = Target::absolute("rss", "ours", Metric::RssTreeMib, Op::Le, 16.0);
        assert_eq!(evaluate(&t, lookup), Verdict::Pass { value: 8.0 });
        let t = Target::absolute("rss", "ours", Metric::RssToolMib, Op::Le, 16.0);
        assert!(matches!(evaluate(&t, lookup), Verdict::Skip { .. }));
        let t = Target::ratio("x", "ours", "mbuffer", Metric::WallMedian, Op::Le, 1.0);
        match evaluate(&t, lookup) {
            Verdict::Skip { why } => assert!(why.contains("mbuffer"), "{why}"),
            v => panic!("{v:?}"),
        }
        let t = Target::absolute("GB/s", "ours", Metric::GbPerS, Op::Ge, 1.5);
        assert_eq!(evaluate(&t, lookup).word(), "FAIL");
    }
}
