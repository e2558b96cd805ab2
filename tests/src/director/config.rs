//! lbd's config as the tests write it: the services ([`ServiceSpec`]), the
//! `[director]` table and extra sections, written atomically.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use anyhow::{Context, Result};

use super::Director;
use crate::lab::{HTTP_PORT, Lab};

/// One `[[service]]` of the config.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    /// "tcp" or "udp".
    pub protocol: String,
    pub vip: SocketAddrV4,
    /// "rr", "wrr", ...
    pub scheduler: String,
    /// Real servers with their weights.
    pub reals: Vec<(Ipv4Addr, u32)>,
    /// "dr" or "tun", for every real server.
    pub forwarding: String,
    /// More `key = value` lines for the `[[service]]` table.
    pub extra: Vec<String>,
    /// `key = value` lines of the service's `[service.health_check]` table
    /// (written only when there are some).
    pub health_check: Vec<String>,
    /// More `key = value` lines for one real server's `[[service.real]]`
    /// table, by address.
    pub real_extra: Vec<(Ipv4Addr, String)>,
    /// `key = value` lines of one real server's `[service.real.health_check]`
    /// table, by address.
    pub real_health_check: Vec<(Ipv4Addr, String)>,
}

impl ServiceSpec {
    /// A TCP service on `vip` with `scheduler` and no real servers yet.
    pub fn tcp(vip: SocketAddrV4, scheduler: &str) -> Self {
        ServiceSpec {
            protocol: "tcp".to_owned(),
            vip,
            scheduler: scheduler.to_owned(),
            reals: Vec::new(),
            forwarding: "dr".to_owned(),
            extra: Vec::new(),
            health_check: Vec::new(),
            real_extra: Vec::new(),
            real_health_check: Vec::new(),
        }
    }

    /// A UDP service.
    pub fn udp(vip: SocketAddrV4, scheduler: &str) -> Self {
        ServiceSpec { protocol: "udp".to_owned(), ..Self::tcp(vip, scheduler) }
    }

    /// Forwarding for every real server ("dr", "tun").
    pub fn forwarding(mut self, method: &str) -> Self {
        self.forwarding = method.to_owned();
        self
    }

    /// Another `key = value` line in the `[[service]]` table.
    pub fn with(mut self, line: &str) -> Self {
        self.extra.push(line.to_owned());
        self
    }

    /// Another `key = value` line in the service's `[service.health_check]` table.
    pub fn check(mut self, line: &str) -> Self {
        self.health_check.push(line.to_owned());
        self
    }

    /// Another `key = value` line in real server `address`'s `[[service.real]]` table.
    pub fn real_with(mut self, address: Ipv4Addr, line: &str) -> Self {
        self.real_extra.push((address, line.to_owned()));
        self
    }

    /// Another `key = value` line in real server `address`'s
    /// `[service.real.health_check]` table (its overrides of the service's check).
    pub fn real_check(mut self, address: Ipv4Addr, line: &str) -> Self {
        self.real_health_check.push((address, line.to_owned()));
        self
    }

    /// The lab's HTTP service: TCP VIP:80 over every real server, weight 1.
    pub fn lab_http(lab: &Lab, scheduler: &str) -> Self {
        let mut s = Self::tcp(SocketAddrV4::new(lab.vip(), HTTP_PORT), scheduler);
        s.reals = lab.reals().iter().map(|r| (r.ip, 1)).collect();
        s
    }

    /// A UDP service on VIP:`port` over every real server of the lab, weight 1.
    pub fn lab_udp(lab: &Lab, port: u16, scheduler: &str) -> Self {
        let mut s = Self::udp(SocketAddrV4::new(lab.vip(), port), scheduler);
        s.reals = lab.reals().iter().map(|r| (r.ip, 1)).collect();
        s
    }

    pub fn real(mut self, address: Ipv4Addr, weight: u32) -> Self {
        self.reals.push((address, weight));
        self
    }

    /// Sets the weight of real server `address` (which must be in the list).
    pub fn set_weight(&mut self, address: Ipv4Addr, weight: u32) {
        let real = self
            .reals
            .iter_mut()
            .find(|(a, _)| *a == address)
            .unwrap_or_else(|| panic!("{address} is not a real server of {}", self.vip));
        real.1 = weight;
    }

    /// The `[[service]]` table with its `[[service.real]]` tables.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "[[service]]");
        let _ = writeln!(out, "vip = \"{}\"", self.vip);
        let _ = writeln!(out, "protocol = \"{}\"", self.protocol);
        let _ = writeln!(out, "scheduler = \"{}\"", self.scheduler);
        let _ = writeln!(out, "forwarding = \"{}\"", self.forwarding);
        for line in &self.extra {
            let _ = writeln!(out, "{line}");
        }
        // A sub-table of an array-of-tables element comes after its keys
        // and before the next element (or the next array's first).
        if !self.health_check.is_empty() {
            let _ = writeln!(out, "\n[service.health_check]");
            for line in &self.health_check {
                let _ = writeln!(out, "{line}");
            }
        }
        for (address, weight) in &self.reals {
            let _ = writeln!(out, "\n[[service.real]]");
            let _ = writeln!(out, "address = \"{address}\"");
            let _ = writeln!(out, "weight = {weight}");
            for (_, line) in self.real_extra.iter().filter(|(a, _)| a == address) {
                let _ = writeln!(out, "{line}");
            }
            let mut checks = self.real_health_check.iter().filter(|(a, _)| a == address).peekable();
            if checks.peek().is_some() {
                let _ = writeln!(out, "\n[service.real.health_check]");
                for (_, line) in checks {
                    let _ = writeln!(out, "{line}");
                }
            }
        }
        out
    }
}

impl Director<'_> {
    /// Adds a top-level table (e.g. a `[[vrrp]]` or `[sync]` text) to the
    /// configs written from now on, after the services.
    pub fn add_section(&mut self, toml: &str) -> &mut Self {
        self.extra_sections.push(toml.to_owned());
        self
    }

    /// The `[director]` table: eth0 of the director namespace, this
    /// director's pin dir and socket.
    pub fn director_toml(&self) -> String {
        let mut text = format!(
            "[director]\n\
             interface = \"{iface}\"\n\
             xdp_mode = \"auto\"\n\
             conn_table_size = {size}\n\
             pin_path = \"{pin}\"\n\
             control_socket = \"{socket}\"\n",
            iface = self.lab.director_iface(),
            size = self.conn_table_size,
            pin = self.pin_path.display(),
            socket = self.socket.display(),
        );
        for line in &self.director_extra {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// Adds a `key = value` line to the `[director]` table of configs
    /// written from now on (e.g. `"timeout_tcpfin = 2"`).
    pub fn director_setting(&mut self, line: &str) -> &mut Self {
        self.director_extra.push(line.to_owned());
        self
    }

    /// A whole config: the `[director]` table and `services`.
    pub fn config_text(&self, services: &[ServiceSpec]) -> String {
        let mut text = self.director_toml();
        for s in services {
            text.push('\n');
            text.push_str(&s.to_toml());
        }
        for section in &self.extra_sections {
            text.push('\n');
            text.push_str(section);
            if !section.ends_with('\n') {
                text.push('\n');
            }
        }
        text
    }

    /// Writes the config for `services` to [`Director::config_path`].
    pub fn write_config(&self, services: &[ServiceSpec]) -> Result<()> {
        self.write_config_text(&self.config_text(services))
    }

    /// Writes `text` as is to [`Director::config_path`].
    pub fn write_config_text(&self, text: &str) -> Result<()> {
        write_file(&self.config_path, text)
    }
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    // Write and rename, so lbd never reads a half-written file on SIGHUP.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_become_toml() {
        let s = ServiceSpec::tcp("10.1.0.100:80".parse().unwrap(), "wrr")
            .real("10.1.0.21".parse().unwrap(), 3)
            .real("10.1.0.22".parse().unwrap(), 1);
        let text = s.to_toml();
        assert!(
            text.starts_with("[[service]]\nvip = \"10.1.0.100:80\"\n"),
            "{text}"
        );
        assert!(
            text.contains("address = \"10.1.0.22\"\nweight = 1\n"),
            "{text}"
        );
    }

    #[test]
    fn health_check_tables_follow_their_keys() {
        let (rs1, rs2) = ("10.1.0.21".parse().unwrap(), "10.1.0.22".parse().unwrap());
        let s = ServiceSpec::tcp("10.1.0.100:80".parse().unwrap(), "rr")
            .with("sorry_server = \"10.1.0.23\"")
            .check("kind = \"tcp\"")
            .check("interval = \"200ms\"")
            .real(rs1, 1)
            .real(rs2, 1)
            .real_with(rs2, "upper_threshold = 5")
            .real_check(rs2, "kind = \"exec\"")
            .real_check(rs2, "command = \"true\"");
        let text = s.to_toml();
        assert!(
            text.contains(
                "sorry_server = \"10.1.0.23\"\n\n[service.health_check]\nkind = \"tcp\"\ninterval = \"200ms\"\n\n[[service.real]]\naddress = \"10.1.0.21\"\nweight = 1\n\n[[service.real]]"
            ),
            "{text}"
        );
        assert!(
            text.ends_with(
                "address = \"10.1.0.22\"\nweight = 1\nupper_threshold = 5\n\n[service.real.health_check]\nkind = \"exec\"\ncommand = \"true\"\n"
            ),
            "{text}"
        );
    }
}
