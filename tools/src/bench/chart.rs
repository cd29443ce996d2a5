//! PNG charts of a bench run: throughput per scenario and broker, and p50/p99 latency.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{FontFamily, register_font};

use super::Row;

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn font_loaded() -> bool {
    for p in FONT_PATHS {
        if let Ok(bytes) = std::fs::read(p) {
            let leaked: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if register_font("sans-serif", FontStyle::Normal, leaked).is_ok() {
                return true;
            }
        }
    }
    false
}

/// Draws `throughput.png` and `latency.png` into `out`.
pub fn draw(out: &Path, scenarios: Vec<&str>, rows: &[Row]) -> anyhow::Result<()> {
    if !font_loaded() {
        eprintln!("no DejaVu font found (apt-get install fonts-dejavu-core): charts skipped");
        return Ok(());
    }
    let brokers = ["switchboard", "mosquitto", "rumqttd"];
    let colors = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
    ];
    let flow: Vec<&str> = scenarios
        .into_iter()
        .filter(|s| rows.iter().any(|r| r.scenario == *s && r.p50_us > 0.0))
        .collect();
    for (file, title, metric) in [
        ("throughput.png", "Throughput (msg/s, higher is better)", 0),
        ("latency-p99.png", "p99 latency (µs, lower is better)", 1),
    ] {
        let path = out.join(file);
        let root = BitMapBackend::new(&path, (1200, 600)).into_drawing_area();
        root.fill(&WHITE)?;
        let value = |r: &Row| if metric == 0 { r.throughput } else { r.p99_us };
        let max = rows.iter().map(value).fold(1.0, f64::max) * 1.1;
        let n = flow.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FontFamily::SansSerif, 24))
            .margin(20)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..n as f64, 0f64..max)?;
        let labels = flow.clone();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n * 2 + 1)
            .x_label_formatter(&|x| {
                let i = (*x - 0.5).round();
                if (x - 0.5 - i).abs() < 0.01 && i >= 0.0 {
                    labels
                        .get(i as usize)
                        .map(|s| s.to_string())
                        .unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .draw()?;
        for (bi, b) in brokers.iter().enumerate() {
            let color = colors[bi];
            let bars: Vec<_> = flow
                .iter()
                .enumerate()
                .filter_map(|(si, s)| {
                    let r = rows.iter().find(|r| r.scenario == *s && r.broker == *b)?;
                    let x0 = si as f64 + 0.1 + bi as f64 * 0.27;
                    Some(Rectangle::new(
                        [(x0, 0.0), (x0 + 0.25, value(r))],
                        color.filled(),
                    ))
                })
                .collect();
            chart.draw_series(bars)?.label(*b).legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
            });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE)
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    Ok(())
}
