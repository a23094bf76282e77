//! The comparison chart: throughput, p99 latency and the proxy's CPU per request, per
//! scenario and target, as a PNG.

use plotters::prelude::*;

/// One bar pair.
#[derive(Debug, Clone)]
pub struct Bar {
    pub label: String,
    pub throughput: f64,
    pub p99_ms: f64,
    /// The proxy's CPU milliseconds per request (none for direct access).
    pub cpu_ms: Option<f64>,
}

/// One panel: where, its caption, the value it plots, the bar colour.
type Panel<'a, DB> = (
    &'a DrawingArea<DB, plotters::coord::Shift>,
    &'static str,
    &'a dyn Fn(&Bar) -> Option<f64>,
    RGBColor,
);

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Makes DejaVu Sans the charts' "sans-serif" (once per process).
pub fn register_font() -> Result<(), String> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let font = std::fs::read(FONT)
            .map_err(|e| format!("{FONT}: {e} (scripts/install-deps.sh --bench installs it)"))?;
        // plotters keeps registered fonts for the life of the process.
        plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            Box::leak(font.into_boxed_slice()),
        )
        .map_err(|_| format!("{FONT}: not a usable font"))
    })
    .clone()
}

/// Draws `bars` into `path` (1800 x 100 + 40 per bar pixels).
pub fn draw(
    path: &std::path::Path,
    title: &str,
    bars: &[Bar],
) -> Result<(), Box<dyn std::error::Error>> {
    register_font()?;
    let n = bars.len().max(1);
    let height = 100 + 40 * n as u32;
    let root = BitMapBackend::new(path, (1800, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let (left, rest) = root.split_horizontally(600);
    let (middle, right) = rest.split_horizontally(600);
    let throughput = |b: &Bar| Some(b.throughput);
    let p99 = |b: &Bar| Some(b.p99_ms);
    let cpu = |b: &Bar| b.cpu_ms;
    let panels: [Panel<'_, _>; 3] = [
        (
            &left,
            "throughput (requests/s, higher is better)",
            &throughput,
            RGBColor(46, 110, 180),
        ),
        (
            &middle,
            "p99 latency (ms, lower is better)",
            &p99,
            RGBColor(200, 90, 40),
        ),
        (
            &right,
            "proxy CPU per request (ms, lower is better)",
            &cpu,
            RGBColor(90, 150, 70),
        ),
    ];
    for (area, caption, value, color) in panels {
        let max = bars
            .iter()
            .filter_map(value)
            .fold(0.0_f64, f64::max)
            .max(1e-6)
            * 1.25;
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(28)
            .build_cartesian_2d(0.0..max, 0.0..n as f64)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .x_labels(6)
            .label_style(("sans-serif", 12))
            .draw()?;
        for (i, bar) in bars.iter().enumerate() {
            let top = (n - i) as f64 - 0.1;
            let bottom = (n - i) as f64 - 0.9;
            let shown = match value(bar) {
                Some(v) => {
                    chart.draw_series(std::iter::once(Rectangle::new(
                        [(0.0, bottom), (v, top)],
                        color.mix(0.75).filled(),
                    )))?;
                    if v >= 100.0 {
                        format!("{v:.0}")
                    } else if v >= 1.0 {
                        format!("{v:.2}")
                    } else {
                        format!("{v:.3}")
                    }
                }
                None => "-".to_string(),
            };
            chart.draw_series(std::iter::once(Text::new(
                format!("{}  {shown}", bar.label),
                (max * 0.01, top - 0.25),
                ("sans-serif", 13).into_font().color(&BLACK),
            )))?;
        }
    }
    root.present()?;
    Ok(())
}
