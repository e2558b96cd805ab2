//! lab-server: the tiny backend run in each real-server namespace of the lab.
//!
//! HTTP/1.1 (hand-written, keep-alive): every request is answered with the
//! server's name, so a test can see which real server a request reached.
//! - `/whoami`           -> "NAME PEER LOCAL\n" (client address and the address it reached, e.g. the VIP)
//! - `/slow?seconds=N`   -> "NAME\n" once a second for N seconds (long-lived connections)
//! - `/echo` (POST)      -> the request body, byte for byte (a transfer
//!   checked at both ends; at most 64 MiB)
//! - `/health`           -> "NAME\n" with 200, or with 503 while the file given
//!   with `--health-file` exists (a health check that fails on demand)
//! - anything else       -> "NAME\n"
//!
//! UDP (`--udp ADDR:PORT`): answers each datagram with "NAME " + the payload.
//! Bind UDP to specific addresses (e.g. the VIP): a 0.0.0.0 UDP socket would
//! reply from the primary address, not the one the client sent to.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

#[derive(Parser, Debug)]
#[command(about = "HTTP/UDP test backend for the namespace lab")]
struct Args {
    /// Name put in every answer, e.g. "rs1".
    #[arg(long)]
    name: String,
    /// Serve HTTP on this address (repeatable). 0.0.0.0 also covers a VIP on lo.
    #[arg(long = "http", value_name = "ADDR:PORT")]
    http: Vec<SocketAddr>,
    /// Answer UDP datagrams on this address (repeatable).
    #[arg(long = "udp", value_name = "ADDR:PORT")]
    udp: Vec<SocketAddr>,
    /// While this file exists, `/health` answers 503 Service Unavailable.
    #[arg(long = "health-file", value_name = "PATH")]
    health_file: Option<std::path::PathBuf>,
}

/// `--health-file`: `/health` fails while it exists.
static HEALTH_FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Longest request head accepted; anything bigger is not a test request.
const MAX_HEAD: usize = 64 * 1024;
/// Largest body `/echo` sends back.
const MAX_ECHO: u64 = 64 << 20;
/// Upper bound for /slow so a typo cannot keep a connection open for ages.
const MAX_SLOW_SECONDS: u64 = 3600;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.http.is_empty() && args.udp.is_empty() {
        bail!("nothing to serve: give --http and/or --udp");
    }
    let name: &'static str = Box::leak(args.name.into_boxed_str());
    if let Some(path) = args.health_file {
        let _ = HEALTH_FILE.set(path);
    }

    // Bind everything first so a bad address fails at once.
    for addr in &args.http {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding HTTP {addr}"))?;
        println!("lab-server {name}: HTTP on {addr}");
        tokio::spawn(accept_loop(listener, name));
    }
    for addr in &args.udp {
        let socket = UdpSocket::bind(addr).await.with_context(|| format!("binding UDP {addr}"))?;
        println!("lab-server {name}: UDP on {addr}");
        tokio::spawn(udp_loop(socket, name));
    }

    // Exit cleanly on SIGTERM (what the lab sends) or SIGINT.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    println!("lab-server {name}: exiting");
    Ok(())
}

async fn accept_loop(listener: TcpListener, name: &'static str) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(async move {
                    if let Err(e) = serve_connection(stream, peer, name).await {
                        eprintln!("lab-server {name}: {peer}: {e:#}");
                    }
                });
            }
            Err(e) => {
                eprintln!("lab-server {name}: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn udp_loop(socket: UdpSocket, name: &'static str) {
    let mut buf = vec![0u8; 65536];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, peer)) => {
                let mut reply = Vec::with_capacity(name.len() + 1 + n);
                reply.extend_from_slice(name.as_bytes());
                reply.push(b' ');
                reply.extend_from_slice(&buf[..n]);
                if let Err(e) = socket.send_to(&reply, peer).await {
                    eprintln!("lab-server {name}: UDP reply to {peer}: {e}");
                }
            }
            Err(e) => {
                eprintln!("lab-server {name}: UDP receive: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One parsed request head; only what the server needs.
struct Request {
    method: String,
    target: String,
    keep_alive: bool,
    content_length: u64,
    chunked: bool,
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, name: &'static str) -> Result<()> {
    stream.set_nodelay(true)?;
    let local = stream.local_addr()?;
    let (read_half, mut write) = stream.into_split();
    let mut read = BufReader::new(read_half);
    // Keep-alive: serve requests on this connection until the client closes
    // it or asks to.
    while let Some(request) = read_request(&mut read).await? {
        if request.chunked {
            // Not needed by any test; refuse rather than misparse.
            write_head(&mut write, "501 Not Implemented", 0, false, name).await?;
            return Ok(());
        }
        if request.target == "/echo" && request.content_length <= MAX_ECHO {
            let mut body = vec![0; request.content_length as usize];
            read.read_exact(&mut body).await?;
            write_head(&mut write, "200 OK", body.len() as u64, request.keep_alive, name).await?;
            write.write_all(&body).await?;
            write.flush().await?;
            if !request.keep_alive {
                break;
            }
            continue;
        }
        // Discard a request body so the next request parses.
        tokio::io::copy(&mut (&mut read).take(request.content_length), &mut tokio::io::sink()).await?;
        let with_body = request.method != "HEAD";
        let (path, query) = request.target.split_once('?').unwrap_or((&request.target, ""));
        match path {
            "/slow" => {
                let seconds = query_param(query, "seconds").and_then(|s| s.parse().ok()).unwrap_or(5u64);
                let seconds = seconds.min(MAX_SLOW_SECONDS);
                let line = format!("{name}\n");
                let len = line.len() as u64 * seconds;
                write_head(&mut write, "200 OK", len, request.keep_alive, name).await?;
                if with_body {
                    for _ in 0..seconds {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        write.write_all(line.as_bytes()).await?;
                        write.flush().await?;
                    }
                }
            }
            _ => {
                let body = if path == "/whoami" { format!("{name} {peer} {local}\n") } else { format!("{name}\n") };
                let failing = path == "/health" && HEALTH_FILE.get().is_some_and(|f| f.exists());
                let status = if failing { "503 Service Unavailable" } else { "200 OK" };
                write_head(&mut write, status, body.len() as u64, request.keep_alive, name).await?;
                if with_body {
                    write.write_all(body.as_bytes()).await?;
                }
                write.flush().await?;
            }
        }
        if !request.keep_alive {
            break;
        }
    }
    write.shutdown().await.ok();
    Ok(())
}

async fn write_head<W: AsyncWriteExt + Unpin>(
    write: &mut W,
    status: &str,
    content_length: u64,
    keep_alive: bool,
    name: &str,
) -> Result<()> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {content_length}\r\n\
         X-Server: {name}\r\nConnection: {connection}\r\n\r\n"
    );
    write.write_all(head.as_bytes()).await?;
    write.flush().await?;
    Ok(())
}

/// Reads a request head; None when the client closed the connection between requests.
async fn read_request<R: AsyncRead + Unpin>(read: &mut BufReader<R>) -> Result<Option<Request>> {
    let mut lines: Vec<String> = Vec::new();
    let mut total = 0;
    loop {
        let mut line = Vec::new();
        let n = read.read_until(b'\n', &mut line).await?;
        if n == 0 {
            if lines.is_empty() {
                return Ok(None);
            }
            bail!("connection closed inside a request head");
        }
        total += n;
        if total > MAX_HEAD {
            bail!("request head larger than {MAX_HEAD} bytes");
        }
        let line = String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            if lines.is_empty() {
                continue; // tolerate stray CRLF between requests (RFC 9112 2.2)
            }
            break;
        }
        lines.push(line);
    }

    let mut request_line = lines[0].split_whitespace();
    let (Some(method), Some(target), Some(version)) = (request_line.next(), request_line.next(), request_line.next())
    else {
        bail!("bad request line {:?}", lines[0]);
    };
    let mut keep_alive = version == "HTTP/1.1";
    let mut content_length = 0;
    let mut chunked = false;
    for header in &lines[1..] {
        let Some((key, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim().to_ascii_lowercase().as_str() {
            "connection" => {
                let value = value.to_ascii_lowercase();
                if value.contains("close") {
                    keep_alive = false;
                } else if value.contains("keep-alive") {
                    keep_alive = true;
                }
            }
            "content-length" => content_length = value.parse().context("bad Content-Length")?,
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            _ => {}
        }
    }
    Ok(Some(Request { method: method.to_owned(), target: target.to_owned(), keep_alive, content_length, chunked }))
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
}
