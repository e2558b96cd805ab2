//! An HTTP/1 response as a check reads it: the status line and headers
//! through `httparse`, then, when a body check needs it, the body by its
//! framing (length, chunked, until close). Everything is bounded: the head
//! by [`MAX_HEAD`], the body by [`MAX_BODY`] whatever sizes the server
//! declares.

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::health::{config::StatusCodes, probe::io_reason};

/// The most of a body read for `body_contains` or `digest`.
pub const MAX_BODY: usize = 1 << 20;
/// The most of a response's status line and headers read.
const MAX_HEAD: usize = 64 << 10;
/// The most header lines a response may have.
const MAX_HEADERS: usize = 128;
/// The most a chunk-size line (with its extensions) may take.
const MAX_CHUNK_LINE: usize = 4 << 10;
/// What one read asks for.
const READ_SIZE: usize = 16 << 10;

#[derive(Debug, PartialEq)]
pub struct Response {
    pub status: u16,
    /// Read only when a body check needs it and the status is expected.
    pub body: Vec<u8>,
}

/// How the body ends.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

#[derive(Debug, PartialEq)]
struct Head {
    status: u16,
    framing: Framing,
    /// Bytes of the status line and headers, blank line included.
    len: usize,
}

fn too_large() -> String {
    format!("response body larger than {} MiB", MAX_BODY >> 20)
}

/// Reads the status line and headers, then the body if `wants_body` and
/// the status is one of `expected`. Public for the fuzz crate.
pub async fn read_response<S: AsyncRead + Unpin>(
    stream: &mut S,
    wants_body: bool,
    expected: &StatusCodes,
) -> Result<Response, String> {
    let mut buf = Vec::with_capacity(8192);
    let head = loop {
        if read_more(stream, &mut buf, false).await? == 0 {
            return Err(if buf.is_empty() {
                "empty response".into()
            } else {
                "connection closed inside the response headers".into()
            });
        }
        match parse_head(&buf)? {
            Some(head) => break head,
            None if buf.len() > MAX_HEAD => {
                return Err(format!("response headers larger than {} KiB", MAX_HEAD >> 10));
            }
            None => {}
        }
    };
    if !wants_body || !expected.contains(head.status) {
        return Ok(Response { status: head.status, body: Vec::new() });
    }
    buf.drain(..head.len);
    let body = read_body(stream, buf, head.framing).await?;
    Ok(Response { status: head.status, body })
}

/// Reads more of the response onto `buf`; 0 at its end. In the body, a TLS
/// peer closing without close_notify ends it there, as for HTTP/1.0.
async fn read_more<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>, in_body: bool) -> Result<usize, String> {
    buf.reserve(READ_SIZE);
    match stream.read_buf(buf).await {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && in_body => Ok(0),
        Err(e) => Err(format!("reading the response: {}", io_reason(&e))),
    }
}

/// The body after the head, `buf` holding what has come of it already.
async fn read_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    mut buf: Vec<u8>,
    framing: Framing,
) -> Result<Vec<u8>, String> {
    match framing {
        Framing::Length(n) => {
            if n > MAX_BODY {
                return Err(too_large());
            }
            while buf.len() < n {
                if read_more(stream, &mut buf, true).await? == 0 {
                    return Err(format!("connection closed after {} of {n} body bytes", buf.len()));
                }
            }
            buf.truncate(n);
            Ok(buf)
        }
        Framing::UntilClose => {
            while read_more(stream, &mut buf, true).await? > 0 {
                if buf.len() > MAX_BODY {
                    return Err(too_large());
                }
            }
            Ok(buf)
        }
        Framing::Chunked => {
            let mut chunks = Dechunker::default();
            loop {
                let used = chunks.feed(&buf)?;
                buf.drain(..used);
                if chunks.is_done() {
                    return Ok(chunks.body);
                }
                if read_more(stream, &mut buf, true).await? == 0 {
                    return Err("connection closed inside the chunked body".into());
                }
            }
        }
    }
}

/// The head, once all of it has arrived.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    // Quirky but harmless heads pass, as they do with keepalived: only the
    // status and the body's framing matter here.
    let parsed = httparse::ParserConfig::default()
        .allow_multiple_spaces_in_response_status_delimiters(true)
        .allow_spaces_after_header_name_in_responses(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .ignore_invalid_headers_in_responses(true)
        .parse_response(&mut response, buf);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(format!("more than {MAX_HEADERS} response headers")),
        Err(e) if response.code.is_some() => return Err(format!("bad response headers: {e}")),
        Err(_) => {
            let line = buf.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default();
            let line: String = String::from_utf8_lossy(line).chars().take(40).collect();
            return Err(format!("not an HTTP response: \"{line}\""));
        }
    };
    let status = response.code.expect("a complete head has a status");
    let mut framing = Framing::UntilClose;
    for header in response.headers.iter() {
        let value = String::from_utf8_lossy(header.value);
        let value = value.trim();
        if header.name.eq_ignore_ascii_case("transfer-encoding") && value.to_ascii_lowercase().contains("chunked") {
            framing = Framing::Chunked;
        } else if header.name.eq_ignore_ascii_case("content-length") && framing != Framing::Chunked {
            let n = value.parse().map_err(|_| format!("bad Content-Length \"{value}\""))?;
            framing = Framing::Length(n);
        }
    }
    // These never have a body.
    if status == 204 || status == 304 || (100..200).contains(&status) {
        framing = Framing::Length(0);
    }
    Ok(Some(Head { status, framing, len }))
}

/// A chunked body, decoded as it arrives. Chunk sizes come from the
/// network: each is checked against what the body may still take before
/// anything is added up.
#[derive(Debug, Default)]
struct Dechunker {
    body: Vec<u8>,
    state: ChunkState,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
enum ChunkState {
    /// Before a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk's data, this many bytes still to come.
    Data(usize),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// The last (empty) chunk has come; trailers, if any, are not read.
    Done,
}

impl Dechunker {
    fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes what it can of `raw`; returns how many bytes it used. The
    /// rest (part of a size line or of a CRLF) is to be given again, with
    /// what follows it.
    fn feed(&mut self, raw: &[u8]) -> Result<usize, String> {
        let mut used = 0;
        loop {
            let rest = &raw[used..];
            match self.state {
                ChunkState::Done => return Ok(used),
                ChunkState::Size => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((line, 0))) => {
                        used += line;
                        self.state = ChunkState::Done;
                    }
                    Ok(httparse::Status::Complete((line, size))) => {
                        let room = MAX_BODY - self.body.len();
                        let size = usize::try_from(size).ok().filter(|&size| size <= room).ok_or_else(too_large)?;
                        used += line;
                        self.state = ChunkState::Data(size);
                    }
                    Ok(httparse::Status::Partial) if rest.len() > MAX_CHUNK_LINE => {
                        return Err(format!("chunk-size line longer than {} KiB", MAX_CHUNK_LINE >> 10));
                    }
                    Ok(httparse::Status::Partial) => return Ok(used),
                    Err(_) => {
                        let line = rest.split(|&b| b == b'\r').next().unwrap_or_default();
                        let line: String = String::from_utf8_lossy(line).chars().take(20).collect();
                        return Err(format!("bad chunk size \"{line}\""));
                    }
                },
                ChunkState::Data(left) => {
                    if rest.is_empty() {
                        return Ok(used);
                    }
                    let take = left.min(rest.len());
                    self.body.extend_from_slice(&rest[..take]);
                    used += take;
                    self.state = if take == left { ChunkState::DataEnd } else { ChunkState::Data(left - take) };
                }
                ChunkState::DataEnd => match rest.get(..2) {
                    None => return Ok(used),
                    Some(b"\r\n") => {
                        used += 2;
                        self.state = ChunkState::Size;
                    }
                    Some(_) => return Err("chunk data not followed by CRLF".into()),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole body once the last chunk is in `raw`.
    fn dechunk(raw: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let mut chunks = Dechunker::default();
        chunks.feed(raw)?;
        Ok(chunks.is_done().then_some(chunks.body))
    }

    #[test]
    fn heads_and_chunks() {
        let head = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").unwrap().unwrap();
        assert_eq!(head, Head { status: 200, framing: Framing::Length(5), len: 38 });
        let head = parse_head(b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n").unwrap().unwrap();
        assert_eq!((head.status, head.framing), (404, Framing::Chunked));
        assert_eq!(parse_head(b"HTTP/1.0 200 OK\r\nServer: x\r\n").unwrap(), None);
        assert!(parse_head(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").is_err());

        assert_eq!(dechunk(b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n").unwrap(), Some(b"hello world".to_vec()));
        assert_eq!(dechunk(b"5\r\nhel").unwrap(), None);
        assert_eq!(dechunk(b"5\r\nhello\r\n").unwrap(), None);
        assert!(dechunk(b"zz\r\n").is_err());
    }

    #[test]
    fn quirky_heads_pass_and_bad_ones_say_why() {
        let head = parse_head(b"HTTP/1.1 200\r\nX-Broken header: 1\r\nContent-Length : 2\r\n\r\nOK").unwrap().unwrap();
        assert_eq!((head.status, head.framing), (200, Framing::Length(2)));
        let negative = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n");
        assert_eq!(negative, Err("bad Content-Length \"-1\"".into()));
        let many = format!("HTTP/1.1 200 OK\r\n{}\r\n", "X: y\r\n".repeat(MAX_HEADERS + 1));
        assert_eq!(parse_head(many.as_bytes()), Err(format!("more than {MAX_HEADERS} response headers")));
        let not_modified = parse_head(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n").unwrap().unwrap();
        assert_eq!(not_modified.framing, Framing::Length(0), "never a body");
    }

    #[test]
    fn chunks_decode_whatever_the_pieces() {
        let raw = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n";
        let mut chunks = Dechunker::default();
        let mut pending = Vec::new();
        for &byte in raw {
            pending.push(byte);
            let used = chunks.feed(&pending).unwrap();
            pending.drain(..used);
        }
        assert!(chunks.is_done());
        assert_eq!(chunks.body, b"hello world");
    }

    #[test]
    fn chunk_sizes_are_bounded() {
        // u64::MAX: once, the size plus its CRLF overflowed and the check task panicked.
        assert_eq!(dechunk(b"ffffffffffffffff\r\nabc"), Err(too_large()));
        assert_eq!(dechunk(b"10000000000000000\r\nabc"), Err("bad chunk size \"10000000000000000\"".into()));
        assert_eq!(dechunk(format!("{:x}\r\n", MAX_BODY + 1).as_bytes()), Err(too_large()));
        // Chunks that add up to more than MAX_BODY.
        let half = format!("{:x}\r\n{}\r\n", MAX_BODY / 2, "x".repeat(MAX_BODY / 2));
        assert_eq!(dechunk(format!("{half}{half}0\r\n\r\n").as_bytes()).unwrap().map(|b| b.len()), Some(MAX_BODY));
        assert_eq!(dechunk(format!("{half}{half}1\r\n").as_bytes()), Err(too_large()));
        // A size line that never ends.
        let endless = format!("5;{}", "x".repeat(MAX_CHUNK_LINE));
        assert_eq!(dechunk(endless.as_bytes()), Err("chunk-size line longer than 4 KiB".into()));
        assert_eq!(dechunk(b"3\r\nabcXY"), Err("chunk data not followed by CRLF".into()));
    }
}
