//! `latest.png`: the bastion's ratio to HAProxy (same client transport, medians) per workload
//! and bastion target, as grouped bars with the 1.0 line; then connection churn per upstream
//! auth mode. Drawn with plotters' bitmap backend from the run's JSON ([`crate::results`]).

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use serde_json::Value;

const SIZE: (u32, u32) = (1400, 640);
/// The bars, in this order, and their colours.
const SERIES: &[(&str, RGBColor)] = &[
    ("bastion-unix", RGBColor(31, 119, 180)),
    ("bastion-unix-pass", RGBColor(174, 199, 232)),
    ("bastion-unix-inspect", RGBColor(148, 103, 189)),
    ("bastion-tls", RGBColor(214, 39, 40)),
    ("bastion-tls-pass", RGBColor(255, 152, 150)),
];
/// Churn groups: which churn row is drawn as which series.
const CHURN: &[(&str, &str)] = &[
    ("churn auth=none", "bastion-unix auth=none"),
    ("churn auth=password", "bastion-unix auth=password"),
    ("churn auth=iam", "bastion-unix auth=iam"),
];

pub(crate) fn draw(json: &Value, path: &Path) -> Result<()> {
    // groups[g] = (label, per series: ratio)
    let mut groups: Vec<(String, Vec<Option<f64>>)> = Vec::new();
    for w in json["workloads"].as_array().into_iter().flatten() {
        let label = w["label"].as_str().unwrap_or("?");
        let ratios = SERIES
            .iter()
            .map(|(target, _)| {
                json["throughput"]
                    .as_array()?
                    .iter()
                    .find(|r| r["workload"] == label && r["target"] == *target)?["ratio_to_haproxy"]
                    .as_f64()
            })
            .collect();
        groups.push((label.to_string(), ratios));
    }
    for (label, row) in CHURN {
        let ratio = json["churn"]["rows"].as_array().and_then(|rows| {
            rows.iter().find(|r| r["target"] == *row)?["ratio_to_haproxy"].as_f64()
        });
        // Churn goes through the Unix socket in guard mode: the first series.
        let mut ratios = vec![None; SERIES.len()];
        ratios[0] = ratio;
        groups.push((label.to_string(), ratios));
    }
    let top = groups
        .iter()
        .flat_map(|(_, r)| r.iter().flatten())
        .fold(1.2f64, |a, b| a.max(*b))
        * 1.15;

    let slots = SERIES.len() as i32 + 1; // one empty slot between groups
    let width = groups.len() as i32 * slots;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let title = format!(
        "bastion ÷ HAProxy, same client transport (median ops/s; > 1: bastion faster) — {}{}",
        json["started_utc"].as_str().unwrap_or("?"),
        if json["smoke"].as_bool() == Some(true) {
            " SMOKE RUN"
        } else {
            ""
        }
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0..width, 0f64..top)
        .map_err(|e| anyhow!("{e}"))?;
    let labels: Vec<String> = groups.iter().map(|(l, _)| l.clone()).collect();
    let center = slots / 2;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(width as usize + 1)
        .x_label_formatter(&|x| {
            if x % slots == center {
                labels
                    .get((x / slots) as usize)
                    .cloned()
                    .unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("ratio to HAProxy")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;

    for (s, (name, color)) in SERIES.iter().enumerate() {
        let bars: Vec<(i32, f64)> = groups
            .iter()
            .enumerate()
            .filter_map(|(g, (_, r))| Some((g as i32 * slots + s as i32, r[s]?)))
            .collect();
        let color = *color;
        chart
            .draw_series(
                bars.iter()
                    .map(|&(x, v)| Rectangle::new([(x, 0.0), (x + 1, v)], color.filled())),
            )
            .map_err(|e| anyhow!("{e}"))?
            .label(if bars.is_empty() {
                format!("{name} (n/a)")
            } else {
                name.to_string()
            })
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], color.filled()));
        chart
            .draw_series(bars.iter().map(|&(x, v)| {
                Text::new(
                    format!("{v:.2}"),
                    (x, v + top * 0.01),
                    ("sans-serif", 11).into_font().color(&BLACK),
                )
            }))
            .map_err(|e| anyhow!("{e}"))?;
    }
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(0, 1.0), (width, 1.0)],
            BLACK.stroke_width(2),
        )))
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
