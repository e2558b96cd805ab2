//! The HTTP endpoint Prometheus scrapes: `GET /metrics`, answered from the
//! latest snapshot the daemon published. Slow or idle clients cannot hold
//! it up: each connection has its own task, a head must arrive within
//! [`HEADER_TIMEOUT`], and at most [`MAX_CLIENTS`] are served at once.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Bytes, header, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::watch};
use tracing::{debug, warn};

use super::{Snapshot, encode};

const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CLIENTS: usize = 16;

/// Binds `address` (at startup, so that a taken port stops lbd).
pub async fn bind(address: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(address).await.with_context(|| format!("metrics: cannot listen on {address}"))
}

/// Serves scrapes on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, snapshots: watch::Receiver<Arc<Snapshot>>) {
    let clients = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    loop {
        let Ok(permit) = clients.clone().acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!("metrics: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let snapshots = snapshots.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |request| {
                let response = respond(&request, &snapshots.borrow().clone());
                async move { Ok::<_, Infallible>(response) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                debug!("metrics: a client: {e}");
            }
        });
    }
}

fn respond<B>(request: &Request<B>, snapshot: &Snapshot) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = content_type.parse() {
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        response
    };
    let text = "text/plain; charset=utf-8";
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, text, "only GET\n".into());
    }
    match request.uri().path() {
        "/metrics" => match encode::encode(snapshot) {
            Ok(body) => reply(StatusCode::OK, encode::CONTENT_TYPE, body),
            Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, text, format!("encoding the metrics: {e}\n")),
        },
        "/" => reply(StatusCode::OK, text, "lbd: metrics at /metrics\n".into()),
        _ => reply(StatusCode::NOT_FOUND, text, "not found; metrics at /metrics\n".into()),
    }
}
