//! The benchmark's outputs: `bench/results.json`, `bench/results.md`,
//! `bench/datapath.svg`, and the README's table between its markers.
//!
//! `machine` says where and when, `json`, `markdown` and `svg` write the
//! three files; this file has what they share and writes them out.

mod json;
mod machine;
mod markdown;
mod part;
mod svg;

use std::path::Path;

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

pub use machine::{Machine, format_utc, loadavg, utc_now};
pub use part::{Part, measured_on};
pub use svg::datapath_svg;

use super::datapath::{DatapathResults, ScenarioResult};
use super::e2e::E2eResults;
use super::ecmp::{self, EcmpResults};
use super::sweep::{self, SweepResults};

/// Everything one benchmark run measured.
pub struct Results {
    pub machine: Machine,
    pub datapath: Option<DatapathResults>,
    pub e2e: Option<E2eResults>,
    /// The connection table's walks ([`sweep`]).
    pub sweep: Option<SweepResults>,
    /// Active-active directors ([`ecmp`]).
    pub ecmp: Option<EcmpResults>,
}

/// A target of the issue and whether it was met.
#[derive(Clone, Debug)]
pub struct Target {
    pub what: String,
    pub wanted: String,
    pub measured: String,
    pub met: bool,
}

fn ratio(s: &ScenarioResult, base: &ScenarioResult) -> (f64, f64) {
    (s.median_ns / base.median_ns, s.p99_ns / base.p99_ns)
}

impl Results {
    pub fn targets(&self) -> Vec<Target> {
        let mut out = Vec::new();
        if let Some(d) = &self.datapath {
            let base = d.trivial();
            for s in &d.scenarios {
                if let Some(limit) = s.target_ratio {
                    let (r, _) = ratio(s, base);
                    out.push(Target {
                        what: format!("datapath: {}", s.title),
                        wanted: format!("≤ {limit}x the trivial XDP_TX program (median)"),
                        measured: format!(
                            "{r:.2}x ({:.0} ns vs {:.0} ns)",
                            s.median_ns, base.median_ns
                        ),
                        met: r <= limit,
                    });
                }
            }
        }
        if let Some(e) = &self.e2e
            && let (Some(lbd), Some(ha)) = (e.mode("lbd_dr"), e.mode("haproxy_tcp"))
        {
            for (kind, a, b) in [
                ("requests/s (keep-alive)", &lbd.keepalive, &ha.keepalive),
                ("new connections/s", &lbd.close, &ha.close),
            ] {
                out.push(Target {
                    what: format!("end to end: {kind}"),
                    wanted: "at least HAProxy's".into(),
                    measured: format!(
                        "{:.0} vs HAProxy {:.0} ({:.2}x)",
                        a.requests_per_s,
                        b.requests_per_s,
                        a.requests_per_s / b.requests_per_s
                    ),
                    met: a.requests_per_s >= b.requests_per_s,
                });
                if let (Some(x), Some(y)) = (a.director_us_per_request, b.director_us_per_request) {
                    out.push(Target {
                        what: format!("end to end: director CPU per request, {kind}"),
                        wanted: "a fraction of HAProxy's".into(),
                        measured: format!("{x:.2} µs vs HAProxy {y:.2} µs ({:.1}%)", x / y * 100.0),
                        met: x < y,
                    });
                }
            }
        }
        out
    }
}

/// The markers the README's generated section sits between.
pub const README_START: &str = "<!-- bench:start (written by cargo xtask bench) -->";
pub const README_END: &str = "<!-- bench:end -->";

/// Replaces what stands between the markers in `text`; `None` if either
/// marker is missing.
pub fn replace_between_markers(text: &str, body: &str) -> Option<String> {
    let start = text.find(README_START)? + README_START.len();
    let end = start + text[start..].find(README_END)?;
    Some(format!("{}\n{}{}", &text[..start], body, &text[end..]))
}

/// Writes results.json, results.md and datapath.svg into `dir`, and the
/// summary into `readme` between its markers (if it has them). The walk
/// figures have their own markers: a run that measured only them leaves
/// everything else as it was, and one that did not keeps the previous ones.
pub fn write_all(results: &Results, dir: &Path, readme: Option<&Path>) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    let json_path = dir.join("results.json");
    let md_path = dir.join("results.md");
    let old_json: Option<Value> = std::fs::read_to_string(&json_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let old_md = std::fs::read_to_string(&md_path).unwrap_or_default();
    let rest_measured = results.datapath.is_some() || results.e2e.is_some();
    let (mut json, mut md) = match rest_measured {
        true => (results.to_json(), results.to_markdown()),
        false => (
            old_json.clone().unwrap_or_else(|| json!({})),
            old_md.clone(),
        ),
    };
    let old = (old_json.as_ref(), old_md.as_str());
    let machine = &results.machine;
    sweep::PART.merge(results.sweep.as_ref().map(|s| sweep::figures(s, machine)), machine, old, &mut json, &mut md);
    ecmp::PART.merge(results.ecmp.as_ref().map(|e| ecmp::figures(e, machine)), machine, old, &mut json, &mut md);
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)? + "\n")?;
    written.push(json_path.display().to_string());
    std::fs::write(&md_path, md)?;
    written.push(md_path.display().to_string());
    if let Some(d) = &results.datapath {
        let svg_path = dir.join("datapath.svg");
        std::fs::write(&svg_path, datapath_svg(d, &results.machine))?;
        written.push(svg_path.display().to_string());
    }
    if let Some(readme) = readme
        && rest_measured
        && let Ok(text) = std::fs::read_to_string(readme)
        && let Some(new) = replace_between_markers(&text, &results.summary_markdown())
    {
        std::fs::write(readme, new)?;
        written.push(readme.display().to_string());
    }
    if let (Some(s), Some(readme)) = (&results.sweep, readme)
        && sweep::PART.write_readme(&sweep::readme_summary(s, machine), readme)?
        && !written.contains(&readme.display().to_string())
    {
        written.push(readme.display().to_string());
    }
    if let (Some(e), Some(readme)) = (&results.ecmp, readme)
        && ecmp::PART.write_readme(&ecmp::readme_summary(e, machine), readme)?
        && !written.contains(&readme.display().to_string())
    {
        written.push(readme.display().to_string());
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_section_is_replaced_between_markers() {
        let text = format!("a\n{README_START}\nold\n{README_END}\nb\n");
        let new = replace_between_markers(&text, "new\n").unwrap();
        assert_eq!(new, format!("a\n{README_START}\nnew\n{README_END}\nb\n"));
        assert!(replace_between_markers("no markers", "x").is_none());
    }
}
