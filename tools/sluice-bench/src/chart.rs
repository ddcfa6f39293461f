//! chart.svg for a sweep: throughput (top panel) and p50/p99 latency (bottom
//! panel, log scale) against batch size (log scale), one series per
//! combination of the other settings — the picture for choosing batch.size.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::report::RunResult;

/// The settings other than batch size that tell series apart.
pub fn series_label(r: &RunResult) -> String {
    let mut s = format!(
        "linger={}ms acks={} msg={}B",
        r.linger_ms, r.acks, r.message_bytes
    );
    if r.compression != "none" {
        s.push(' ');
        s.push_str(&r.compression);
    }
    if r.rate > 0.0 {
        s.push_str(&format!(" rate={}/s", r.rate));
    }
    s
}

fn fail<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing chart.svg: {e:?}")
}

pub fn write_chart(path: &Path, results: &[RunResult], budget_ms: Option<f64>) -> Result<()> {
    // Series in first-appearance order, points sorted by batch size.
    let mut order: Vec<String> = Vec::new();
    let mut series: BTreeMap<String, Vec<&RunResult>> = BTreeMap::new();
    for r in results {
        let l = series_label(r);
        if !series.contains_key(&l) {
            order.push(l.clone());
        }
        series.entry(l).or_default().push(r);
    }
    for pts in series.values_mut() {
        pts.sort_by_key(|r| r.batch_bytes);
    }
    let kind = results.first().map_or("ack", |r| r.latency_kind());

    let xs: Vec<f64> = results.iter().map(|r| r.batch_bytes as f64).collect();
    let (mut x0, mut x1) = (
        xs.iter().cloned().fold(f64::MAX, f64::min),
        xs.iter().cloned().fold(0.0, f64::max),
    );
    if results.is_empty() {
        (x0, x1) = (1.0, 10.0);
    }
    // Margins so the extreme points are not on the frame (log axis: ratios).
    let (x0, x1) = (x0 / 1.5, x1 * 1.5);
    let max_mb = results.iter().map(|r| r.mb_per_s()).fold(0.0, f64::max);
    let lat = |r: &RunResult, f: fn(&crate::histogram::Percentiles) -> f64| {
        r.latency().filter(|l| l.count > 0).map(f)
    };
    let mut lat_vals: Vec<f64> = results
        .iter()
        .flat_map(|r| [lat(r, |l| l.p50_ms), lat(r, |l| l.p99_ms)])
        .flatten()
        .filter(|v| *v > 0.0)
        .collect();
    if let Some(b) = budget_ms {
        lat_vals.push(b);
    }
    let y0 = lat_vals.iter().cloned().fold(f64::MAX, f64::min).min(1.0) / 1.5;
    let y1 = lat_vals.iter().cloned().fold(0.0, f64::max).max(y0 * 10.0) * 1.5;

    let root = SVGBackend::new(path, (1100, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(fail)?;
    let root = root
        .titled(
            "sluice-bench sweep: throughput and latency against batch.size",
            ("sans-serif", 22),
        )
        .map_err(fail)?;
    let (top, bottom) = root.split_vertically(430);

    let mut tp = ChartBuilder::on(&top)
        .caption("throughput (MB/s, value+key bytes)", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((x0..x1).log_scale(), 0.0..(max_mb * 1.15).max(0.1))
        .map_err(fail)?;
    tp.configure_mesh()
        .x_desc("batch.size (bytes)")
        .y_desc("MB/s")
        .x_label_formatter(&|x| fmt_bytes(*x))
        .draw()
        .map_err(fail)?;

    let mut lp = ChartBuilder::on(&bottom)
        .caption(
            format!("{kind} latency (ms, log): p99 solid, p50 dashed"),
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
        .map_err(fail)?;
    lp.configure_mesh()
        .x_desc("batch.size (bytes)")
        .y_desc("ms")
        .x_label_formatter(&|x| fmt_bytes(*x))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()
        .map_err(fail)?;

    for (i, label) in order.iter().enumerate() {
        let pts = &series[label];
        let color = Palette99::pick(i).to_rgba();
        let thr: Vec<(f64, f64)> = pts
            .iter()
            .map(|r| (r.batch_bytes as f64, r.mb_per_s()))
            .collect();
        tp.draw_series(LineSeries::new(thr.clone(), color.stroke_width(2)))
            .map_err(fail)?
            .label(label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        tp.draw_series(thr.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(fail)?;

        let p99: Vec<(f64, f64)> = pts
            .iter()
            .filter_map(|r| Some((r.batch_bytes as f64, lat(r, |l| l.p99_ms)?.max(y0))))
            .collect();
        let p50: Vec<(f64, f64)> = pts
            .iter()
            .filter_map(|r| Some((r.batch_bytes as f64, lat(r, |l| l.p50_ms)?.max(y0))))
            .collect();
        // Colours match the top panel's legend; only the budget is labelled here.
        lp.draw_series(LineSeries::new(p99.clone(), color.stroke_width(2)))
            .map_err(fail)?;
        lp.draw_series(p99.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(fail)?;
        lp.draw_series(DashedLineSeries::new(
            p50.clone(),
            6,
            4,
            color.stroke_width(1),
        ))
        .map_err(fail)?;
        lp.draw_series(
            p50.iter()
                .map(|&p| TriangleMarker::new(p, 4, color.filled())),
        )
        .map_err(fail)?;
    }
    if let Some(b) = budget_ms {
        lp.draw_series(DashedLineSeries::new(
            vec![(x0, b), (x1, b)],
            8,
            6,
            RED.stroke_width(1),
        ))
        .map_err(fail)?
        .label(format!("p99 budget {b} ms"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(1)));
    }
    tp.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(fail)?;
    if budget_ms.is_some() {
        lp.configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(fail)?;
    }
    root.present().map_err(fail)?;
    Ok(())
}

fn fmt_bytes(b: f64) -> String {
    if b >= 1e6 {
        format!("{:.0}M", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.0}K", b / 1e3)
    } else {
        format!("{b:.0}")
    }
}
