//! BGP in the lab (with [`super::LabSpec::remote_client`]): BIRD 2 on the
//! router, one eBGP session per director, equal routes merged into one
//! multipath kernel route (ECMP); gobgpd on each director, which lbd
//! drives. Hold time 3 s (BIRD's least), keepalives every second.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{Host, Lab, ProcHandle, ROUTER_LAST_OCTET};

/// The router's AS; every director shares [`DIRECTOR_AS`], so their
/// routes compare equal and BIRD merges them.
pub const ROUTER_AS: u32 = 65000;
pub const DIRECTOR_AS: u32 = 65001;

impl Lab {
    /// The router's address on the directors' segment, their BGP peer.
    pub fn router_address(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.spec.subnet_index, 0, ROUTER_LAST_OCTET)
    }

    fn bird_socket(&self) -> std::path::PathBuf {
        self.log_dir.join("bird.ctl")
    }

    /// Starts BIRD on the router with a session to each of `directors`.
    pub fn start_bird_router(&self, directors: &[Host]) -> Result<ProcHandle> {
        let router = self.router().context("the lab has no router")?;
        let me = self.router_address();
        let mut conf = format!(
            "router id {me};\n\
             log stderr all;\n\
             protocol device {{ scan time 10; }}\n\
             protocol kernel {{\n  ipv4 {{ import none; export all; }};\n  merge paths on;\n  learn off;\n}}\n\
             template bgp director {{\n  local {me} as {ROUTER_AS};\n  hold time 3;\n  keepalive time 1;\n  \
             connect delay time 1;\n  connect retry time 1;\n  error wait time 1, 5;\n  \
             ipv4 {{ import all; export none; }};\n}}\n"
        );
        for (i, d) in directors.iter().enumerate() {
            conf.push_str(&format!("protocol bgp d{i} from director {{ neighbor {} as {DIRECTOR_AS}; }}\n", d.ip));
        }
        let path = self.log_dir.join("bird.conf");
        std::fs::write(&path, conf).with_context(|| format!("writing {}", path.display()))?;
        let socket = self.bird_socket();
        let args = ["bird", "-f", "-c", path.to_str().unwrap_or_default(), "-s", socket.to_str().unwrap_or_default()];
        let handle = self.spawn(&router.ns, "bird", &args)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.birdc(&["show", "status"]).is_err() {
            if Instant::now() > deadline {
                bail!("BIRD did not answer on {} within 10 s:\n{}", socket.display(), self.read_log(&handle));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(handle)
    }

    /// `birdc` on the router's BIRD.
    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        let router = self.router().context("the lab has no router")?;
        let socket = self.bird_socket();
        let mut all = vec!["birdc", "-s", socket.to_str().unwrap_or_default()];
        all.extend_from_slice(args);
        self.run(&router.ns, &all)
    }

    /// Starts gobgpd on director `host`, peering with the router; its API
    /// on the namespace's own 127.0.0.1:50051 (lbd's default).
    pub fn start_gobgpd(&self, host: &Host) -> Result<ProcHandle> {
        let conf = format!(
            "[global.config]\n  as = {DIRECTOR_AS}\n  router-id = \"{ip}\"\n  local-address-list = [\"{ip}\"]\n\n\
             [[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{router}\"\n    peer-as = {ROUTER_AS}\n  \
             [neighbors.timers.config]\n    connect-retry = 1\n    hold-time = 3\n    keepalive-interval = 1\n  \
             [neighbors.transport.config]\n    local-address = \"{ip}\"\n  [[neighbors.afi-safis]]\n    \
             [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n",
            ip = host.ip,
            router = self.router_address(),
        );
        let path = self.log_dir.join(format!("gobgpd-{}.toml", host.name));
        std::fs::write(&path, conf).with_context(|| format!("writing {}", path.display()))?;
        let args = [
            "gobgpd",
            "-f",
            path.to_str().unwrap_or_default(),
            "-t",
            "toml",
            "-p",
            "--api-hosts",
            "127.0.0.1:50051",
            "--pprof-disable",
        ];
        let handle = self.spawn(&host.ns, &format!("gobgpd-{}", host.name), &args)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.run(&host.ns, &["gobgp", "global"]).is_err() {
            if Instant::now() > deadline {
                bail!("gobgpd on {} did not answer within 10 s:\n{}", host.name, self.read_log(&handle));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(handle)
    }

    /// The router's next hops toward `prefix` (a /32), from its kernel
    /// routing table: one for a plain route, several for ECMP.
    pub fn router_next_hops(&self, prefix: Ipv4Addr) -> Result<BTreeSet<Ipv4Addr>> {
        let router = self.router().context("the lab has no router")?;
        let out = self.run(&router.ns, &["ip", "-4", "route", "show", &format!("{prefix}/32")])?;
        Ok(parse_next_hops(&out))
    }

    /// Waits until the router's next hops toward `prefix` are `want`;
    /// returns how long that took.
    pub fn wait_for_next_hops(&self, prefix: Ipv4Addr, want: &BTreeSet<Ipv4Addr>, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let now = self.router_next_hops(prefix)?;
            if &now == want {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                let sessions = self.birdc(&["show", "protocols"]).unwrap_or_default();
                bail!("the router's next hops to {prefix} are {now:?}, not {want:?}, after {timeout:?}:\n{sessions}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The `via` addresses of `ip route show` (one line, or `nexthop via` lines).
fn parse_next_hops(out: &str) -> BTreeSet<Ipv4Addr> {
    let words: Vec<&str> = out.split_whitespace().collect();
    words.windows(2).filter(|w| w[0] == "via").filter_map(|w| w[1].parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_hops_of_plain_and_multipath_routes() {
        let ecmp = "10.9.0.1 proto bird metric 32 \n\tnexthop via 10.2.0.11 dev rs0 weight 1 \n\tnexthop via 10.2.0.12 dev rs0 weight 1 \n";
        let want: BTreeSet<Ipv4Addr> = ["10.2.0.11".parse().unwrap(), "10.2.0.12".parse().unwrap()].into();
        assert_eq!(parse_next_hops(ecmp), want);
        let one = "10.9.0.1 via 10.2.0.13 dev rs0 proto bird metric 32 \n";
        assert_eq!(parse_next_hops(one), ["10.2.0.13".parse().unwrap()].into());
        assert!(parse_next_hops("").is_empty());
    }
}
