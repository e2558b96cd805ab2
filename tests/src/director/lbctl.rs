//! Asking lbd with lbctl, and parsing its listings (ipvsadm's formats).

use std::net::SocketAddrV4;
use std::process::Output;

use anyhow::{Context, Result, anyhow, ensure};

use super::Director;

impl Director<'_> {
    /// Runs lbctl with `--socket` and `args` (in the director namespace).
    pub fn lbctl_output(&self, args: &[&str]) -> Result<Output> {
        let mut full = vec![
            self.lbctl.to_string_lossy().into_owned(),
            "--socket".to_owned(),
            self.socket.to_string_lossy().into_owned(),
        ];
        full.extend(args.iter().map(|a| a.to_string()));
        self.lab.exec(&self.host.ns, &full)
    }

    /// Runs lbctl and returns its stdout; fails unless it succeeds.
    pub fn lbctl(&self, args: &[&str]) -> Result<String> {
        let out = self.lbctl_output(args)?;
        ensure!(
            out.status.success(),
            "lbctl {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `lbctl -L -n`, parsed: every real server row of every service.
    pub fn real_rows(&self) -> Result<Vec<RealRow>> {
        let out = self.lbctl(&["-L", "-n"])?;
        parse_real_rows(&out)
    }

    /// `lbctl -L -n -c`, parsed.
    pub fn connection_entries(&self) -> Result<Vec<ConnEntry>> {
        let out = self.lbctl(&["-L", "-n", "-c"])?;
        parse_connection_entries(&out)
    }

    /// `lbctl --counters --json`: the datapath's verdict counters by name.
    pub fn counters(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        let out = self.lbctl(&["--counters", "--json"])?;
        let json: serde_json::Value = serde_json::from_str(&out)
            .with_context(|| format!("lbctl --counters --json is not JSON: {out}"))?;
        let map = json
            .as_object()
            .ok_or_else(|| anyhow!("lbctl --counters --json is not an object: {out}"))?;
        map.iter()
            .map(|(k, v)| {
                let n = v
                    .as_u64()
                    .ok_or_else(|| anyhow!("counter {k} is not a number: {out}"))?;
                Ok((k.clone(), n))
            })
            .collect()
    }

    /// `lbctl --vrrp --json`: the status of each VRRP instance (`name`,
    /// `state` ("master", "backup", "fault", "init"), `priority`,
    /// `effective_priority`, `master_address`, `adverts_sent`, ...).
    pub fn vrrp_status(&self) -> Result<Vec<serde_json::Value>> {
        let out = self.lbctl(&["--vrrp", "--json"])?;
        let json: serde_json::Value = serde_json::from_str(&out)
            .with_context(|| format!("lbctl --vrrp --json is not JSON: {out}"))?;
        json.as_array()
            .cloned()
            .ok_or_else(|| anyhow!("lbctl --vrrp --json is not a list: {out}"))
    }

    /// The state of the first VRRP instance ("master", "backup", ...).
    pub fn vrrp_state(&self) -> Result<String> {
        let instances = self.vrrp_status()?;
        let first = instances
            .first()
            .ok_or_else(|| anyhow!("lbd has no VRRP instance"))?;
        first["state"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no state in {first}"))
    }
}

/// One `  -> RemoteAddress:Port Forward Weight ActiveConn InActConn` row of
/// `lbctl -L -n`, with the service line it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealRow {
    /// The service line, e.g. `TCP  10.1.0.100:80 rr persistent 3`.
    pub service: String,
    pub real: SocketAddrV4,
    pub forward: String,
    pub weight: u32,
    pub active: u64,
    pub inactive: u64,
}

/// Parses the real server rows of `lbctl -L -n` (ipvsadm's listing).
pub fn parse_real_rows(listing: &str) -> Result<Vec<RealRow>> {
    let mut rows = Vec::new();
    let mut service = None;
    for line in listing.lines().skip(3) {
        if let Some(rest) = line.strip_prefix("  -> ") {
            let f: Vec<&str> = rest.split_whitespace().collect();
            ensure!(f.len() == 5, "not a real server row: {line:?}\n{listing}");
            let service: &String = service
                .as_ref()
                .ok_or_else(|| anyhow!("real server row before any service: {line:?}"))?;
            rows.push(RealRow {
                service: service.clone(),
                real: f[0].parse().with_context(|| format!("in {line:?}"))?,
                forward: f[1].to_owned(),
                weight: f[2].parse().with_context(|| format!("in {line:?}"))?,
                active: f[3].parse().with_context(|| format!("in {line:?}"))?,
                inactive: f[4].parse().with_context(|| format!("in {line:?}"))?,
            });
        } else if !line.trim().is_empty() {
            service = Some(line.trim_end().to_owned());
        }
    }
    Ok(rows)
}

/// One entry of `lbctl -L -n -c`
/// (`pro expire state source virtual destination`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnEntry {
    /// "TCP" or "UDP".
    pub protocol: String,
    /// Seconds left, from `mm:ss`.
    pub expires_in: u32,
    pub state: String,
    pub source: SocketAddrV4,
    pub virtual_: SocketAddrV4,
    pub destination: SocketAddrV4,
}

impl ConnEntry {
    /// A persistence template: source port 0.
    pub fn is_template(&self) -> bool {
        self.source.port() == 0
    }
}

/// Parses `lbctl -L -n -c` (ipvsadm's connection listing).
pub fn parse_connection_entries(listing: &str) -> Result<Vec<ConnEntry>> {
    let mut lines = listing.lines();
    ensure!(
        lines.next() == Some("IPVS connection entries"),
        "not a connection listing:\n{listing}"
    );
    let title = lines.next().unwrap_or_default();
    ensure!(title.starts_with("pro expire state"), "no title line:\n{listing}");
    let mut entries = Vec::new();
    for line in lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        ensure!(f.len() == 6, "not a connection entry: {line:?}\n{listing}");
        let (mm, ss) = f[1]
            .split_once(':')
            .ok_or_else(|| anyhow!("bad expiry in {line:?}"))?;
        entries.push(ConnEntry {
            protocol: f[0].to_owned(),
            expires_in: mm.parse::<u32>()? * 60 + ss.parse::<u32>()?,
            state: f[2].to_owned(),
            source: f[3].parse().with_context(|| format!("in {line:?}"))?,
            virtual_: f[4].parse().with_context(|| format!("in {line:?}"))?,
            destination: f[5].parse().with_context(|| format!("in {line:?}"))?,
        });
    }
    Ok(entries)
}
