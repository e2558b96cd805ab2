//! HTTP_GET and SSL_GET: one `GET` over HTTP/1.0 (as keepalived), the
//! status checked against the expected codes and, when asked, the body
//! against a substring or an MD5 digest. The response is read by
//! [`response`].

// Public (through `probe::http_response`) for the fuzz crate only.
pub mod response;

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
};

use md5::{Digest, Md5};
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    time::{Instant, timeout_at},
};
use tokio_rustls::TlsConnector;

use super::{
    Failure,
    net::{connect, io_reason},
};
use crate::health::config::{HealthCheck, HttpProbe, TlsOptions, load_ca_file};
use response::{Response, read_response};

pub(super) async fn check(
    check: &HealthCheck,
    probe: &HttpProbe,
    target: SocketAddr,
    deadline: Instant,
) -> Result<(), Failure> {
    let stream = connect(check, target, deadline).await?;
    let request = request(probe, target);
    let Some(tls) = &probe.tls else {
        return Ok(exchange(stream, &request, probe, deadline).await?);
    };
    // No CA certificates to check against is the director's problem.
    let connector = TlsConnector::from(tls_config(tls).map_err(Failure::NotChecked)?);
    let name = match &probe.host {
        // Validated as a server name with the config.
        Some(host) => ServerName::try_from(host.clone()).map_err(|e| Failure::NotChecked(format!("bad host: {e}")))?,
        None => ServerName::IpAddress(target.ip().into()),
    };
    let stream = match timeout_at(deadline, connector.connect(name, stream)).await {
        Err(_) => return Err(Failure::Server("TLS handshake timeout".into())),
        Ok(Err(e)) => return Err(Failure::Server(format!("TLS handshake: {}", io_reason(&e)))),
        Ok(Ok(stream)) => stream,
    };
    Ok(exchange(stream, &request, probe, deadline).await?)
}

fn request(probe: &HttpProbe, target: SocketAddr) -> Vec<u8> {
    let host = match &probe.host {
        Some(host) => host.clone(),
        None => {
            let default_port = if probe.tls.is_some() { 443 } else { 80 };
            match (target.ip(), target.port()) {
                (ip, port) if port == default_port => {
                    if ip.is_ipv6() {
                        format!("[{ip}]")
                    } else {
                        ip.to_string()
                    }
                }
                _ => target.to_string(),
            }
        }
    };
    format!(
        "GET {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: lbd-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        probe.path
    )
    .into_bytes()
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
    probe: &HttpProbe,
    deadline: Instant,
) -> Result<(), String> {
    match timeout_at(deadline, stream.write_all(request)).await {
        Err(_) => return Err("timeout sending the request".into()),
        Ok(Err(e)) => return Err(format!("sending the request: {}", io_reason(&e))),
        Ok(Ok(())) => {}
    }
    let wants_body = probe.body_contains.is_some() || probe.digest.is_some();
    let response = match timeout_at(deadline, read_response(&mut stream, wants_body, &probe.status)).await {
        Err(_) => return Err("response timeout".into()),
        Ok(response) => response?,
    };
    judge(probe, &response)
}

fn judge(probe: &HttpProbe, response: &Response) -> Result<(), String> {
    if !probe.status.contains(response.status) {
        return Err(format!("HTTP status {}, expected {}", response.status, probe.status));
    }
    if let Some(want) = &probe.digest {
        let got: [u8; 16] = Md5::digest(&response.body).into();
        if &got != want {
            return Err(format!("body MD5 {}, expected {}", hex(&got), hex(want)));
        }
    }
    if let Some(needle) = &probe.body_contains
        && !contains(&response.body, needle.as_bytes())
    {
        return Err(format!("body does not contain \"{needle}\""));
    }
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The client config for `tls`: with verification against the system's
/// roots or `ca_file`, or without any (keepalived's SSL_GET does not verify).
fn tls_config(tls: &TlsOptions) -> Result<Arc<ClientConfig>, String> {
    static UNVERIFIED: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    // Read once: the system store is large and rarely changes.
    static SYSTEM_ROOTS: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    if !tls.verify_certificate {
        let config = UNVERIFIED.get_or_init(|| {
            let verifier = Arc::new(AcceptAnyCertificate(provider()));
            let config = builder().dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth();
            Arc::new(config)
        });
        return Ok(config.clone());
    }
    if let Some(path) = &tls.ca_file {
        // Read at each check, so a replaced CA file takes effect.
        return Ok(verified(load_ca_file(path)?));
    }
    SYSTEM_ROOTS
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            if loaded.certs.is_empty() {
                return Err("no CA certificates in the system store".into());
            }
            Ok(verified(loaded.certs))
        })
        .clone()
}

fn verified(roots: Vec<CertificateDer<'static>>) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(roots);
    Arc::new(builder().with_root_certificates(store).with_no_client_auth())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn builder() -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
}

/// `verify_certificate = false`: any certificate, but the handshake's
/// signatures are still checked.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::{io::AsyncReadExt, net::TcpListener};

    use super::*;
    use crate::health::{
        check_once,
        config::{CheckKind, Probe, StatusCodes},
        tracker::CheckResult,
    };

    /// Reads a request head, then writes `response`.
    async fn answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S, response: &[u8]) {
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.ends_with(b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
        let _ = s.write_all(response).await;
    }

    /// Serves every connection `response`, once the request has arrived.
    async fn serve(response: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move { answer(&mut s, response).await });
            }
        });
        addr
    }

    fn http(timeout_ms: u64, edit: impl FnOnce(&mut HttpProbe)) -> HealthCheck {
        let mut check = HealthCheck {
            connect_timeout: Duration::from_millis(timeout_ms),
            ..HealthCheck::defaults(CheckKind::Http)
        };
        let Probe::Http(probe) = &mut check.probe else { unreachable!() };
        edit(probe);
        check
    }

    fn md5_of(body: &[u8]) -> [u8; 16] {
        Md5::digest(body).into()
    }

    #[tokio::test]
    async fn status_codes() {
        let ok = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK").await;
        let unavailable = serve(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(check_once(&http(1000, |_| {}), ok).await, CheckResult::Up);
        assert_eq!(
            check_once(&http(1000, |_| {}), unavailable).await,
            CheckResult::Down("HTTP status 503, expected 200-299".into())
        );
        let only_503 = http(1000, |p| p.status = StatusCodes(vec![(503, 503)]));
        assert_eq!(check_once(&only_503, unavailable).await, CheckResult::Up);
        assert_eq!(check_once(&only_503, ok).await, CheckResult::Down("HTTP status 200, expected 503".into()));
    }

    #[tokio::test]
    async fn body_substring_and_digest() {
        const BODY: &[u8] = b"<html>all systems OK</html>";
        let plain = serve(b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html>all systems OK</html>").await;
        let sized = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 27\r\n\r\n<html>all systems OK</html>").await;
        let chunked =
            serve(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n<html>\r\n15\r\nall systems OK</html>\r\n0\r\n\r\n").await;
        for server in [plain, sized, chunked] {
            let found = http(1000, |p| p.body_contains = Some("systems OK".into()));
            assert_eq!(check_once(&found, server).await, CheckResult::Up, "{server}");
            let missing = http(1000, |p| p.body_contains = Some("FAIL".into()));
            assert_eq!(check_once(&missing, server).await, CheckResult::Down("body does not contain \"FAIL\"".into()));
            let digest = http(1000, |p| p.digest = Some(md5_of(BODY)));
            assert_eq!(check_once(&digest, server).await, CheckResult::Up, "{server}");
        }
        let wrong = http(1000, |p| p.digest = Some(md5_of(b"other")));
        let CheckResult::Down(reason) = check_once(&wrong, plain).await else { panic!() };
        assert_eq!(reason, format!("body MD5 {}, expected {}", hex(&md5_of(BODY)), hex(&md5_of(b"other"))));
    }

    #[tokio::test]
    async fn the_request_names_the_path_and_host() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                req.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.0 200 OK\r\n\r\n").await.unwrap();
            String::from_utf8(req).unwrap()
        });
        let check = http(1000, |p| {
            p.path = "/health?full=1".into();
            p.host = Some("example.org".into());
        });
        assert_eq!(check_once(&check, addr).await, CheckResult::Up);
        let req = server.await.unwrap();
        assert!(req.starts_with("GET /health?full=1 HTTP/1.0\r\nHost: example.org\r\n"), "{req}");
    }

    #[tokio::test]
    async fn a_silent_server_costs_at_most_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts, reads, never answers.
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (s, _) = listener.accept().await.unwrap();
                held.push(s);
            }
        });
        let start = std::time::Instant::now();
        assert_eq!(check_once(&http(500, |_| {}), addr).await, CheckResult::Down("response timeout".into()));
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(450) && took < Duration::from_millis(1200), "{took:?}");
    }

    #[tokio::test]
    async fn broken_responses() {
        let closed = serve(b"").await;
        assert_eq!(check_once(&http(1000, |_| {}), closed).await, CheckResult::Down("empty response".into()));
        let short = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").await;
        let body = http(1000, |p| p.body_contains = Some("abc".into()));
        assert_eq!(
            check_once(&body, short).await,
            CheckResult::Down("connection closed after 3 of 10 body bytes".into())
        );
        let garbage = serve(b"220 smtp.example.org ESMTP\r\n\r\n").await;
        assert_eq!(
            check_once(&http(1000, |_| {}), garbage).await,
            CheckResult::Down("not an HTTP response: \"220 smtp.example.org ESMTP\"".into())
        );
    }

    #[tokio::test]
    async fn a_huge_body_is_cut() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\n").await;
            let chunk = vec![b'x'; 65536];
            for _ in 0..40 {
                if s.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        });
        let body = http(5000, |p| p.body_contains = Some("y".into()));
        assert_eq!(check_once(&body, addr).await, CheckResult::Down("response body larger than 1 MiB".into()));
    }

    #[tokio::test]
    async fn a_chunk_size_past_any_bound_fails_the_check() {
        // u64::MAX: adding the chunk's CRLF to it once overflowed, and
        // the panic ended the server's check task for good.
        let hostile = serve(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nabc").await;
        let digest = http(1000, |p| p.digest = Some(md5_of(b"abc")));
        for _ in 0..2 {
            assert_eq!(check_once(&digest, hostile).await, CheckResult::Down("response body larger than 1 MiB".into()));
        }
        let bad = serve(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nabc").await;
        let reason = "bad chunk size \"1ffffffffffffffff\"";
        assert_eq!(check_once(&digest, bad).await, CheckResult::Down(reason.into()));
    }

    // HTTPS against a local rustls server with a self-signed certificate.

    struct TlsServer {
        addr: SocketAddr,
        cert_pem: String,
    }

    async fn serve_tls(response: &'static [u8]) -> TlsServer {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let cert_der = cert.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert_der], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(s).await else { return };
                    answer(&mut s, response).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        TlsServer { addr, cert_pem: cert.cert.pem() }
    }

    fn https(verify: bool, ca_file: Option<std::path::PathBuf>, host: Option<&str>) -> HealthCheck {
        let mut check =
            HealthCheck { connect_timeout: Duration::from_secs(2), ..HealthCheck::defaults(CheckKind::Https) };
        let Probe::Http(probe) = &mut check.probe else { unreachable!() };
        probe.tls = Some(TlsOptions { verify_certificate: verify, ca_file });
        probe.host = host.map(str::to_string);
        probe.body_contains = Some("secure".into());
        check
    }

    #[tokio::test]
    async fn https_with_and_without_verification() {
        let server = serve_tls(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nsecure OK").await;
        assert_eq!(check_once(&https(false, None, None), server.addr).await, CheckResult::Up);
        assert_eq!(check_once(&https(false, None, Some("localhost")), server.addr).await, CheckResult::Up);

        // Self-signed: unknown to the system's roots.
        let CheckResult::Down(reason) = check_once(&https(true, None, None), server.addr).await else { panic!() };
        assert!(reason.starts_with("TLS handshake: "), "{reason}");
        assert!(reason.contains("UnknownIssuer") || reason.contains("no CA certificates"), "{reason}");

        // Trusted through ca_file, by IP or by name.
        let ca = std::env::temp_dir().join(format!("lb-health-ca-{}-{}.pem", std::process::id(), server.addr.port()));
        std::fs::write(&ca, &server.cert_pem).unwrap();
        assert_eq!(check_once(&https(true, Some(ca.clone()), None), server.addr).await, CheckResult::Up);
        assert_eq!(check_once(&https(true, Some(ca.clone()), Some("localhost")), server.addr).await, CheckResult::Up);
        let CheckResult::Down(reason) =
            check_once(&https(true, Some(ca.clone()), Some("example.org")), server.addr).await
        else {
            panic!()
        };
        assert!(reason.contains("not valid for name"), "{reason}");
        let _ = std::fs::remove_file(&ca);

        // Plain HTTP to a TLS port fails rather than hangs.
        let plain = HealthCheck { connect_timeout: Duration::from_secs(2), ..HealthCheck::defaults(CheckKind::Http) };
        assert!(matches!(check_once(&plain, server.addr).await, CheckResult::Down(_)));
    }
}
