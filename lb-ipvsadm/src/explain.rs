//! `lbctl explain -t|-u CLIENT:PORT VIP:PORT`: where a flow went or would go,
//! and why. The question and lbd's answer as they cross the control socket
//! ([`crate::control::Request::Explain`]), the command line, and the text
//! lbctl prints. lbd computes the answer (lb-userspace's `explain`).

use std::fmt::Write as _;
use std::net::SocketAddr;

use lb_common::Protocol;
use serde::{Deserialize, Serialize};

/// A flow as the client sends it: its 5-tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainQuery {
    pub protocol: Protocol,
    pub client: SocketAddr,
    pub vip: SocketAddr,
}

/// lbd's answer: the service the flow matches, what the connection table
/// holds for it, and where its next packet goes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    pub query: ExplainQuery,
    /// `None`: no service takes the flow; the datapath passes it to the
    /// host's stack.
    pub service: Option<MatchedService>,
    /// The flow's own entry in the connection table.
    pub connection: Option<Entry>,
    /// A persistent service's template for this client.
    pub template: Option<Entry>,
    /// Where the flow's next packet goes (a new connection's first, if no
    /// live entry holds it).
    pub decision: Decision,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatchedService {
    /// As `lbctl -L` names it: `TCP 10.0.0.1:80`, `FWM 1`, `FWM 2 IPv6`.
    pub name: String,
    /// How the flow found it: its VIP:port, the VIP's every-port service, or
    /// a firewall-mark match.
    pub matched_by: String,
    pub scheduler: String,
    /// Seconds; 0: not persistent.
    pub persistence_timeout: u32,
    /// The service's real servers in IPVS's list order (the scheduler's).
    pub reals: Vec<RealLoad>,
}

/// A real server as the scheduler sees it now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RealLoad {
    /// Port 0: the packet's own destination port.
    pub address: SocketAddr,
    pub forwarding: String,
    pub weight: u32,
    pub active: i64,
    pub inactive: i64,
    pub persistent: i64,
    /// In the service (not retired or failed out).
    pub available: bool,
    pub overloaded: bool,
}

/// An entry of the connection table (a connection or a template).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub state: String,
    pub real: SocketAddr,
    pub forwarding: String,
    /// Seconds until it expires (0 once expired).
    pub expires_in: u64,
    /// The datapath still follows it (not expired, its server not gone).
    pub live: bool,
    /// Why it is not followed, or what else to know about it.
    pub note: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: Verdict,
    /// The real server the flow goes to; `None` when it goes to none.
    pub real: Option<SocketAddr>,
    /// The reasoning, one step a line.
    pub why: Vec<String>,
    /// A TCP flow of a service without a live entry: the pick above is for
    /// a SYN; what a packet of the flow that is not one gets. `None` for
    /// UDP, a live entry, or no service.
    #[serde(default)]
    pub non_syn: Option<NonSyn>,
}

/// What the datapath does with a TCP packet that is not a SYN (SYN without
/// ACK or RST) and finds no entry (lb-ebpf's `schedule::starts_connection`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NonSyn {
    /// Passed to the host's stack, counted `pass_tcp_not_syn`: the service
    /// has neither `sloppy_tcp` nor `stateless_fallback`.
    PassTcpNotSyn,
    /// Scheduled like a SYN: the service has `sloppy_tcp`.
    ScheduledSloppyTcp,
    /// Scheduled like a SYN: the service has `stateless_fallback`.
    ScheduledStatelessFallback,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No service: the host's stack gets the packet.
    NoService,
    /// The flow's live connection entry sends it on.
    Connection,
    /// A new connection of a persistent service, sent by the client's template.
    Template,
    /// A new connection, placed by the scheduler now.
    Scheduled,
    /// A new connection that no real server can take: dropped.
    NoServer,
}

/// `explain`'s arguments after the word itself: `-t|-u CLIENT:PORT
/// VIP:PORT` (IPv6 as `[addr]:port`), or the long options
/// `--tcp-service`/`--udp-service`.
pub fn parse_args(args: &[String]) -> Result<ExplainQuery, String> {
    const USAGE: &str = "usage: lbctl explain -t|-u CLIENT:PORT VIP:PORT";
    let [option, client, vip] = args else {
        return Err(USAGE.to_owned());
    };
    let protocol = match option.as_str() {
        "-t" | "--tcp-service" => Protocol::Tcp,
        "-u" | "--udp-service" => Protocol::Udp,
        _ => return Err(USAGE.to_owned()),
    };
    let parse = |what: &str, text: &str| -> Result<SocketAddr, String> {
        text.parse::<SocketAddr>().map_err(|_| format!("{what} {text:?} is not ADDRESS:PORT ([ADDRESS]:PORT for IPv6)"))
    };
    let (client, vip) = (parse("client", client)?, parse("virtual service", vip)?);
    if client.is_ipv6() != vip.is_ipv6() {
        return Err("the client and the virtual service must be of one address family".to_owned());
    }
    Ok(ExplainQuery { protocol, client, vip })
}

/// The text `lbctl explain` prints.
pub fn render(e: &Explanation) -> String {
    let mut out = String::new();
    let q = &e.query;
    let _ = writeln!(out, "Flow:     {} {} -> {}", q.protocol.name().to_uppercase(), q.client, q.vip);
    match &e.service {
        None => {
            let _ = writeln!(out, "Service:  none");
        }
        Some(s) => {
            let persist = if s.persistence_timeout > 0 {
                format!(", persistent {} s", s.persistence_timeout)
            } else {
                String::new()
            };
            let _ = writeln!(out, "Service:  {} ({}), scheduler {}{persist}", s.name, s.matched_by, s.scheduler);
        }
    }
    for (label, entry) in [("Conn:", &e.connection), ("Template:", &e.template)] {
        if let Some(c) = entry {
            let live = if c.live { "live" } else { "not followed" };
            let note = c.note.as_deref().map_or(String::new(), |n| format!("; {n}"));
            let _ = writeln!(
                out,
                "{label:<9} {} to {} ({}), expires in {} s, {live}{note}",
                c.state, c.real, c.forwarding, c.expires_in
            );
        } else if label == "Conn:" && e.service.is_some() {
            let _ = writeln!(out, "Conn:     none");
        }
    }
    let d = &e.decision;
    let real = d.real.map_or_else(|| "none".to_owned(), |r| r.to_string());
    let _ = writeln!(out, "Decision: {} -> {real}", verdict_name(d.verdict));
    for line in &d.why {
        let _ = writeln!(out, "  {line}");
    }
    if let Some(n) = d.non_syn {
        let _ = writeln!(out, "Not SYN:  {}", non_syn_text(n));
    }
    if let Some(s) = &e.service
        && !s.reals.is_empty()
    {
        let _ = writeln!(
            out,
            "Real servers (IPVS list order):\n  {:<40} {:<8} {:>6} {:>10} {:>10} {:>10}",
            "Address", "Forward", "Weight", "ActiveConn", "InActConn", "Persist"
        );
        for r in &s.reals {
            let mut flags = String::new();
            if !r.available {
                flags.push_str(" (unavailable)");
            }
            if r.overloaded {
                flags.push_str(" (overloaded)");
            }
            let _ = writeln!(
                out,
                "  {:<40} {:<8} {:>6} {:>10} {:>10} {:>10}{flags}",
                r.address.to_string(),
                r.forwarding,
                r.weight,
                r.active,
                r.inactive,
                r.persistent
            );
        }
    }
    out
}

fn non_syn_text(n: NonSyn) -> &'static str {
    match n {
        NonSyn::PassTcpNotSyn => {
            "the pick is for a SYN; a packet that is not one goes to the host's stack (counter pass_tcp_not_syn), \
             as the service has neither sloppy_tcp nor stateless_fallback"
        }
        NonSyn::ScheduledSloppyTcp => {
            "a packet that is not a SYN is scheduled as well (sloppy_tcp; counter conn_mid_flow)"
        }
        NonSyn::ScheduledStatelessFallback => {
            "a packet that is not a SYN is scheduled as well (stateless_fallback; counter conn_mid_flow)"
        }
    }
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::NoService => "no service (the host's stack gets it)",
        Verdict::Connection => "existing connection",
        Verdict::Template => "persistence template",
        Verdict::Scheduled => "scheduled now",
        Verdict::NoServer => "no real server can take it (dropped)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_ipvsadm_style_addresses() {
        let q = parse_args(&args("-t 10.0.0.9:5000 10.0.0.1:80")).unwrap();
        assert_eq!(q.protocol, Protocol::Tcp);
        assert_eq!(q.client, "10.0.0.9:5000".parse().unwrap());
        let q = parse_args(&args("-u [2001:db8::9]:5000 [2001:db8::1]:53")).unwrap();
        assert_eq!(q.protocol, Protocol::Udp);
        assert_eq!(q.vip, "[2001:db8::1]:53".parse().unwrap());
        assert!(parse_args(&args("-t 10.0.0.9 10.0.0.1:80")).is_err());
        assert!(parse_args(&args("-t 10.0.0.9:1 [2001:db8::1]:80")).is_err());
        assert!(parse_args(&args("-x 10.0.0.9:1 10.0.0.1:80")).is_err());
        assert!(parse_args(&args("-t 10.0.0.9:1")).is_err());
    }

    #[test]
    fn renders_every_part() {
        let q = parse_args(&args("-t 10.0.0.9:5000 10.0.0.1:80")).unwrap();
        let e = Explanation {
            query: q,
            service: Some(MatchedService {
                name: "TCP 10.0.0.1:80".into(),
                matched_by: "its VIP:port".into(),
                scheduler: "rr".into(),
                persistence_timeout: 0,
                reals: vec![RealLoad {
                    address: "10.0.0.2:80".parse().unwrap(),
                    forwarding: "Route".into(),
                    weight: 1,
                    active: 2,
                    inactive: 3,
                    persistent: 0,
                    available: true,
                    overloaded: false,
                }],
            }),
            connection: None,
            template: None,
            decision: Decision {
                verdict: Verdict::Scheduled,
                real: Some("10.0.0.2:80".parse().unwrap()),
                why: vec!["rr: position 4".into()],
                non_syn: Some(NonSyn::PassTcpNotSyn),
            },
        };
        let text = render(&e);
        assert!(text.contains("Service:  TCP 10.0.0.1:80 (its VIP:port), scheduler rr"), "{text}");
        assert!(text.contains("Conn:     none"), "{text}");
        assert!(text.contains("Decision: scheduled now -> 10.0.0.2:80"), "{text}");
        assert!(text.contains("  rr: position 4"), "{text}");
        assert!(text.contains("Not SYN:  the pick is for a SYN; a packet that is not one goes to the host's stack (counter pass_tcp_not_syn)"), "{text}");
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains(r#""non_syn":"pass_tcp_not_syn""#), "{json}");
        assert_eq!(serde_json::from_str::<Explanation>(&json).unwrap(), e);
    }
}
