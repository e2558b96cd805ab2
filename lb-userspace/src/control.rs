//! The control socket: lbd serves its live state on a Unix socket (mode
//! 0600), lbctl asks. One JSON request per connection, one JSON response.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use lb_ipvsadm::snapshot::{Connection, Table, Timeouts};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// The virtual-server table with counters and rates.
    Table,
    /// The connection table.
    Connections,
    Timeouts,
    /// The datapath's verdict counters.
    Counters,
    /// ipvsadm commands (as arguments, numeric), carried out all or none.
    Apply { commands: Vec<Vec<String>> },
    /// The VRRP instances.
    Vrrp,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case")]
pub enum Response {
    Table { table: Table },
    Connections { connections: Vec<Connection> },
    Timeouts { timeouts: Timeouts },
    Counters { counters: BTreeMap<String, u64> },
    /// The commands were carried out.
    Done,
    Vrrp { instances: Vec<crate::vrrp::VrrpStatus> },
    /// A command was refused and nothing changed: ipvsadm's message and
    /// exit status.
    Refused { message: String, exit_code: i32 },
    Error { message: String },
}

/// Sends one request to lbd and waits for the answer.
pub fn ask(socket: &Path, request: &Request) -> Result<Response> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!("cannot reach lbd at {} (is it running? --socket sets the path)", socket.display())
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    if answer.is_empty() {
        bail!("lbd closed the connection without an answer");
    }
    let response: Response = serde_json::from_str(&answer).context("lbd's answer is not valid")?;
    if let Response::Error { message } = &response {
        bail!("{message}");
    }
    Ok(response)
}

/// Serves requests on `socket` until the task is dropped; `handle` answers
/// each one.
pub async fn serve<F>(socket: &Path, handle: F) -> Result<()>
where
    F: Fn(Request) -> Response + Send + Sync + 'static,
{
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    // A stale socket from a previous run would make bind fail.
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket).with_context(|| format!("bind {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    let handle = std::sync::Arc::new(handle);
    loop {
        let (stream, _) = listener.accept().await?;
        let handle = handle.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(read);
            if reader.read_line(&mut line).await.is_err() {
                return;
            }
            let response = match serde_json::from_str::<Request>(&line) {
                Ok(request) => {
                    let handle = handle.clone();
                    tokio::task::spawn_blocking(move || handle(request))
                        .await
                        .unwrap_or_else(|e| Response::Error { message: format!("internal error: {e}") })
                }
                Err(e) => Response::Error { message: format!("bad request: {e}") },
            };
            let mut out = serde_json::to_string(&response).unwrap_or_default();
            out.push('\n');
            let _ = write.write_all(out.as_bytes()).await;
        });
    }
}
