//! GoBGP as lbd's speaker: gobgpd holds the sessions (the operator's
//! config: peers, timers, BFD, policies); lbd adds and removes its VIPs'
//! paths in gobgpd's global RIB through the `gobgp` CLI, a client of
//! gobgpd's gRPC API. Nothing is rewritten or reloaded: a path change is
//! one API call, and gobgpd sends the UPDATE at once.
//!
//! Why GoBGP is the default: one process with an API made for routes that
//! come and go at run time, and paths added through it live only as long
//! as gobgpd does (a restarted gobgpd starts empty, lbd's check puts them
//! back). BIRD and FRR are driven through config files and reloads;
//! ExaBGP's API belongs to a process ExaBGP itself starts.

use std::{collections::BTreeSet, process::Stdio, time::Duration};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{
    config::{BgpConfig, RouteAttributes},
    plan::Prefix,
};

/// How long one CLI call may take (gobgpd down: the CLI waits for its
/// gRPC deadline).
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

pub struct GoBgp {
    command: String,
    /// `-u HOST -p PORT`.
    target: Vec<String>,
    attributes: RouteAttributes,
}

impl GoBgp {
    pub fn new(config: &BgpConfig) -> Self {
        GoBgp {
            command: config.command.clone(),
            target: vec![
                "-u".into(),
                config.api.ip().to_string(),
                "-p".into(),
                config.api.port().to_string(),
            ],
            attributes: config.attributes.clone(),
        }
    }

    pub async fn announce(&self, prefix: Prefix) -> Result<()> {
        self.call(&announce_args(prefix, &self.attributes))
            .await
            .map(|_| ())
    }

    pub async fn withdraw(&self, prefix: Prefix) -> Result<()> {
        self.call(&withdraw_args(prefix)).await.map(|_| ())
    }

    /// The IPv4 paths gobgpd originates itself (ours; paths learned from
    /// peers are not).
    pub async fn announced(&self) -> Result<BTreeSet<Prefix>> {
        let out = self
            .call(&["global", "rib", "-a", "ipv4", "-j"].map(String::from))
            .await?;
        local_routes(&out)
    }

    async fn call(&self, args: &[String]) -> Result<String> {
        let mut cmd = tokio::process::Command::new(&self.command);
        cmd.args(&self.target)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let shown = format!("{} {}", self.command, args.join(" "));
        let out = tokio::time::timeout(CALL_TIMEOUT, cmd.output())
            .await
            .with_context(|| format!("{shown}: no answer within {CALL_TIMEOUT:?}"))?
            .with_context(|| format!("running {shown}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let said = String::from_utf8_lossy(&out.stdout);
            bail!(
                "{shown}: {} {}",
                out.status,
                format!("{} {}", err.trim(), said.trim()).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// `global rib add -a ipv4 PREFIX [nexthop A] [med N] [community C,..] [aspath A,..]`.
fn announce_args(prefix: Prefix, a: &RouteAttributes) -> Vec<String> {
    let mut args: Vec<String> = ["global", "rib", "add", "-a", "ipv4"]
        .map(String::from)
        .to_vec();
    args.push(prefix.to_string());
    if let Some(hop) = a.next_hop {
        args.extend(["nexthop".into(), hop.to_string()]);
    }
    if let Some(med) = a.med {
        args.extend(["med".into(), med.to_string()]);
    }
    if !a.communities.is_empty() {
        let list: Vec<String> = a
            .communities
            .iter()
            .map(|(asn, v)| format!("{asn}:{v}"))
            .collect();
        args.extend(["community".into(), list.join(",")]);
    }
    if !a.as_path_prepend.is_empty() {
        let list: Vec<String> = a.as_path_prepend.iter().map(u32::to_string).collect();
        args.extend(["aspath".into(), list.join(",")]);
    }
    args
}

fn withdraw_args(prefix: Prefix) -> Vec<String> {
    let mut args: Vec<String> = ["global", "rib", "del", "-a", "ipv4"]
        .map(String::from)
        .to_vec();
    args.push(prefix.to_string());
    args
}

/// The prefixes of `gobgp global rib -j` with a path gobgpd originated
/// (no neighbor): `{"PREFIX": [{"nlri": .., "neighbor-ip": "<nil>", ..}, ..], ..}`.
fn local_routes(json: &str) -> Result<BTreeSet<Prefix>> {
    let trimmed = json.trim();
    if trimmed.is_empty() || trimmed == "null" {
        return Ok(BTreeSet::new());
    }
    let rib: Value = serde_json::from_str(trimmed).context("gobgp global rib -j: not JSON")?;
    let Some(prefixes) = rib.as_object() else {
        bail!("gobgp global rib -j: not a map of prefixes")
    };
    let mut ours = BTreeSet::new();
    for (prefix, paths) in prefixes {
        let Ok(route) = prefix.parse::<Prefix>() else {
            continue;
        };
        let local = paths
            .as_array()
            .is_some_and(|ps| ps.iter().any(is_local_path));
        if local {
            ours.insert(route);
        }
    }
    Ok(ours)
}

/// A path gobgpd originated: no neighbor it came from.
fn is_local_path(path: &Value) -> bool {
    match path.get("neighbor-ip").and_then(Value::as_str) {
        None | Some("") | Some("<nil>") => true,
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn announce_carries_the_attributes() {
        let a = RouteAttributes {
            med: Some(10),
            communities: vec![(65000, 100), (65000, 200)],
            as_path_prepend: vec![65001, 65001],
            next_hop: Some(Ipv4Addr::new(10, 2, 0, 11)),
        };
        assert_eq!(
            announce_args(Prefix::host(Ipv4Addr::new(10, 9, 0, 1)), &a).join(" "),
            "global rib add -a ipv4 10.9.0.1/32 nexthop 10.2.0.11 med 10 community 65000:100,65000:200 aspath 65001,65001"
        );
        assert_eq!(
            announce_args(
                Prefix::host(Ipv4Addr::new(10, 9, 0, 1)),
                &RouteAttributes::default()
            )
            .join(" "),
            "global rib add -a ipv4 10.9.0.1/32"
        );
        assert_eq!(
            withdraw_args(Prefix::host(Ipv4Addr::new(10, 9, 0, 1))).join(" "),
            "global rib del -a ipv4 10.9.0.1/32"
        );
        // A firewall mark's network.
        assert_eq!(
            announce_args("10.9.1.0/24".parse().unwrap(), &RouteAttributes::default()).join(" "),
            "global rib add -a ipv4 10.9.1.0/24"
        );
    }

    #[test]
    fn only_the_routes_gobgpd_originated_are_ours() {
        let json = r#"{
          "10.9.0.1/32": [{"nlri":{"prefix":"10.9.0.1/32"},"age":1,"best":true,"attrs":[],"stale":false,
                           "source-id":"<nil>","neighbor-ip":"<nil>"}],
          "10.9.0.2/32": [{"nlri":{"prefix":"10.9.0.2/32"},"age":1,"best":true,"attrs":[],"stale":false,
                           "source-id":"10.2.0.1","neighbor-ip":"10.2.0.1"}],
          "10.8.0.0/16": [{"nlri":{"prefix":"10.8.0.0/16"},"neighbor-ip":"<nil>"}]
        }"#;
        assert_eq!(
            local_routes(json).unwrap(),
            BTreeSet::from([
                Prefix::host(Ipv4Addr::new(10, 9, 0, 1)),
                "10.8.0.0/16".parse().unwrap()
            ])
        );
        assert!(local_routes("null\n").unwrap().is_empty());
        assert!(local_routes("{}").unwrap().is_empty());
        assert!(local_routes("garbage").is_err());
    }
}
