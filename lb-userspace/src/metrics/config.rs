//! The `[metrics]` table: where lbd serves its Prometheus metrics.
//!
//! ```toml
//! [metrics]
//! listen = "127.0.0.1:9469"     # ADDRESS:PORT of the HTTP endpoint (/metrics)
//! ```
//!
//! Without the table nothing is served.

use std::net::SocketAddr;

use serde::Deserialize;
use toml::Spanned;

use crate::config::check::Checker;

/// Prometheus's default port allocation for this exporter.
pub const DEFAULT_PORT: u16 = 9469;

/// The `[metrics]` table as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub listen: Option<Spanned<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
}

impl MetricsConfig {
    /// Checks the table at `key`, reporting mistakes to `c`.
    pub fn resolve(raw: &Spanned<RawMetrics>, key: &str, c: &mut Checker) -> Option<Self> {
        let Some(listen) = &raw.get_ref().listen else {
            c.error(raw.span(), format!("{key}.listen"), "required: the address to serve /metrics on");
            return None;
        };
        match listen.get_ref().trim().parse::<SocketAddr>() {
            Ok(listen) => Some(Self { listen }),
            Err(_) => {
                let message = format!(
                    "{:?} is not ADDRESS:PORT (e.g. \"127.0.0.1:{DEFAULT_PORT}\", \"[::1]:{DEFAULT_PORT}\")",
                    listen.get_ref()
                );
                c.error(listen.span(), format!("{key}.listen"), message);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn parse(metrics: &str) -> Result<Option<std::net::SocketAddr>, String> {
        let text = format!("[director]\ninterface = \"eth0\"\n\n{metrics}");
        Config::parse(&text, Path::new("lb.toml")).map(|c| c.metrics.map(|m| m.listen)).map_err(|e| e.to_string())
    }

    #[test]
    fn off_unless_configured_and_checked() {
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("[metrics]\nlisten = \"127.0.0.1:9469\"\n"), Ok(Some("127.0.0.1:9469".parse().unwrap())));
        assert_eq!(parse("[metrics]\nlisten = \"[::1]:9469\"\n"), Ok(Some("[::1]:9469".parse().unwrap())));
        let e = parse("[metrics]\nlisten = \"localhost\"\n").unwrap_err();
        assert!(e.contains("lb.toml:5: metrics.listen: \"localhost\" is not ADDRESS:PORT"), "{e}");
        let e = parse("[metrics]\n").unwrap_err();
        assert!(e.contains("lb.toml:4: metrics.listen: required"), "{e}");
        let e = parse("[metrics]\nlisten = \"127.0.0.1:9469\"\nport = 1\n").unwrap_err();
        assert!(e.contains("lb.toml:6"), "{e}");
    }
}
