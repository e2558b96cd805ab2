//! What a health check is, validated: its kind, its settings and
//! keepalived's defaults, as the checks, the tracker and the monitor use
//! them. [`super::table`] reads them from the `health_check` tables.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use rustls::pki_types::{CertificateDer, pem::PemObject};

/// What a check does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckKind {
    Tcp,
    Http,
    Https,
    Ping,
    Exec,
    /// No check: the server is always up.
    None,
}

impl CheckKind {
    pub const ALL: [CheckKind; 6] = [Self::Tcp, Self::Http, Self::Https, Self::Ping, Self::Exec, Self::None];

    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Http => "http",
            Self::Https => "https",
            Self::Ping => "ping",
            Self::Exec => "exec",
            Self::None => "none",
        }
    }

    /// keepalived's default `retry` is 1 extra attempt (2 failures in a row)
    /// for its network checkers and 0 for MISC_CHECK.
    fn default_retry(self) -> u32 {
        match self {
            Self::Exec => 1,
            _ => 2,
        }
    }

    /// keepalived's defaults: 3 s for HTTP_GET and SSL_GET, 1 s otherwise.
    fn default_delay_before_retry(self) -> Duration {
        match self {
            Self::Http | Self::Https => Duration::from_secs(3),
            _ => Duration::from_secs(1),
        }
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CheckKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<_> = Self::ALL.iter().map(|k| k.name()).collect();
            format!("unknown health check kind \"{s}\" (one of {})", names.join(", "))
        })
    }
}

/// A validated health check for one real server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub probe: Probe,
    /// Time between checks (keepalived's `delay_loop`).
    pub interval: Duration,
    /// Bounds one whole check: connect, TLS, request and response; an exec
    /// check's run; a ping's wait for the reply.
    pub connect_timeout: Duration,
    /// Failed checks in a row that take an up server down (keepalived's
    /// `retry` + 1).
    pub retry: u32,
    /// Time before the next check while a server is on its way down or up.
    pub delay_before_retry: Duration,
    /// Passed checks in a row that bring a down server back up.
    pub rise: u32,
    /// A new server starts down until a check passes.
    pub alpha: bool,
    /// A down server stays listed with weight 0 instead of being removed.
    pub inhibit_on_failure: bool,
    /// Local address the check's socket is bound to.
    pub source_address: Option<IpAddr>,
    /// Port to check instead of the real server's.
    pub port: Option<u16>,
    /// Run with `sh -c` when the server comes up / goes down.
    pub notify_up: Option<String>,
    pub notify_down: Option<String>,
}

/// What one check does, with the settings only that kind has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    None,
    Tcp,
    /// `http`, or `https` when `tls` is set.
    Http(HttpProbe),
    Ping,
    Exec(ExecProbe),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpProbe {
    pub path: String,
    pub status: StatusCodes,
    pub body_contains: Option<String>,
    /// MD5 of the body, as keepalived's `digest` (genhash).
    pub digest: Option<[u8; 16]>,
    /// Host header, and for https the TLS server name.
    pub host: Option<String>,
    pub tls: Option<TlsOptions>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsOptions {
    pub verify_certificate: bool,
    /// PEM CA certificates to verify against instead of the system's.
    pub ca_file: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecProbe {
    /// Run with `sh -c`.
    pub command: String,
    /// keepalived's `misc_dynamic`: exit codes 2-255 mean up with weight
    /// code - 2. Without it every non-zero exit means down.
    pub dynamic_weight: bool,
}

/// Expected HTTP status codes, as inclusive ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusCodes(pub Vec<(u16, u16)>);

impl StatusCodes {
    pub fn contains(&self, code: u16) -> bool {
        self.0.iter().any(|&(lo, hi)| (lo..=hi).contains(&code))
    }
}

impl Default for StatusCodes {
    /// keepalived 2.x's default `status_code`.
    fn default() -> Self {
        Self(vec![(200, 299)])
    }
}

impl fmt::Display for StatusCodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(lo, hi)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if lo == hi { write!(f, "{lo}")? } else { write!(f, "{lo}-{hi}")? }
        }
        Ok(())
    }
}

impl Default for HealthCheck {
    /// No check: always up.
    fn default() -> Self {
        Self {
            probe: Probe::None,
            interval: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            retry: CheckKind::None.default_retry(),
            delay_before_retry: CheckKind::None.default_delay_before_retry(),
            rise: 1,
            alpha: false,
            inhibit_on_failure: false,
            source_address: None,
            port: None,
            notify_up: None,
            notify_down: None,
        }
    }
}

impl HealthCheck {
    /// keepalived's defaults for `kind`: `delay_loop` 60 s, `connect_timeout`
    /// 5 s, one retry (two failures), `delay_before_retry` 1 s (3 s for
    /// http/https), HTTP status 200-299.
    pub fn defaults(kind: CheckKind) -> Self {
        let probe = match kind {
            CheckKind::None => Probe::None,
            CheckKind::Tcp => Probe::Tcp,
            CheckKind::Ping => Probe::Ping,
            CheckKind::Http | CheckKind::Https => Probe::Http(HttpProbe {
                path: "/".into(),
                status: StatusCodes::default(),
                body_contains: None,
                digest: None,
                host: None,
                tls: (kind == CheckKind::Https).then_some(TlsOptions { verify_certificate: false, ca_file: None }),
            }),
            CheckKind::Exec => Probe::Exec(ExecProbe { command: String::new(), dynamic_weight: false }),
        };
        Self {
            probe,
            retry: kind.default_retry(),
            delay_before_retry: kind.default_delay_before_retry(),
            ..Self::default()
        }
    }

    pub fn kind(&self) -> CheckKind {
        match &self.probe {
            Probe::None => CheckKind::None,
            Probe::Tcp => CheckKind::Tcp,
            Probe::Http(h) if h.tls.is_some() => CheckKind::Https,
            Probe::Http(_) => CheckKind::Http,
            Probe::Ping => CheckKind::Ping,
            Probe::Exec(_) => CheckKind::Exec,
        }
    }

    /// Whether anything is checked at all (`kind = "none"` is not).
    pub fn is_active(&self) -> bool {
        self.probe != Probe::None
    }

    /// The address a check of the real server `real` goes to.
    pub fn target(&self, real: SocketAddr) -> SocketAddr {
        SocketAddr::new(real.ip(), self.port.unwrap_or(real.port()))
    }
}

/// The most of a `ca_file` read (a bundle of every public root CA is
/// about 200 KiB).
pub const MAX_CA_FILE: u64 = 1 << 20;

/// PEM certificates from `path`, for `ca_file`: read when the config is
/// checked, and by each https check. Only a regular file, and at most
/// [`MAX_CA_FILE`] of it: a device or a FIFO there (`/dev/zero`,
/// `/dev/stdin`) once had the config check read forever or wait forever.
pub(crate) fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    use std::io::Read as _;

    let cannot_read = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    // Before opening it: opening a FIFO waits for a writer.
    if !std::fs::metadata(path).map_err(cannot_read)?.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let mut text = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_CA_FILE + 1).read_to_end(&mut text))
        .map_err(cannot_read)?;
    if text.len() as u64 > MAX_CA_FILE {
        return Err(format!("{} is larger than {} KiB", path.display(), MAX_CA_FILE >> 10));
    }
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: bad PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} has no PEM certificate", path.display()));
    }
    Ok(certs)
}
