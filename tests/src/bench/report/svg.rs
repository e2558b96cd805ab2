//! `bench/datapath.svg`: the datapath's figures as a bar chart.

use std::fmt::Write as _;

use super::Machine;
use crate::bench::datapath::DatapathResults;

/// A horizontal bar chart of the median ns per packet, p99 as a whisker,
/// the trivial program's median as a dashed line.
pub fn datapath_svg(d: &DatapathResults, machine: &Machine) -> String {
    let base = d.trivial();
    let label_w = 330.0;
    let chart_w = 520.0;
    let right_w = 150.0;
    let row_h = 24.0;
    let top = 62.0;
    let n = d.scenarios.len() as f64;
    let height = top + n * row_h + 46.0;
    let width = label_w + chart_w + right_w;
    let max = d
        .scenarios
        .iter()
        .map(|s| s.p99_ns.max(s.median_ns))
        .fold(1.0, f64::max);
    let scale_max = nice_ceiling(max);
    let x = |ns: f64| label_w + ns / scale_max * chart_w;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12">"##
    );
    let _ = writeln!(
        svg,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        svg,
        r##"<text x="10" y="20" font-size="15" font-weight="bold">XDP datapath: ns per packet (BPF_PROG_TEST_RUN, median; whisker: p99)</text>"##
    );
    let _ = writeln!(
        svg,
        r##"<text x="10" y="38" fill="#555">{} UTC, {}; {} runs per scenario</text>"##,
        xml(&machine.date),
        xml(&machine.summary()),
        d.options.runs
    );
    // Grid.
    let ticks = 5;
    for i in 0..=ticks {
        let v = scale_max * i as f64 / ticks as f64;
        let gx = x(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{gx:.1}" y1="{:.1}" x2="{gx:.1}" y2="{:.1}" stroke="#e4e4e4"/><text x="{gx:.1}" y="{:.1}" text-anchor="middle" fill="#555">{v:.0}</text>"##,
            top - 6.0,
            top + n * row_h,
            top + n * row_h + 16.0
        );
    }
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#555">ns per packet</text>"##,
        label_w + chart_w / 2.0,
        top + n * row_h + 34.0
    );
    for (i, s) in d.scenarios.iter().enumerate() {
        let y = top + i as f64 * row_h;
        let colour = match (s.group, s.target_ratio) {
            ("baseline", _) => "#9e9e9e",
            (_, Some(t)) if s.median_ns / base.median_ns > t => "#d9534f",
            ("scheduler", _) => "#5b9bd5",
            _ => "#2e75b6",
        };
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            label_w - 8.0,
            y + row_h * 0.65,
            xml(&s.title)
        );
        let _ = writeln!(
            svg,
            r##"<rect x="{label_w:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}"/>"##,
            y + 4.0,
            (x(s.median_ns) - label_w).max(1.0),
            row_h - 8.0
        );
        let (x1, x2) = (x(s.median_ns), x(s.p99_ns));
        let ym = y + row_h / 2.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{x1:.1}" y1="{ym:.1}" x2="{x2:.1}" y2="{ym:.1}" stroke="#333"/><line x1="{x2:.1}" y1="{:.1}" x2="{x2:.1}" y2="{:.1}" stroke="#333"/>"##,
            ym - 4.0,
            ym + 4.0
        );
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}">{:.0} ns  ({:.2}x)</text>"##,
            label_w + chart_w + 8.0,
            y + row_h * 0.65,
            s.median_ns,
            s.median_ns / base.median_ns
        );
    }
    let bx = x(base.median_ns);
    let _ = writeln!(
        svg,
        r##"<line x1="{bx:.1}" y1="{:.1}" x2="{bx:.1}" y2="{:.1}" stroke="#333" stroke-dasharray="4,3"/>"##,
        top - 6.0,
        top + n * row_h
    );
    let _ = writeln!(svg, "</svg>");
    svg
}

/// 1, 2 or 5 times a power of ten, at least `v`.
fn nice_ceiling(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_scale() {
        assert_eq!(nice_ceiling(73.0), 100.0);
        assert_eq!(nice_ceiling(180.0), 200.0);
        assert_eq!(nice_ceiling(230.0), 250.0);
        assert_eq!(nice_ceiling(1.0), 1.0);
    }
}
