//! `lbctl -c`'s filters (`--vip`, `--real`, `--client`, each
//! `ADDR[:PORT]`, IPv6 in brackets) and the paged listing that carries
//! what they select from lbd to lbctl.
//!
//! ipvsadm has no such filters: an operator greps `ipvsadm -L -n -c`,
//! which on a large table means reading all of it. Here lbd matches each
//! entry while it walks the table, a page of it per request
//! ([`PAGE_ENTRIES`]), and only what matches crosses the socket; lbctl asks
//! for the next page with the cursor lbd handed back, until there is none,
//! and prints the whole listing in ipvsadm's format and order.

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
    path::Path,
};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::{
    control::{self, Request, Response},
    snapshot::Connection,
};

/// Table entries lbd reads for one page (whole batches: a few more): a
/// page's answer stays a few megabytes even when every entry matches.
pub const PAGE_ENTRIES: usize = 16_384;

/// An address, and a port or any port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub addr: IpAddr,
    /// `None`: any port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl Endpoint {
    /// `ADDR[:PORT]`: `10.0.0.1`, `10.0.0.1:80`, `[2001:db8::1]`,
    /// `[2001:db8::1]:80`; a bare IPv6 address (`2001:db8::1`) is the
    /// address alone. Numeric only.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not ADDR[:PORT] (IPv6 in brackets: [2001:db8::1]:80)");
        let port = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| format!("{text:?}: {p:?} is not a port (0 to 65535)"))
        };
        if let Some(rest) = text.strip_prefix('[') {
            let (addr, after) = rest.split_once(']').ok_or_else(bad)?;
            let addr: Ipv6Addr = addr.parse().map_err(|_| bad())?;
            let port = match after {
                "" => None,
                _ => Some(port(after.strip_prefix(':').ok_or_else(bad)?)?),
            };
            return Ok(Self {
                addr: IpAddr::V6(addr),
                port,
            });
        }
        if let Ok(addr) = text.parse::<IpAddr>() {
            return Ok(Self { addr, port: None });
        }
        let (addr, p) = text.rsplit_once(':').ok_or_else(bad)?;
        // An IPv6 address with a port needs its brackets.
        let addr = addr.parse::<std::net::Ipv4Addr>().map_err(|_| bad())?;
        Ok(Self {
            addr: IpAddr::V4(addr),
            port: Some(port(p)?),
        })
    }

    pub fn matches(&self, addr: IpAddr, port: u16) -> bool {
        self.addr == addr && self.port.is_none_or(|p| p == port)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.addr, self.port) {
            (IpAddr::V6(a), Some(p)) => write!(f, "[{a}]:{p}"),
            (IpAddr::V6(a), None) => write!(f, "[{a}]"),
            (a, Some(p)) => write!(f, "{a}:{p}"),
            (a, None) => write!(f, "{a}"),
        }
    }
}

/// What `lbctl -c` lists: the entries every given endpoint matches (all
/// when none is given).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnFilter {
    /// The virtual address and port (`--vip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<Endpoint>,
    /// The real server's address and port, as `-c` shows it (`--real`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real: Option<Endpoint>,
    /// The client's address and port (`--client`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<Endpoint>,
}

impl ConnFilter {
    pub fn is_empty(&self) -> bool {
        self.vip.is_none() && self.real.is_none() && self.client.is_none()
    }

    /// Whether `conn` is listed. A firewall-mark service's persistence
    /// template has the mark where the virtual address goes: no `--vip`
    /// matches it (its service's connections do, by their own VIP).
    pub fn matches(&self, conn: &Connection) -> bool {
        let vip = match (self.vip, conn.fwmark) {
            (None, _) => true,
            (Some(_), Some(_)) => false,
            (Some(e), None) => e.matches(conn.vip, conn.vport),
        };
        vip && self
            .real
            .is_none_or(|e| e.matches(conn.real, conn.real_port))
            && self
                .client
                .is_none_or(|e| e.matches(conn.client, conn.client_port))
    }

    /// Takes `--vip`, `--real` and `--client` (each `--opt VALUE` or
    /// `--opt=VALUE`) out of `args`, leaving the others in order.
    pub fn take_from(args: Vec<String>) -> Result<(Self, Vec<String>), String> {
        let mut filter = Self::default();
        let mut rest = Vec::new();
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                None => (arg.clone(), None),
            };
            let slot = match name.as_str() {
                "--vip" => &mut filter.vip,
                "--real" => &mut filter.real,
                "--client" => &mut filter.client,
                _ => {
                    rest.push(arg);
                    continue;
                }
            };
            let value = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .ok_or_else(|| format!("{name} needs ADDR[:PORT]"))?,
            };
            if slot.is_some() {
                return Err(format!("{name} given twice"));
            }
            *slot = Some(Endpoint::parse(&value).map_err(|e| format!("{name}: {e}"))?);
        }
        Ok((filter, rest))
    }
}

/// Every entry of lbd's connection table `filter` selects, a page per
/// request, sorted as `lbctl -c` prints them ([`sort`]). Each page is a
/// request of its own: lbd answers others between them.
pub fn list(socket: &Path, filter: &ConnFilter) -> Result<Vec<Connection>> {
    let mut out = Vec::new();
    let mut cursor = None;
    // Bounded: a walk of the table ends; this bounds a confused lbd too.
    for _ in 0..MAX_PAGES {
        let request = Request::ConnectionPage {
            filter: filter.clone(),
            cursor: cursor.take(),
        };
        let (connections, next) = match control::ask(socket, &request) {
            Ok(Response::ConnectionPage { connections, next }) => (connections, next),
            // An lbd from before pages (a restart pending): its one answer
            // of the whole table, filtered here.
            Err(e) if page_request_unknown(&e) && out.is_empty() => {
                return list_whole(socket, filter);
            }
            Err(e) => return Err(e),
            Ok(other) => bail!("unexpected answer to a connection page: {other:?}"),
        };
        out.extend(connections);
        match next {
            Some(next) => cursor = Some(next),
            None => {
                sort(&mut out);
                return Ok(out);
            }
        }
    }
    bail!("the connection listing did not end after {MAX_PAGES} pages")
}

/// lbd refused the request as one it does not know.
fn page_request_unknown(e: &anyhow::Error) -> bool {
    let message = e.to_string();
    message.starts_with("bad request") && message.contains("connection_page")
}

/// The whole table in one answer, as lbd before pages gives it.
fn list_whole(socket: &Path, filter: &ConnFilter) -> Result<Vec<Connection>> {
    let Response::Connections { mut connections } = control::ask(socket, &Request::Connections)?
    else {
        bail!("unexpected answer to a connection listing")
    };
    connections.retain(|c| filter.matches(c));
    sort(&mut connections);
    Ok(connections)
}

/// More pages than a walk of the largest table lbd makes takes.
const MAX_PAGES: usize = 1 << 20;

/// The order `lbctl -c` prints in (the table's walk has none): by virtual
/// address and port, then client address and port.
pub fn sort(conns: &mut [Connection]) {
    conns.sort_by_key(|c| (c.vip, c.vport, c.client, c.client_port));
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::Protocol;

    fn ep(text: &str) -> Endpoint {
        Endpoint::parse(text).unwrap()
    }

    #[test]
    fn endpoints_parse_with_and_without_ports() {
        assert_eq!(
            ep("10.0.0.1"),
            Endpoint {
                addr: "10.0.0.1".parse().unwrap(),
                port: None
            }
        );
        assert_eq!(
            ep("10.0.0.1:80"),
            Endpoint {
                addr: "10.0.0.1".parse().unwrap(),
                port: Some(80)
            }
        );
        assert_eq!(ep("10.0.0.1:0").port, Some(0));
        assert_eq!(
            ep("[2001:db8::1]"),
            Endpoint {
                addr: "2001:db8::1".parse().unwrap(),
                port: None
            }
        );
        assert_eq!(
            ep("[2001:db8::1]:443"),
            Endpoint {
                addr: "2001:db8::1".parse().unwrap(),
                port: Some(443)
            }
        );
        assert_eq!(
            ep("2001:db8::1"),
            Endpoint {
                addr: "2001:db8::1".parse().unwrap(),
                port: None
            }
        );
        for text in [
            "[2001:db8::1]:443",
            "[2001:db8::1]",
            "10.0.0.1:80",
            "10.0.0.1",
        ] {
            assert_eq!(ep(text).to_string(), text);
        }
    }

    #[test]
    fn bad_endpoints_are_refused() {
        for text in [
            "",
            "10.0.0.1:",
            "10.0.0.1:65536",
            "10.0.0.1:http",
            "10.0.0.256",
            "[2001:db8::1",
            "[2001:db8::1]80",
            "[10.0.0.1]:80",
            "2001:db8::1:80:x",
            "host:80",
            "[2001:db8::1]:-1",
        ] {
            assert!(Endpoint::parse(text).is_err(), "{text:?} accepted");
        }
        let e = Endpoint::parse("10.0.0.1:99999").unwrap_err();
        assert!(e.contains("not a port"), "{e}");
    }

    fn conn(client: &str, vip: &str, real: &str) -> Connection {
        let split = |s: &str| {
            let e = ep(s);
            (e.addr, e.port.unwrap())
        };
        let ((client, client_port), (vip, vport), (real, real_port)) =
            (split(client), split(vip), split(real));
        Connection {
            protocol: Protocol::Tcp,
            expires_in: 60,
            state: "ESTABLISHED".into(),
            client,
            client_port,
            vip,
            vport,
            real,
            real_port,
            template: false,
            fwmark: None,
        }
    }

    fn filter(args: &[&str]) -> ConnFilter {
        let (filter, rest) =
            ConnFilter::take_from(args.iter().map(|s| s.to_string()).collect()).unwrap();
        assert!(rest.is_empty(), "{rest:?}");
        filter
    }

    #[test]
    fn filters_match_each_end_and_combine() {
        let a = conn("192.0.2.1:1024", "10.0.0.100:80", "10.0.0.21:80");
        let b = conn("192.0.2.2:1025", "10.0.0.100:443", "10.0.0.22:8443");
        let c = conn(
            "[2001:db8::9]:5000",
            "[2001:db8::100]:80",
            "[2001:db8::21]:80",
        );
        let selected = |f: &ConnFilter| {
            [&a, &b, &c]
                .iter()
                .enumerate()
                .filter(|(_, x)| f.matches(x))
                .map(|(i, _)| i)
                .collect::<Vec<_>>()
        };
        assert!(filter(&[]).is_empty());
        assert_eq!(selected(&filter(&[])), [0, 1, 2]);
        assert_eq!(selected(&filter(&["--vip", "10.0.0.100"])), [0, 1]);
        assert_eq!(selected(&filter(&["--vip=10.0.0.100:443"])), [1]);
        assert_eq!(
            selected(&filter(&["--vip", "10.0.0.100:8080"])),
            [] as [usize; 0]
        );
        assert_eq!(selected(&filter(&["--real", "10.0.0.22:8443"])), [1]);
        assert_eq!(
            selected(&filter(&["--real", "10.0.0.22:80"])),
            [] as [usize; 0]
        );
        assert_eq!(selected(&filter(&["--client", "192.0.2.1"])), [0]);
        assert_eq!(selected(&filter(&["--client", "[2001:db8::9]:5000"])), [2]);
        assert_eq!(selected(&filter(&["--client", "2001:db8::9"])), [2]);
        assert_eq!(
            selected(&filter(&[
                "--vip",
                "[2001:db8::100]",
                "--real",
                "[2001:db8::21]:80"
            ])),
            [2]
        );
        assert_eq!(
            selected(&filter(&[
                "--vip",
                "10.0.0.100",
                "--client",
                "192.0.2.2:1025"
            ])),
            [1]
        );
        assert_eq!(
            selected(&filter(&[
                "--vip",
                "10.0.0.100",
                "--client",
                "192.0.2.2:1024"
            ])),
            [] as [usize; 0]
        );
        // A firewall-mark template has no VIP to match.
        let mut template = a.clone();
        template.fwmark = Some(1);
        assert!(!filter(&["--vip", "10.0.0.100"]).matches(&template));
        assert!(filter(&["--client", "192.0.2.1"]).matches(&template));
    }

    #[test]
    fn filter_options_are_taken_out_of_the_arguments() {
        let args = ["-L", "-n", "--vip", "10.0.0.1:80", "-c", "--client=[::1]"]
            .map(String::from)
            .to_vec();
        let (f, rest) = ConnFilter::take_from(args).unwrap();
        assert_eq!(rest, ["-L", "-n", "-c"]);
        assert_eq!(f.vip, Some(ep("10.0.0.1:80")));
        assert_eq!(f.client, Some(ep("[::1]")));
        assert_eq!(f.real, None);
        // ipvsadm's own long options are left alone.
        let (f, rest) =
            ConnFilter::take_from(vec!["--real-server".into(), "10.0.0.2".into()]).unwrap();
        assert!(f.is_empty());
        assert_eq!(rest, ["--real-server", "10.0.0.2"]);
        let take = |a: &[&str]| {
            ConnFilter::take_from(a.iter().map(|s| s.to_string()).collect()).unwrap_err()
        };
        assert_eq!(take(&["--vip"]), "--vip needs ADDR[:PORT]");
        assert_eq!(
            take(&["--real", "1.2.3.4", "--real", "1.2.3.5"]),
            "--real given twice"
        );
        assert!(take(&["--client", "2001:db8::1:80x"]).starts_with("--client: "));
    }

    #[test]
    fn the_filter_crosses_the_socket_as_given() {
        let f = filter(&["--vip", "[2001:db8::1]:80", "--client", "192.0.2.1"]);
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(
            json,
            r#"{"vip":{"addr":"2001:db8::1","port":80},"client":{"addr":"192.0.2.1"}}"#
        );
        assert_eq!(serde_json::from_str::<ConnFilter>(&json).unwrap(), f);
        assert_eq!(
            serde_json::from_str::<ConnFilter>("{}").unwrap(),
            ConnFilter::default()
        );
    }

    /// A stand-in for lbd on a socket: answers each request with what
    /// `answer` makes of it, `requests` times.
    fn fake_lbd(
        name: &str,
        requests: usize,
        answer: impl Fn(Request) -> String + Send + 'static,
    ) -> (std::path::PathBuf, std::thread::JoinHandle<()>) {
        use std::io::{BufRead as _, BufReader, Write as _};
        let dir = std::env::temp_dir().join(format!("lbctl-pages-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("lbd.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || {
            for _ in 0..requests {
                let (stream, _) = listener.accept().unwrap();
                let mut line = String::new();
                BufReader::new(&stream).read_line(&mut line).unwrap();
                let request = serde_json::from_str(&line).unwrap();
                (&stream)
                    .write_all(format!("{}\n", answer(request)).as_bytes())
                    .unwrap();
            }
        });
        (socket, server)
    }

    #[test]
    fn pages_are_asked_for_until_the_last_and_sorted() {
        let a = conn("192.0.2.9:1", "10.0.0.100:80", "10.0.0.21:80");
        let b = conn("192.0.2.1:2", "10.0.0.100:80", "10.0.0.22:80");
        let (first, second) = (a.clone(), b.clone());
        let want = filter(&["--real", "10.0.0.21"]);
        let expected = want.clone();
        let (socket, server) = fake_lbd("pages", 2, move |request| {
            let Request::ConnectionPage { filter, cursor } = request else {
                panic!("{request:?}")
            };
            assert_eq!(filter, expected);
            let (connections, next) = match cursor.as_deref() {
                None => (vec![first.clone()], Some("b7.16384".to_string())),
                Some("b7.16384") => (vec![second.clone()], None),
                other => panic!("cursor {other:?}"),
            };
            serde_json::to_string(&Response::ConnectionPage { connections, next }).unwrap()
        });
        assert_eq!(list(&socket, &want).unwrap(), [b, a]);
        server.join().unwrap();
        let _ = std::fs::remove_dir_all(socket.parent().unwrap());
    }

    #[test]
    fn an_lbd_without_pages_gets_the_whole_table_filtered_here() {
        let a = conn("192.0.2.9:1", "10.0.0.100:80", "10.0.0.21:80");
        let b = conn("192.0.2.1:2", "10.0.0.100:80", "10.0.0.22:80");
        let whole = vec![a.clone(), b];
        let (socket, server) = fake_lbd("whole", 2, move |request| {
            match request {
            Request::ConnectionPage { .. } => r#"{"response":"error","message":"bad request: unknown variant `connection_page`, expected one of `table`, `connections`"}"#.into(),
            Request::Connections => serde_json::to_string(&Response::Connections { connections: whole.clone() }).unwrap(),
            other => panic!("{other:?}"),
        }
        });
        assert_eq!(
            list(&socket, &filter(&["--client", "192.0.2.9"])).unwrap(),
            [a]
        );
        server.join().unwrap();
        let _ = std::fs::remove_dir_all(socket.parent().unwrap());
    }
}
