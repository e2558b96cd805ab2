//! Host and port names as ipvsadm finds them through libc, read from
//! `/etc/hosts` and `/etc/services` (no DNS).

use std::collections::HashMap;
use std::net::Ipv4Addr;

use lb_common::Protocol;

/// ipvsadm's service protocols (SCTP too: the grammar reads it, and refuses
/// it only after ipvsadm's own checks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl From<Protocol> for Proto {
    fn from(protocol: Protocol) -> Self {
        match protocol {
            Protocol::Tcp => Self::Tcp,
            Protocol::Udp => Self::Udp,
        }
    }
}

/// Where libc's `getservbyname` and `getservbyport` look.
pub const SERVICES_FILE: &str = "/etc/services";
/// Where libc's `gethostbyname` looks first (and here only).
pub const HOSTS_FILE: &str = "/etc/hosts";

/// `/etc/services`, read once for both of libc's lookups: a port by name
/// (`getservbyname`, for ipvsadm's arguments) and a name by port
/// (`getservbyport`, for its listings). The default knows no names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Services {
    /// (protocol, name or alias) -> port; the first entry wins.
    ports: HashMap<(Proto, String), u16>,
    /// (protocol, port) -> name (not alias); the first entry wins.
    names: HashMap<(Proto, u16), String>,
}

impl Services {
    /// Parses `/etc/services` syntax: `name port/proto [aliases] [# comment]`
    /// (tcp, udp and sctp; malformed lines and other protocols are skipped).
    pub fn parse(text: &str) -> Self {
        let mut services = Self::default();
        services.add(text);
        services
    }

    /// The system's `/etc/services`; empty (numbers only) if it cannot be
    /// read.
    pub fn system() -> Self {
        Self::parse(&std::fs::read_to_string(SERVICES_FILE).unwrap_or_default())
    }

    /// Adds the entries of `text`, after those already known.
    fn add(&mut self, text: &str) {
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let mut fields = line.split_whitespace();
            let (Some(name), Some(port_proto)) = (fields.next(), fields.next()) else { continue };
            let Some((port, proto)) = port_proto.split_once('/') else { continue };
            let Ok(port) = port.parse::<u16>() else { continue };
            let proto = match proto {
                "tcp" => Proto::Tcp,
                "udp" => Proto::Udp,
                "sctp" => Proto::Sctp,
                _ => continue,
            };
            self.names.entry((proto, port)).or_insert_with(|| name.to_owned());
            for n in std::iter::once(name).chain(fields) {
                self.ports.entry((proto, n.to_owned())).or_insert(port);
            }
        }
    }

    /// The port named `name` (or an alias) for `proto`.
    pub(crate) fn port(&self, name: &str, proto: Proto) -> Option<u16> {
        self.ports.get(&(proto, name.to_owned())).copied()
    }

    /// The name of `port` for `protocol`, if it has one.
    pub fn name(&self, port: u16, protocol: Protocol) -> Option<&str> {
        self.names.get(&(protocol.into(), port)).map(String::as_str)
    }
}

/// Host and port names, looked up as ipvsadm's `gethostbyname` and
/// `getservbyname` would find them in `/etc/hosts` and `/etc/services` (no
/// DNS). The default knows no names: numbers only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    services: Services,
    /// Lower-cased name or alias -> IPv4 address; the first entry wins.
    hosts: HashMap<String, Ipv4Addr>,
}

impl Names {
    /// Adds `/etc/services` entries (see [`Services::parse`]).
    pub fn with_services(mut self, text: &str) -> Self {
        self.services.add(text);
        self
    }

    /// Adds `/etc/hosts` entries: `address name [aliases] [# comment]`
    /// (IPv4 addresses only: ipvsadm's lookup takes no others).
    pub fn with_hosts(mut self, text: &str) -> Self {
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let mut fields = line.split_whitespace();
            let Some(Ok(addr)) = fields.next().map(str::parse::<Ipv4Addr>) else { continue };
            for name in fields {
                self.hosts.entry(name.to_ascii_lowercase()).or_insert(addr);
            }
        }
        self
    }

    /// The system's `/etc/services` and `/etc/hosts` (missing files add
    /// nothing).
    pub fn system() -> Self {
        let read = |path| std::fs::read_to_string(path).unwrap_or_default();
        Self::default().with_services(&read(SERVICES_FILE)).with_hosts(&read(HOSTS_FILE))
    }

    /// The port names, for listings too.
    pub fn services(&self) -> &Services {
        &self.services
    }

    pub(crate) fn port(&self, name: &str, proto: Proto) -> Option<u16> {
        self.services.port(name, proto)
    }

    pub(crate) fn host(&self, name: &str) -> Option<Ipv4Addr> {
        self.hosts.get(&name.to_ascii_lowercase()).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_tables() {
        let names = Names::default()
            .with_services("# c\nwww 80/tcp http web\nalt 80/tcp\nbad\nx 99999/tcp\nsip 5060/sctp\n")
            .with_hosts("127.0.0.1 localhost\n::1 ip6-localhost\n10.0.0.9 Web web2 # x\n10.0.0.8 web\n");
        assert_eq!(names.port("web", Proto::Tcp), Some(80));
        assert_eq!(names.port("alt", Proto::Tcp), Some(80));
        assert_eq!(names.port("www", Proto::Udp), None);
        assert_eq!(names.port("sip", Proto::Sctp), Some(5060));
        assert_eq!(names.host("WEB"), Some(Ipv4Addr::new(10, 0, 0, 9)));
        assert_eq!(names.host("ip6-localhost"), None);
    }

    #[test]
    fn port_names_first_entry_wins_and_comments_are_ignored() {
        let ports = Services::parse("# comment\nwww 80/tcp http\nhttp-alt 80/tcp\nbad line\nx 99999/tcp\n");
        assert_eq!(ports.name(80, Protocol::Tcp), Some("www"));
        assert_eq!(ports.name(80, Protocol::Udp), None);
    }
}
