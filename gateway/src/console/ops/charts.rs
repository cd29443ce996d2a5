//! Line charts as inline SVG paths (no script): the last hour's samples scaled into a
//! fixed view box. Pure functions, tested below.

/// The view box of every chart.
pub const WIDTH: f64 = 600.0;
pub const HEIGHT: f64 = 150.0;

/// One chart: up to two series over the same time axis.
pub struct Chart {
    /// Translation key of the title.
    pub title: &'static str,
    /// The SVG path of the first series (`M x y L ...`), "" when there is no data.
    pub path: String,
    /// The second series (messages out), "" when none.
    pub path2: String,
    /// The top of the scale and the latest value, formatted.
    pub max: String,
    pub last: String,
    /// Element id (tests find charts by it).
    pub id: &'static str,
}

/// The path of `values` (at times `t_ms`) scaled so that `max` is the top.
pub fn path(t_ms: &[u64], values: &[f64], max: f64) -> String {
    use std::fmt::Write as _;
    let (Some(&t0), Some(&t1)) = (t_ms.first(), t_ms.last()) else {
        return String::new();
    };
    let span = (t1.saturating_sub(t0)).max(1) as f64;
    let max = if max > 0.0 { max } else { 1.0 };
    let mut out = String::new();
    for (i, (t, v)) in t_ms.iter().zip(values).enumerate() {
        let x = (t.saturating_sub(t0)) as f64 / span * WIDTH;
        let y = HEIGHT - (v / max).clamp(0.0, 1.0) * (HEIGHT - 10.0);
        let _ = write!(out, "{}{x:.1} {y:.1} ", if i == 0 { "M" } else { "L" });
    }
    out.trim_end().to_owned()
}

/// A round number at least `v` (1, 2, 5 × 10^n), so the scale reads well.
pub fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let exp = v.log10().floor();
    let base = 10f64.powf(exp);
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * base >= v {
            return m * base;
        }
    }
    10.0 * base
}

/// Per-second rates between neighbouring cumulative counts (the first sample: 0).
pub fn rates(t_ms: &[u64], counts: &[u64]) -> Vec<f64> {
    let mut out = Vec::with_capacity(counts.len());
    for i in 0..counts.len() {
        if i == 0 {
            out.push(0.0);
            continue;
        }
        let dt = t_ms[i].saturating_sub(t_ms[i - 1]) as f64 / 1000.0;
        let dc = counts[i].saturating_sub(counts[i - 1]) as f64;
        out.push(if dt > 0.0 { dc / dt } else { 0.0 });
    }
    out
}

/// Bytes for people.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_span_the_box_and_clamp() {
        let p = path(&[0, 10_000, 20_000], &[0.0, 5.0, 20.0], 10.0);
        assert_eq!(p, "M0.0 150.0 L300.0 80.0 L600.0 10.0");
        assert_eq!(path(&[], &[], 1.0), "");
    }

    #[test]
    fn rates_and_scales() {
        assert_eq!(
            rates(&[0, 10_000, 20_000], &[0, 100, 100]),
            vec![0.0, 10.0, 0.0]
        );
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.0), 5.0);
        assert_eq!(nice_max(120.0), 200.0);
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(2048), "2.0 KiB");
    }
}
