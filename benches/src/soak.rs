//! The soak's time series (`scripts/soak.sh`): one [`Sample`] per window of the load,
//! the verdicts the long run must meet ([`judge`]), and the report: CSV and chart.
//!
//! The verdicts, after the warm-up: resident memory drifts by at most 10 % (its level
//! over the last segment, a median, against its level over the first segment after the
//! warm-up), and never peaks above 1.5× the level at the end of the warm-up; the open file
//! descriptors stay flat (the second half's median no more than a few above the first
//! half's: a descriptor leaked per reload shows); no error outside the windows of
//! injected faults; p99 stable (the median of the windows' p99 over each segment varies
//! by at most 1.5× between segments, windows of faults left out); the load held (the
//! median window, faults left out, answered at least 90 % of the rate asked); every
//! reload and fault burst of the schedule done. A check without enough samples fails.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

/// One window of the soak.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// End of the window, seconds from the start of the soak.
    pub t_s: f64,
    pub requests: u64,
    pub throughput: f64,
    pub errors: u64,
    /// `kind:count` pairs, `;`-separated.
    pub error_kinds: String,
    /// Faults were injected during the window (or up to [`RECOVERY_S`] before it);
    /// set by [`flag`] once the run is over.
    pub injected: bool,
    /// A reload was asked during the window.
    pub reload: bool,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Passerelle's resident memory at the end of the window.
    pub rss_mib: f64,
    pub fds: u64,
    pub sockets: u64,
    /// Client connections open on the internal listener (its metric).
    pub client_connections: i64,
    /// Passerelle's CPU over the window, percent of one core.
    pub cpu_percent: f64,
}

/// After a burst of faults, how long answers may still be the faults' (requests in
/// flight when they stopped).
pub const RECOVERY_S: f64 = 2.0;

/// Slack on both sides of an event: the windows and the events are timed by two
/// threads from (nearly) the same origin.
pub const MARGIN_S: f64 = 1.0;

/// Marks the windows (each `window_s` long, ending at `t_s`) that overlap a fault
/// burst (`(start, end)`; no end: it lasted to the end of the run), widened by
/// [`MARGIN_S`] and followed by [`RECOVERY_S`], and those in which a reload was asked.
/// Done once the run is over, from the events recorded: no race with the control
/// thread.
pub fn flag(samples: &mut [Sample], bursts: &[(f64, Option<f64>)], reloads: &[f64], window_s: f64) {
    for s in samples {
        let from = s.t_s - window_s;
        s.injected = bursts.iter().any(|(start, end)| {
            let end = end.unwrap_or(f64::INFINITY);
            start - MARGIN_S < s.t_s && end + RECOVERY_S + MARGIN_S > from
        });
        s.reload = reloads.iter().any(|r| *r > from && *r <= s.t_s);
    }
}

/// What the soak must meet.
#[derive(Debug, Clone, Serialize)]
pub struct Bounds {
    pub warmup_s: f64,
    /// The rate asked, requests a second.
    pub rate: f64,
    /// Reloads and fault bursts the schedule holds.
    pub reloads_scheduled: usize,
    pub bursts_scheduled: usize,
    /// Level of the last segment / level of the first after the warm-up, minus one.
    pub max_rss_drift: f64,
    /// Highest resident memory after the warm-up / the level at the end of the warm-up.
    pub max_rss_peak: f64,
    /// File descriptors the second half's median may exceed the first half's by.
    pub fd_slack: u64,
    /// Segment length for the p99 comparison.
    pub segment_s: f64,
    /// Highest / lowest segment p99.
    pub max_p99_ratio: f64,
}

/// One verdict: what was measured and whether it meets its bound.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub measured: String,
}

/// The soak's verdicts and the figures behind them.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub rss_baseline_mib: f64,
    /// Median over the first segment after the warm-up, and over the last.
    pub rss_first_level_mib: f64,
    pub rss_last_level_mib: f64,
    pub rss_max_mib: f64,
    pub rss_last_mib: f64,
    pub rss_drift: f64,
    pub fds_min: u64,
    pub fds_max: u64,
    pub errors_outside_faults: u64,
    pub errors_during_faults: u64,
    /// (segment start, seconds; median of its windows' p99, ms).
    pub p99_segments: Vec<(f64, f64)>,
    pub p99_ratio: f64,
    pub requests: u64,
    /// Median requests a second of the windows without faults.
    pub throughput_median: f64,
    pub checks: Vec<Check>,
}

/// What the run did besides the load, for [`judge`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct Done {
    pub reloads_confirmed: usize,
    pub bursts: usize,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Judges `samples` (in time order, flagged by [`flag`]) and what was `done` against
/// `bounds`.
pub fn judge(samples: &[Sample], bounds: &Bounds, done: &Done) -> Verdict {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.t_s > bounds.warmup_s).collect();
    let enough = after.len() >= 2;
    // The level at the end of the warm-up: the median of its last minute (a reload or a
    // burst there moves one sample, not the median); the first sample after it when
    // the warm-up holds none.
    let last_minute: Vec<f64> = samples
        .iter()
        .filter(|s| s.t_s <= bounds.warmup_s && s.t_s > bounds.warmup_s - 60.0)
        .map(|s| s.rss_mib)
        .collect();
    let baseline = if last_minute.is_empty() {
        after.first().map_or(0.0, |s| s.rss_mib)
    } else {
        median(last_minute)
    };
    let rss_max = after.iter().map(|s| s.rss_mib).fold(baseline, f64::max);
    let rss_last = after.last().map_or(baseline, |s| s.rss_mib);
    let rss_read = baseline > 0.0 && after.iter().all(|s| s.rss_mib > 0.0);
    // Drift is a trend: the level (median) over the last segment against the level over
    // the first segment after the warm-up; a transient peak is bounded apart.
    let level = |from: f64, to: f64| {
        median(
            after
                .iter()
                .filter(|s| s.t_s > from && s.t_s <= to)
                .map(|s| s.rss_mib)
                .collect(),
        )
    };
    let end_s = after.last().map_or(0.0, |s| s.t_s);
    let first_level = level(bounds.warmup_s, bounds.warmup_s + bounds.segment_s);
    let last_level = level(end_s - bounds.segment_s, end_s);
    let rss_drift = if first_level > 0.0 {
        last_level / first_level - 1.0
    } else {
        f64::INFINITY
    };
    let rss_peak = if baseline > 0.0 {
        rss_max / baseline
    } else {
        f64::INFINITY
    };
    let half = after.len() / 2;
    let (first, second) = after.split_at(half);
    let fds_median = |part: &[&Sample]| median(part.iter().map(|s| s.fds as f64).collect());
    let (fds_first, fds_second) = (fds_median(first), fds_median(second));
    let fds_min = after.iter().map(|s| s.fds).min().unwrap_or(0);
    let fds_max = after.iter().map(|s| s.fds).max().unwrap_or(0);
    let errors_outside: u64 = samples
        .iter()
        .filter(|s| !s.injected)
        .map(|s| s.errors)
        .sum();
    let errors_during: u64 = samples
        .iter()
        .filter(|s| s.injected)
        .map(|s| s.errors)
        .sum();
    let mut p99_segments = Vec::new();
    let end = after.last().map_or(0.0, |s| s.t_s);
    let mut start = bounds.warmup_s;
    while start < end && bounds.segment_s > 0.0 {
        let stop = start + bounds.segment_s;
        let p99s: Vec<f64> = after
            .iter()
            .filter(|s| s.t_s > start && s.t_s <= stop && !s.injected && s.requests > 0)
            .map(|s| s.p99_ms)
            .collect();
        if !p99s.is_empty() {
            p99_segments.push((start, median(p99s)));
        }
        start = stop;
    }
    let p99_hi = p99_segments.iter().map(|s| s.1).fold(0.0, f64::max);
    let p99_lo = p99_segments
        .iter()
        .map(|s| s.1)
        .fold(f64::INFINITY, f64::min);
    let p99_ratio = if p99_segments.len() >= 2 && p99_lo > 0.0 {
        p99_hi / p99_lo
    } else {
        f64::INFINITY
    };
    let throughput_median = median(
        samples
            .iter()
            .filter(|s| !s.injected)
            .map(|s| s.throughput)
            .collect(),
    );
    let checks = vec![
        Check {
            name: "rss drift after warm-up",
            passed: enough && rss_read && rss_drift <= bounds.max_rss_drift,
            measured: format!(
                "{:+.1} % (level {first_level:.1} MiB over the first segment after warm-up, {last_level:.1} over the last; bound {:.0} %; {} samples after warm-up)",
                rss_drift * 100.0,
                bounds.max_rss_drift * 100.0,
                after.len()
            ),
        },
        Check {
            name: "rss peak",
            passed: enough && rss_read && rss_peak <= bounds.max_rss_peak,
            measured: format!(
                "highest {rss_max:.1} MiB = {rss_peak:.2}x the {baseline:.1} MiB at the end of the warm-up (last {rss_last:.1}; bound {:.2}x)",
                bounds.max_rss_peak
            ),
        },
        Check {
            name: "open file descriptors flat",
            passed: enough && fds_second <= fds_first + bounds.fd_slack as f64,
            measured: format!(
                "median {fds_first:.0} in the first half, {fds_second:.0} in the second (range {fds_min}..{fds_max}; slack {})",
                bounds.fd_slack
            ),
        },
        Check {
            name: "no error outside injected faults",
            passed: !samples.is_empty() && errors_outside == 0,
            measured: format!("{errors_outside} outside, {errors_during} during the fault windows"),
        },
        Check {
            name: "p99 stable",
            passed: p99_ratio <= bounds.max_p99_ratio,
            measured: format!(
                "segment medians {} ms: {p99_ratio:.2}x (bound {:.2}x; at least 2 segments)",
                p99_segments
                    .iter()
                    .map(|(_, p)| format!("{p:.2}"))
                    .collect::<Vec<_>>()
                    .join(" / "),
                bounds.max_p99_ratio
            ),
        },
        Check {
            name: "load held",
            passed: throughput_median >= 0.9 * bounds.rate && bounds.rate > 0.0,
            measured: format!(
                "median {throughput_median:.1} req/s answered for {:.1} asked (bound 90 %)",
                bounds.rate
            ),
        },
        Check {
            name: "schedule kept",
            passed: done.reloads_confirmed == bounds.reloads_scheduled
                && done.bursts == bounds.bursts_scheduled,
            measured: format!(
                "{} of {} reloads confirmed, {} of {} fault bursts",
                done.reloads_confirmed,
                bounds.reloads_scheduled,
                done.bursts,
                bounds.bursts_scheduled
            ),
        },
    ];
    Verdict {
        rss_baseline_mib: baseline,
        rss_first_level_mib: first_level,
        rss_last_level_mib: last_level,
        rss_max_mib: rss_max,
        rss_last_mib: rss_last,
        rss_drift,
        fds_min,
        fds_max,
        errors_outside_faults: errors_outside,
        errors_during_faults: errors_during,
        p99_segments,
        p99_ratio,
        requests: samples.iter().map(|s| s.requests).sum(),
        throughput_median,
        checks,
    }
}

/// The samples as CSV, one line per window.
pub fn csv(samples: &[Sample]) -> String {
    let mut out = String::from(
        "t_s,requests,throughput,errors,error_kinds,injected,reload,p50_ms,p99_ms,max_ms,rss_mib,fds,sockets,client_connections,cpu_percent\n",
    );
    for s in samples {
        let _ = writeln!(
            out,
            "{:.0},{},{:.1},{},{},{},{},{:.3},{:.3},{:.3},{:.2},{},{},{},{:.1}",
            s.t_s,
            s.requests,
            s.throughput,
            s.errors,
            s.error_kinds,
            u8::from(s.injected),
            u8::from(s.reload),
            s.p50_ms,
            s.p99_ms,
            s.max_ms,
            s.rss_mib,
            s.fds,
            s.sockets,
            s.client_connections,
            s.cpu_percent
        );
    }
    out
}

/// Reads back what [`csv`] wrote (a past run, to judge or draw again).
pub fn parse_csv(text: &str) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 15 {
            return Err(format!("line {}: {} fields, 15 expected", n + 1, f.len()));
        }
        let bad = |i: usize| format!("line {}: field {} is {:?}", n + 1, i + 1, f[i]);
        let float = |i: usize| f[i].parse::<f64>().map_err(|_| bad(i));
        let int = |i: usize| f[i].parse::<u64>().map_err(|_| bad(i));
        samples.push(Sample {
            t_s: float(0)?,
            requests: int(1)?,
            throughput: float(2)?,
            errors: int(3)?,
            error_kinds: f[4].to_string(),
            injected: f[5] == "1",
            reload: f[6] == "1",
            p50_ms: float(7)?,
            p99_ms: float(8)?,
            max_ms: float(9)?,
            rss_mib: float(10)?,
            fds: int(11)?,
            sockets: int(12)?,
            client_connections: f[13].parse().map_err(|_| bad(13))?,
            cpu_percent: float(14)?,
        });
    }
    Ok(samples)
}

/// One panel of the chart: caption, then (legend, colour, value) per line.
type Lines = (
    &'static str,
    Vec<(&'static str, RGBColor, fn(&Sample) -> f64)>,
);

/// Draws the soak into `path` (1200 x 1000): resident memory; descriptors and
/// connections; p50 and p99; throughput, errors and CPU. Fault windows are shaded,
/// reloads marked.
pub fn draw(
    path: &Path,
    title: &str,
    samples: &[Sample],
    window_s: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    crate::chart::register_font()?;
    let root = BitMapBackend::new(path, (1200, 1000)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let areas = root.split_evenly((4, 1));
    let end_min = samples.last().map_or(1.0, |s| s.t_s / 60.0).max(1.0);
    let blue = RGBColor(46, 110, 180);
    let orange = RGBColor(200, 90, 40);
    let green = RGBColor(60, 150, 80);
    let grey = RGBColor(120, 120, 120);
    let panels: [Lines; 4] = [
        (
            "Passerelle resident memory (MiB)",
            vec![("RSS", blue, |s| s.rss_mib)],
        ),
        (
            "open file descriptors / sockets / client connections",
            vec![
                ("fds", blue, |s| s.fds as f64),
                ("sockets", green, |s| s.sockets as f64),
                ("client connections", orange, |s| {
                    s.client_connections as f64
                }),
            ],
        ),
        (
            "latency per 10 s window (ms)",
            vec![("p50", blue, |s| s.p50_ms), ("p99", orange, |s| s.p99_ms)],
        ),
        (
            "requests/s, errors per window, Passerelle CPU (% of a core)",
            vec![
                ("req/s", blue, |s| s.throughput),
                ("errors", orange, |s| s.errors as f64),
                ("CPU %", green, |s| s.cpu_percent),
            ],
        ),
    ];
    for (area, (caption, lines)) in areas.iter().zip(panels) {
        let top = samples
            .iter()
            .flat_map(|s| lines.iter().map(move |(_, _, f)| f(s)))
            .fold(0.0_f64, f64::max)
            .max(1e-3)
            * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(24)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..end_min, 0.0..top)?;
        chart
            .configure_mesh()
            .x_desc("minutes")
            .label_style(("sans-serif", 11))
            .draw()?;
        for s in samples.iter().filter(|s| s.injected) {
            let x1 = s.t_s / 60.0;
            chart.draw_series(std::iter::once(Rectangle::new(
                [(x1 - window_s / 60.0, 0.0), (x1, top)],
                RGBColor(250, 200, 200).filled(),
            )))?;
        }
        for s in samples.iter().filter(|s| s.reload) {
            let x = s.t_s / 60.0;
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(x, 0.0), (x, top)],
                grey.mix(0.5),
            )))?;
        }
        for (legend, color, value) in lines {
            chart
                .draw_series(LineSeries::new(
                    samples.iter().map(|s| (s.t_s / 60.0, value(s))),
                    color,
                ))?
                .label(legend)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .label_font(("sans-serif", 11))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_s: f64, rss: f64, fds: u64, p99: f64, errors: u64, injected: bool) -> Sample {
        Sample {
            t_s,
            requests: 100,
            throughput: 10.0,
            errors,
            error_kinds: String::new(),
            injected,
            reload: false,
            p50_ms: p99 / 2.0,
            p99_ms: p99,
            max_ms: p99,
            rss_mib: rss,
            fds,
            sockets: fds / 2,
            client_connections: 16,
            cpu_percent: 20.0,
        }
    }

    fn bounds() -> Bounds {
        Bounds {
            warmup_s: 20.0,
            rate: 10.0,
            reloads_scheduled: 2,
            bursts_scheduled: 1,
            max_rss_drift: 0.10,
            max_rss_peak: 1.5,
            fd_slack: 4,
            segment_s: 30.0,
            max_p99_ratio: 1.5,
        }
    }

    fn done() -> Done {
        Done {
            reloads_confirmed: 2,
            bursts: 1,
        }
    }

    #[test]
    fn a_steady_run_passes_and_faults_are_set_apart() {
        let samples: Vec<_> = (1..=11)
            .map(|i| {
                let t = i as f64 * 10.0;
                // Warm-up grows; then flat within 5 %; one fault window with errors.
                let rss = if t <= 20.0 {
                    10.0 + t
                } else {
                    30.0 + (i % 2) as f64
                };
                sample(
                    t,
                    rss,
                    40 + (i % 3),
                    2.0 + (i % 2) as f64 * 0.2,
                    u64::from(i == 6) * 7,
                    i == 6,
                )
            })
            .collect();
        let v = judge(&samples, &bounds(), &done());
        assert!(v.passed(), "{:#?}", v.checks);
        assert_eq!(v.rss_baseline_mib, 30.0);
        assert_eq!(v.errors_during_faults, 7);
        assert_eq!(v.errors_outside_faults, 0);
        assert_eq!(v.p99_segments.len(), 3);
        assert_eq!(v.requests, 1100);
    }

    #[test]
    fn each_failure_is_caught() {
        let steady = |i: u64| sample(i as f64 * 10.0, 30.0, 40, 2.0, 0, false);
        let run = |change: &dyn Fn(u64, &mut Sample)| {
            let samples: Vec<_> = (1..=12)
                .map(|i| {
                    let mut s = steady(i);
                    change(i, &mut s);
                    s
                })
                .collect();
            judge(&samples, &bounds(), &done())
        };
        let failed = |v: &Verdict| -> Vec<&str> {
            v.checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| c.name)
                .collect()
        };
        // Memory growing 2 MiB a window after the warm-up: a leak.
        let v = run(&|i, s| s.rss_mib = 30.0 + 2.0 * i.saturating_sub(2) as f64);
        assert_eq!(failed(&v), ["rss drift after warm-up", "rss peak"]);
        // Slower, +1 MiB a window (a third in all): the peak stays under 1.5x, the trend
        // shows.
        let v = run(&|i, s| s.rss_mib = 30.0 + i.saturating_sub(2) as f64);
        assert_eq!(failed(&v), ["rss drift after warm-up"]);
        // One transient spike: a peak, not a drift.
        let v = run(&|i, s| s.rss_mib = if i == 7 { 50.0 } else { 30.0 });
        assert_eq!(failed(&v), ["rss peak"]);
        // One descriptor more every window: a leak.
        let v = run(&|i, s| s.fds = 40 + i);
        assert_eq!(failed(&v), ["open file descriptors flat"]);
        // Connections coming and going: not a leak.
        let v = run(&|i, s| s.fds = 40 + (i % 2) * 12);
        assert!(v.passed(), "{:#?}", v.checks);
        // One error outside a fault window.
        let v = run(&|i, s| s.errors = u64::from(i == 9));
        assert_eq!(failed(&v), ["no error outside injected faults"]);
        // Latency doubling in the last segment.
        let v = run(&|i, s| s.p99_ms = if i > 9 { 4.5 } else { 2.0 });
        assert_eq!(failed(&v), ["p99 stable"]);
        // The load not held (a stalled generator answers little).
        let v = run(&|i, s| s.throughput = if i > 3 { 5.0 } else { 10.0 });
        assert_eq!(failed(&v), ["load held"]);
        // Memory unreadable: not a pass.
        let v = run(&|_, s| s.rss_mib = 0.0);
        assert_eq!(failed(&v), ["rss drift after warm-up", "rss peak"]);
        // A reload not confirmed, a burst not sent.
        let samples: Vec<_> = (1..=12).map(steady).collect();
        let v = judge(
            &samples,
            &bounds(),
            &Done {
                reloads_confirmed: 1,
                bursts: 1,
            },
        );
        assert_eq!(failed(&v), ["schedule kept"]);
        // Too few samples to judge.
        let v = judge(&samples[..2], &bounds(), &done());
        assert!(!v.passed());
    }

    #[test]
    fn windows_are_flagged_from_the_events_recorded() {
        let mut samples: Vec<_> = (1..=8)
            .map(|i| sample(i as f64 * 10.0, 30.0, 40, 2.0, 0, false))
            .collect();
        // A burst from 20 to 40 s, one still running from 70 s; a reload at 55 s.
        flag(
            &mut samples,
            &[(20.0, Some(40.0)), (70.0, None)],
            &[55.0],
            10.0,
        );
        let injected: Vec<_> = samples.iter().map(|s| s.injected).collect();
        // (10,20] touches the start (margin), (40,50] the recovery.
        assert_eq!(injected, [false, true, true, true, true, false, true, true]);
        let reloads: Vec<_> = samples.iter().map(|s| s.reload).collect();
        assert_eq!(
            reloads,
            [false, false, false, false, false, true, false, false]
        );
    }

    #[test]
    fn the_csv_has_a_line_per_window() {
        let text = csv(&[sample(10.0, 30.0, 40, 2.0, 0, false)]);
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0].split(',').count(),
            lines[1].split(',').count(),
            "{text}"
        );
        assert!(lines[1].starts_with("10,100,10.0,0,,0,0,"), "{}", lines[1]);
        let back = parse_csv(&text).expect("parse");
        assert_eq!(back.len(), 1);
        assert_eq!(
            (back[0].requests, back[0].fds, back[0].p99_ms),
            (100, 40, 2.0)
        );
        assert!(parse_csv("header\n1,2\n").is_err());
    }
}
