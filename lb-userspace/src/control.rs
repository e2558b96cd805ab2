//! The control socket, lbd's side: lbd serves its live state on a Unix
//! socket, lbctl asks. One JSON request per connection, one JSON response;
//! the protocol is lb-ipvsadm's `control`.
//!
//! Whoever can reach the socket is hostile until checked. The socket is
//! root's, mode 0600 (0660 and the `control_group`'s with one) from the
//! moment it has its name; each client's credentials are checked again
//! (`SO_PEERCRED`, `SO_PEERGROUPS`), in case the file's mode was changed;
//! a request is bounded in size and must arrive within [`REQUEST_TIMEOUT`];
//! at most [`MAX_CLIENTS`] are served at once. Nothing a client does, and
//! no failure to accept one (out of file descriptors), ends the server.

use std::{
    os::{fd::AsRawFd as _, unix::fs::PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use lb_ipvsadm::control::{Request, Response};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _},
    net::{UnixListener, UnixStream},
};
use tracing::{debug, warn};

use crate::config::ControlGroup;

/// The longest request: `lbctl -R` of a full table (every service and real
/// server lbd can hold) is well under this.
pub const MAX_REQUEST_BYTES: u64 = 8 << 20;
/// How long a client has to send its whole request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client has to take its whole answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Clients served at once; more wait in the listen backlog.
pub const MAX_CLIENTS: usize = 32;
/// After a failed accept (out of file descriptors, most likely), before
/// the next: the pending connection stays queued, and an accept at once
/// would fail again at once.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves requests on `listener` (made by [`listen`]) until the task is
/// dropped; `handle` answers each one. Only root and members of `group`
/// are answered.
pub async fn serve<F>(listener: UnixListener, group: Option<ControlGroup>, handle: F) -> Result<()>
where
    F: Fn(Request) -> Response + Send + Sync + 'static,
{
    let handle = Arc::new(handle);
    let group = Arc::new(group);
    let clients = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    let mut accept_errors = Throttled::new(Duration::from_secs(10));
    let refusals = Arc::new(std::sync::Mutex::new(Throttled::new(Duration::from_secs(10))));
    loop {
        let permit = clients.clone().acquire_owned().await.context("the client limit is gone")?;
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                accept_errors.run(|more| warn!("control socket: accept: {e}{}; still serving", more_since(more)));
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let (handle, group, refusals) = (handle.clone(), group.clone(), refusals.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let verdict = allowed(&stream, (*group).as_ref());
            if let Err(why) = &verdict {
                refusals.lock().unwrap_or_else(|e| e.into_inner()).run(|more| {
                    warn!("control socket: refused a client: {why}{}", more_since(more));
                });
            }
            serve_client(stream, verdict, handle).await;
        });
    }
}

/// One client: its request, bounded and in time, and the answer. A client
/// that is not `allowed` is refused only once its request is read, so that
/// the refusal reaches it (it is still writing when the check is done).
async fn serve_client<F>(stream: UnixStream, allowed: Result<(), String>, handle: Arc<F>)
where
    F: Fn(Request) -> Response + Send + Sync + 'static,
{
    let mut reader = tokio::io::BufReader::new(stream);
    let mut line = Vec::new();
    // One byte over the limit tells a request that is too long from one
    // that is exactly as long as allowed.
    let mut limited = (&mut reader).take(MAX_REQUEST_BYTES + 1);
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, limited.read_until(b'\n', &mut line)).await {
        Err(_) => {
            debug!("control socket: a client sent no whole request within {REQUEST_TIMEOUT:?}; dropped");
            Response::Error { message: format!("no request within {REQUEST_TIMEOUT:?}") }
        }
        Ok(Err(e)) => {
            debug!("control socket: reading a request: {e}");
            return;
        }
        Ok(Ok(_)) if line.len() as u64 > MAX_REQUEST_BYTES => {
            Response::Error { message: format!("request too long (over {MAX_REQUEST_BYTES} bytes)") }
        }
        Ok(Ok(_)) => match (allowed, serde_json::from_slice::<Request>(&line)) {
            (Err(why), _) => Response::Error { message: format!("permission denied: {why}") },
            (Ok(()), Ok(request)) => tokio::task::spawn_blocking(move || handle(request))
                .await
                .unwrap_or_else(|e| Response::Error { message: format!("internal error: {e}") }),
            (Ok(()), Err(e)) => Response::Error { message: format!("bad request: {e}") },
        },
    };
    answer(reader.into_inner(), &response).await;
}

/// Writes `response` and a newline, giving up on a client that does not
/// take it within [`RESPONSE_TIMEOUT`].
async fn answer(mut stream: UnixStream, response: &Response) {
    let mut out = serde_json::to_vec(response).unwrap_or_default();
    out.push(b'\n');
    match tokio::time::timeout(RESPONSE_TIMEOUT, stream.write_all(&out)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!("control socket: writing an answer: {e}"),
        Err(_) => debug!("control socket: a client took no answer within {RESPONSE_TIMEOUT:?}; dropped"),
    }
}

/// Root, or a member of `group` (by its effective or a supplementary gid,
/// as the kernel recorded them when the client connected).
fn allowed(stream: &UnixStream, group: Option<&ControlGroup>) -> Result<(), String> {
    let cred = stream.peer_cred().map_err(|e| format!("cannot read the client's credentials: {e}"))?;
    if cred.uid() == 0 {
        return Ok(());
    }
    let pid = cred.pid().map_or_else(String::new, |p| format!(" (pid {p})"));
    let Some(group) = group else {
        return Err(format!("uid {}{pid} is not root; only root may use this socket", cred.uid()));
    };
    if cred.gid() == group.gid || peer_groups(stream).is_ok_and(|groups| groups.contains(&group.gid)) {
        return Ok(());
    }
    Err(format!("uid {}{pid} is neither root nor in the group {} (control_group)", cred.uid(), group.name))
}

/// The client's supplementary groups (`SO_PEERGROUPS`, Linux 4.13; no
/// crate at hand wraps it).
fn peer_groups(stream: &UnixStream) -> std::io::Result<Vec<libc::gid_t>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `groups`, and
        // sets `len` to what it wrote (or, with ERANGE, to what it needs).
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let count = len as usize / size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(count);
            return Ok(groups);
        }
        let error = std::io::Error::last_os_error();
        // NGROUPS_MAX is 65536: a larger answer is not the kernel's.
        if error.raw_os_error() != Some(libc::ERANGE) || count <= groups.len() || count > 65536 {
            return Err(error);
        }
        groups.resize(count, 0);
    }
}

/// Binds the socket where nobody else can reach it — in a directory of
/// mode 0700 beside `socket` — sets its mode and group there, and only then
/// renames it to `socket` (replacing a stale one from a crash atomically).
/// So the socket never has its name with a looser mode, whatever the
/// umask; the umask, which is the whole process's, stays as it is.
pub fn listen(socket: &Path, group: Option<&ControlGroup>) -> Result<UnixListener> {
    use std::os::unix::fs::DirBuilderExt as _;
    let parent = socket.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    let staging = staging_dir(socket);
    // Left over by an lbd that died while binding (the instance lock says
    // no other lbd is at it now).
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::DirBuilder::new().mode(0o700).create(&staging).with_context(|| format!("create {}", staging.display()))?;
    let result = (|| {
        let bound = staging.join(socket.file_name().unwrap_or("lbd.sock".as_ref()));
        let listener = UnixListener::bind(&bound).with_context(|| format!("bind {}", bound.display()))?;
        let mode = match group {
            Some(group) => {
                std::os::unix::fs::chown(&bound, Some(0), Some(group.gid))
                    .with_context(|| format!("give {} to the group {}", bound.display(), group.name))?;
                0o660
            }
            None => 0o600,
        };
        std::fs::set_permissions(&bound, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", bound.display()))?;
        std::fs::rename(&bound, socket).with_context(|| format!("move the socket to {}", socket.display()))?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// `<socket>.bind/`: where the socket is made before it gets its name.
pub fn staging_dir(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".bind");
    PathBuf::from(name)
}

/// A log line at most once per `period`, telling how many were left out.
struct Throttled {
    period: Duration,
    last: Option<Instant>,
    left_out: u64,
}

impl Throttled {
    fn new(period: Duration) -> Self {
        Self { period, last: None, left_out: 0 }
    }

    /// Runs `log` with the number left out since it last ran, unless it
    /// ran less than `period` ago.
    fn run(&mut self, log: impl FnOnce(u64)) {
        let now = Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < self.period) {
            self.left_out += 1;
            return;
        }
        log(self.left_out);
        self.last = Some(now);
        self.left_out = 0;
    }
}

fn more_since(left_out: u64) -> String {
    if left_out == 0 { String::new() } else { format!(" ({left_out} more since the last such line)") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttled_lines_say_how_many_were_left_out() {
        let mut t = Throttled::new(Duration::from_secs(3600));
        let mut seen = Vec::new();
        for _ in 0..5 {
            t.run(|more| seen.push(more));
        }
        assert_eq!(seen, [0]);
        t.last = Some(Instant::now() - Duration::from_secs(3601));
        t.run(|more| seen.push(more));
        assert_eq!(seen, [0, 4]);
    }

    fn socket_in_temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lbd-control-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("lbd.sock")
    }

    async fn ask_raw(socket: &Path, bytes: &[u8]) -> String {
        let mut stream = UnixStream::connect(socket).await.unwrap();
        // The request may be refused before it is all written.
        let _ = stream.write_all(bytes).await;
        let _ = stream.shutdown().await;
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer).await;
        answer
    }

    #[tokio::test]
    async fn requests_are_bounded_and_answered() {
        let socket = socket_in_temp("bounded");
        let listener = listen(&socket, None).unwrap();
        let server = tokio::spawn(async move {
            serve(listener, None, |request| match request {
                Request::Timeouts => Response::Done,
                _ => Response::Error { message: "unexpected".into() },
            })
            .await
        });
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!staging_dir(&socket).exists());
        assert_eq!(ask_raw(&socket, b"{\"request\":\"timeouts\"}\n").await, "{\"response\":\"done\"}\n");
        let answer = ask_raw(&socket, b"{\"request\":").await;
        assert!(answer.contains("bad request"), "{answer}");
        let huge = vec![b' '; MAX_REQUEST_BYTES as usize + 10];
        let answer = ask_raw(&socket, &huge).await;
        assert!(answer.contains("request too long"), "{answer}");
        // Still serving.
        assert_eq!(ask_raw(&socket, b"{\"request\":\"timeouts\"}\n").await, "{\"response\":\"done\"}\n");
        server.abort();
        let _ = std::fs::remove_dir_all(socket.parent().unwrap());
    }
}
