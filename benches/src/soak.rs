//! The soak's time series (`scripts/soak.sh`): one [`Sample`] per window of the load,
//! the verdicts the long run must meet ([`judge`]), and the report: CSV and chart.
//!
//! The verdicts, after the warm-up: resident memory drifts by at most 10 % from its
//! level at the end of the warm-up; the open file descriptors stay flat (the second
//! half's highest no more than a few above the first half's); no error outside the
//! windows of injected faults; p99 stable (the median of the windows' p99 over each
//! segment varies by at most 1.5× between segments, windows of faults left out).

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
    /// Faults were injected during the window (or just before it: recovery).
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

/// What the soak must meet.
#[derive(Debug, Clone, Serialize)]
pub struct Bounds {
    pub warmup_s: f64,
    /// Highest resident memory after the warm-up / the level at its end, minus one.
    pub max_rss_drift: f64,
    /// File descriptors the second half's highest may exceed the first half's by.
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
    pub checks: Vec<Check>,
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

/// Judges `samples` (in time order) against `bounds`.
pub fn judge(samples: &[Sample], bounds: &Bounds) -> Verdict {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.t_s > bounds.warmup_s).collect();
    // The level at the end of the warm-up: the last sample within it (the first after
    // it when the warm-up holds none).
    let baseline = samples
        .iter()
        .rev()
        .find(|s| s.t_s <= bounds.warmup_s)
        .or(after.first().copied())
        .map_or(0.0, |s| s.rss_mib);
    let rss_max = after.iter().map(|s| s.rss_mib).fold(baseline, f64::max);
    let rss_last = after.last().map_or(baseline, |s| s.rss_mib);
    let rss_drift = if baseline > 0.0 {
        rss_max / baseline - 1.0
    } else {
        0.0
    };
    let half = after.len() / 2;
    let fds_max_of = |part: &[&Sample]| part.iter().map(|s| s.fds).max().unwrap_or(0);
    let (first, second) = after.split_at(half);
    let (fds_first, fds_second) = (fds_max_of(first), fds_max_of(second));
    let fds_min = after.iter().map(|s| s.fds).min().unwrap_or(0);
    let fds_max = fds_first.max(fds_second);
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
    while start < end {
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
    let p99_ratio = if p99_lo.is_finite() && p99_lo > 0.0 {
        p99_hi / p99_lo
    } else {
        1.0
    };
    let checks = vec![
        Check {
            name: "rss drift after warm-up",
            passed: rss_drift <= bounds.max_rss_drift,
            measured: format!(
                "{:+.1} % (baseline {baseline:.1} MiB, highest {rss_max:.1}, last {rss_last:.1}; bound {:.0} %)",
                rss_drift * 100.0,
                bounds.max_rss_drift * 100.0
            ),
        },
        Check {
            name: "open file descriptors flat",
            passed: fds_second <= fds_first + bounds.fd_slack,
            measured: format!(
                "first half highest {fds_first}, second half highest {fds_second} (range {fds_min}..{fds_max}; slack {})",
                bounds.fd_slack
            ),
        },
        Check {
            name: "no error outside injected faults",
            passed: errors_outside == 0,
            measured: format!("{errors_outside} outside, {errors_during} during the fault windows"),
        },
        Check {
            name: "p99 stable",
            passed: p99_ratio <= bounds.max_p99_ratio,
            measured: format!(
                "segment medians {} ms: {p99_ratio:.2}x (bound {:.2}x)",
                p99_segments
                    .iter()
                    .map(|(_, p)| format!("{p:.2}"))
                    .collect::<Vec<_>>()
                    .join(" / "),
                bounds.max_p99_ratio
            ),
        },
    ];
    Verdict {
        rss_baseline_mib: baseline,
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
            max_rss_drift: 0.10,
            fd_slack: 4,
            segment_s: 30.0,
            max_p99_ratio: 1.5,
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
        let v = judge(&samples, &bounds());
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
            judge(&samples, &bounds())
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
        assert_eq!(failed(&v), ["rss drift after warm-up"]);
        // One descriptor more every window: a leak.
        let v = run(&|i, s| s.fds = 40 + i);
        assert_eq!(failed(&v), ["open file descriptors flat"]);
        // One error outside a fault window.
        let v = run(&|i, s| s.errors = u64::from(i == 9));
        assert_eq!(failed(&v), ["no error outside injected faults"]);
        // Latency doubling in the last segment.
        let v = run(&|i, s| s.p99_ms = if i > 9 { 4.5 } else { 2.0 });
        assert_eq!(failed(&v), ["p99 stable"]);
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
    }
}
