//! Where `lbd decap` accepts tunnels from (`--from`), and where it finds
//! this host's VIPs.
//!
//! `--from` is required: addresses of either family (`--from
//! 10.0.0.1,2001:db8::1`), files listing them (`--from /etc/lb/directors`:
//! a path with a `/`; addresses separated by spaces, commas or lines, `#`
//! starts a comment; read again on SIGHUP), or `any`, which must be said
//! explicitly.

use std::{
    collections::BTreeSet,
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{Result, bail};
use lb_common::decap;

/// Where a real server's VIPs are, as the LVS-TUN recipe puts them (`lo`
/// without the `ipip` module, `tunl0` with it), IPv4 and IPv6 alike;
/// 127.0.0.0/8, `::1` and link-local addresses are not VIPs.
pub const VIP_INTERFACES: [&str; 2] = ["lo", "tunl0"];

/// The directors tunnels may come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Directors {
    /// Anyone (`--from any`).
    Any,
    /// Of either family.
    Listed(BTreeSet<IpAddr>),
}

impl fmt::Display for Directors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any source"),
            Self::Listed(list) => {
                let list: Vec<String> = list.iter().map(|a| a.to_string()).collect();
                write!(f, "{}", list.join(", "))
            }
        }
    }
}

/// `--from` as given: addresses and files, or `any`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FromArg {
    any: bool,
    addresses: BTreeSet<IpAddr>,
    files: Vec<PathBuf>,
}

/// What `lbd decap` says without `--from`.
pub const FROM_REQUIRED: &str = "lbd decap needs --from: the directors whose tunnels to open \
     (--from 10.0.0.1,10.0.0.2, or --from FILE listing them); --from any opens tunnels from anyone";

impl FromArg {
    /// Checks each `--from` value (without reading files).
    pub fn parse(values: &[String]) -> Result<Self> {
        if values.is_empty() {
            bail!("{FROM_REQUIRED}");
        }
        let mut arg = Self::default();
        for value in values {
            let value = value.trim();
            if value.contains('/') && !looks_like_a_network(value) {
                arg.files.push(PathBuf::from(value));
                continue;
            }
            for item in value.split(',').map(str::trim) {
                if item == "any" {
                    arg.any = true;
                } else {
                    let address = parse_director(item).map_err(|e| {
                        let not_an_address = item.parse::<IpAddr>().is_err() && !looks_like_a_network(item);
                        let hint = if not_an_address { " (nor any, nor a file: a path with a /)" } else { "" };
                        anyhow::anyhow!("--from: {e}{hint}")
                    })?;
                    arg.addresses.insert(address);
                }
            }
        }
        if arg.any && (!arg.addresses.is_empty() || !arg.files.is_empty()) {
            bail!("--from any opens tunnels from anyone: it takes no addresses or files besides");
        }
        Ok(arg)
    }

    /// The directors: the addresses given, and those the files list now.
    pub fn read(&self) -> Result<Directors> {
        if self.any {
            return Ok(Directors::Any);
        }
        let mut all = self.addresses.clone();
        for file in &self.files {
            all.extend(read_file(file)?);
        }
        // Each family has its own map.
        for (family, count) in
            [("IPv4", all.iter().filter(|a| a.is_ipv4()).count()), ("IPv6", all.iter().filter(|a| a.is_ipv6()).count())]
        {
            if count > decap::MAX_SOURCES as usize {
                bail!("--from: {count} {family} directors, at most {}", decap::MAX_SOURCES);
            }
        }
        Ok(Directors::Listed(all))
    }
}

/// `10.0.0.0/24`, `2001:db8::/64` and the like: a network where an
/// address was expected.
fn looks_like_a_network(value: &str) -> bool {
    value.split_once('/').is_some_and(|(a, len)| a.parse::<IpAddr>().is_ok() && len.parse::<u8>().is_ok())
}

fn parse_director(item: &str) -> Result<IpAddr, String> {
    if looks_like_a_network(item) {
        return Err(format!("{item}: give the directors' addresses, not a network"));
    }
    match item.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) if a.is_broadcast() => Err(format!("{a} is no director's address")),
        Ok(a) if a.is_unspecified() || a.is_multicast() => Err(format!("{a} is no director's address")),
        // An IPv4 director tunnels in IPv4: its address as such.
        Ok(IpAddr::V6(a)) if a.to_ipv4_mapped().is_some() => {
            Err(format!("{a} is an IPv4-mapped address: give {}", a.to_canonical()))
        }
        Ok(a) => Ok(a),
        Err(_) => Err(format!("\"{item}\" is not an IPv4 or IPv6 address")),
    }
}

/// A file of directors' addresses; errors name the file and line.
fn read_file(path: &Path) -> Result<BTreeSet<IpAddr>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => bail!("--from {}: {e}", path.display()),
    };
    let mut all = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default();
        for item in line.split(|c: char| c == ',' || c.is_whitespace()).filter(|i| !i.is_empty()) {
            match parse_director(item) {
                Ok(a) => {
                    all.insert(a);
                }
                Err(e) => bail!("{}:{}: {e}", path.display(), n + 1),
            }
        }
    }
    if all.is_empty() {
        bail!("{}: lists no director", path.display());
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> Result<FromArg> {
        FromArg::parse(&values.iter().map(|v| v.to_string()).collect::<Vec<_>>())
    }

    fn listed(list: &[&str]) -> Directors {
        Directors::Listed(list.iter().map(|a| a.parse().unwrap()).collect())
    }

    #[test]
    fn addresses_any_and_mistakes() {
        assert_eq!(
            parse(&["10.0.0.1,10.0.0.2", "10.0.0.3"]).unwrap().read().unwrap(),
            listed(&["10.0.0.1", "10.0.0.2", "10.0.0.3"])
        );
        assert_eq!(parse(&["any"]).unwrap().read().unwrap(), Directors::Any);
        let error = |values: &[&str]| parse(values).unwrap_err().to_string();
        assert_eq!(error(&[]), FROM_REQUIRED);
        assert_eq!(
            error(&["10.0.0.1,any"]),
            "--from any opens tunnels from anyone: it takes no addresses or files besides"
        );
        assert_eq!(error(&["10.0.0.0/24"]), "--from: 10.0.0.0/24: give the directors' addresses, not a network");
        assert_eq!(
            error(&["10.0.0.x"]),
            "--from: \"10.0.0.x\" is not an IPv4 or IPv6 address (nor any, nor a file: a path with a /)"
        );
        assert_eq!(error(&["0.0.0.0"]), "--from: 0.0.0.0 is no director's address");
        assert_eq!(error(&["224.0.0.18"]), "--from: 224.0.0.18 is no director's address");
    }

    #[test]
    fn ipv6_directors_beside_ipv4_ones() {
        assert_eq!(
            parse(&["2001:db8::1,10.0.0.1", "2001:DB8:0:0::2", " fd00::1 "]).unwrap().read().unwrap(),
            listed(&["10.0.0.1", "2001:db8::1", "2001:db8::2", "fd00::1"])
        );
        let error = |values: &[&str]| parse(values).unwrap_err().to_string();
        assert_eq!(error(&["2001:db8::/64"]), "--from: 2001:db8::/64: give the directors' addresses, not a network");
        assert_eq!(error(&["::"]), "--from: :: is no director's address");
        assert_eq!(error(&["ff02::12"]), "--from: ff02::12 is no director's address");
        assert_eq!(error(&["::ffff:10.0.0.1"]), "--from: ::ffff:10.0.0.1 is an IPv4-mapped address: give 10.0.0.1");
        assert_eq!(
            error(&["2001:db8::g"]),
            "--from: \"2001:db8::g\" is not an IPv4 or IPv6 address (nor any, nor a file: a path with a /)"
        );
        // Brackets and zones are no director's address either.
        assert!(error(&["[2001:db8::1]"]).starts_with("--from: \"[2001:db8::1]\" is not"));
        assert_eq!(
            error(&["2001:db8::1,any"]),
            "--from any opens tunnels from anyone: it takes no addresses or files besides"
        );
        assert_eq!(listed(&["10.0.0.1", "2001:db8::1"]).to_string(), "10.0.0.1, 2001:db8::1");
    }

    #[test]
    fn each_family_holds_max_sources() {
        let v4: Vec<String> = (0..decap::MAX_SOURCES).map(|i| format!("10.0.{}.{}", i / 250, i % 250 + 1)).collect();
        let v6: Vec<String> = (0..decap::MAX_SOURCES).map(|i| format!("2001:db8::{:x}", i + 1)).collect();
        let both = parse(&[&v4.join(","), &v6.join(",")]).unwrap().read().unwrap();
        assert!(matches!(both, Directors::Listed(list) if list.len() == 2 * decap::MAX_SOURCES as usize));
        let one_more = format!("{},2001:db8::ffff", v6.join(","));
        assert_eq!(
            parse(&[&one_more]).unwrap().read().unwrap_err().to_string(),
            format!("--from: {} IPv6 directors, at most {}", decap::MAX_SOURCES + 1, decap::MAX_SOURCES)
        );
    }

    #[test]
    fn files_are_read_each_time_and_their_errors_name_the_line() {
        let dir = std::env::temp_dir().join(format!("lb-decap-from-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("directors");
        std::fs::write(&file, "# the directors\n10.0.0.1 10.0.0.2  # both\n\n10.0.0.3,10.0.0.4\n2001:db8::1 # v6\n")
            .unwrap();
        let arg = parse(&[file.to_str().unwrap(), "10.0.0.9"]).unwrap();
        assert_eq!(
            arg.read().unwrap(),
            listed(&["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.9", "2001:db8::1"])
        );
        std::fs::write(&file, "10.0.0.1\n10.0.0.2\n10.0.0.x\n").unwrap();
        assert_eq!(
            arg.read().unwrap_err().to_string(),
            format!("{}:3: \"10.0.0.x\" is not an IPv4 or IPv6 address", file.display())
        );
        std::fs::write(&file, "# nobody yet\n").unwrap();
        assert_eq!(arg.read().unwrap_err().to_string(), format!("{}: lists no director", file.display()));
        std::fs::remove_file(&file).unwrap();
        assert!(arg.read().unwrap_err().to_string().starts_with(&format!("--from {}: ", file.display())));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
