//! The control socket, lbd's side: lbd serves its live state on a Unix
//! socket (mode 0600), lbctl asks. One JSON request per connection, one
//! JSON response; the protocol is lb-ipvsadm's `control`.

use std::{os::unix::fs::PermissionsExt as _, path::Path};

use anyhow::{Context as _, Result};
use lb_ipvsadm::control::{Request, Response};

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
