//! `--plot FILE.svg`: throughput over time (top) and latency by
//! percentile per operation kind (bottom), drawn with plotters' SVG
//! backend (text is written as SVG `<text>`, no font library involved).

use std::path::Path;

use plotters::prelude::*;

use crate::report::RunResult;

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(80, 80, 80),
];

/// Write the plot of `result` to `path` (SVG).
pub fn plot(result: &RunResult, path: &Path) -> Result<(), String> {
    draw(result, path).map_err(|e| format!("plot {}: {e}", path.display()))
}

fn draw(result: &RunResult, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1000, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(40);
    title.draw(&Text::new(
        result.headline(),
        (10, 12),
        ("sans-serif", 14).into_font(),
    ))?;
    let (upper, lower) = body.split_vertically(340);

    // Throughput over time.
    let samples = &result.timeline;
    let t_max = samples.iter().map(|s| s.t_secs).fold(1.0, f64::max);
    let y_max = samples.iter().map(|s| s.ops_per_sec).fold(1.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&upper)
        .caption(
            format!(
                "throughput: {:.0} ops/s average, {} errors",
                result.summary.ops_per_sec, result.summary.errors
            ),
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds (after warm-up)")
        .y_desc("ops/s")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    chart.draw_series(LineSeries::new(
        samples.iter().map(|s| (s.t_secs, s.ops_per_sec)),
        COLORS[0].stroke_width(2),
    ))?;
    if let (Some(w), Some(_)) = (&result.wal_limit, result.wal_ratio) {
        if w.entries_per_sec <= y_max {
            chart
                .draw_series(LineSeries::new(
                    [(0.0, w.entries_per_sec), (t_max, w.entries_per_sec)],
                    COLORS[1].stroke_width(1),
                ))?
                .label(format!("WAL raw limit {:.0}/s", w.entries_per_sec))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], COLORS[1]));
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
    }

    // Latency by percentile: x = -log10(1 - q), so 1 = p90, 2 = p99, 3 = p99.9.
    let curves: Vec<_> = result
        .latency_curves
        .iter()
        .filter(|c| !c.points.is_empty())
        .collect();
    let lat_max = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1))
        .max()
        .unwrap_or(1)
        .max(10) as f64
        / 1000.0;
    let lat_min = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1))
        .min()
        .unwrap_or(1)
        .max(1) as f64
        / 1000.0;
    let mut chart = ChartBuilder::on(&lower)
        .caption("latency by percentile", ("sans-serif", 16))
        .margin(12)
        .margin_right(30)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..5f64, (lat_min * 0.8..lat_max * 1.25).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(6)
        .x_label_formatter(&|x| percentile_label(*x))
        .x_desc("percentile")
        .y_desc("latency ms (log)")
        .draw()?;
    for (i, curve) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<(f64, f64)> = curve
            .points
            .iter()
            .map(|&(q, us)| (-(1.0 - q).max(1e-5).log10(), us.max(1) as f64 / 1000.0))
            .collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(curve.op.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// `0 -> "p0"`, `1 -> "p90"`, `2 -> "p99"`, `3 -> "p99.9"`.
pub fn percentile_label(x: f64) -> String {
    let x = x.round();
    if x <= 0.0 {
        return "p0".into();
    }
    let q = 100.0 * (1.0 - 10f64.powf(-x));
    let text = format!("{q:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("p{text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_labels() {
        assert_eq!(percentile_label(0.0), "p0");
        assert_eq!(percentile_label(1.0), "p90");
        assert_eq!(percentile_label(2.0), "p99");
        assert_eq!(percentile_label(3.0), "p99.9");
        assert_eq!(percentile_label(4.0), "p99.99");
    }
}
