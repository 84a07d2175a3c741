//! The proxies' shutdown manager (`eg-operator shutdown-manager`), a native sidecar of every
//! proxy pod. Envoy exits at once on SIGTERM, dropping open connections; so the Envoy
//! container's preStop hook calls this sidecar's `/shutdown`, which starts a graceful drain
//! through Envoy's admin API (connections are told to close: `Connection: close`, HTTP/2
//! GOAWAY) and answers once the connections are gone — never before the minimum drain
//! duration, which lets load balancers stop sending, and never after the drain timeout. Only
//! then does the kubelet send SIGTERM.
//!
//! [`drain_finished`] is the pure decision; the rest moves requests and polls the admin API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use tokio::sync::OnceCell;

use crate::serve::{Handler, reply, serve_with};
use crate::standalone::admin_client;

/// Path the Envoy container's preStop hook calls.
pub const SHUTDOWN_PATH: &str = "/shutdown";
/// Port of the shutdown manager in every proxy pod.
pub const SHUTDOWN_PORT: u16 = 19002;

/// How long a drain lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainPolicy {
    /// Keep serving at least this long (load balancers are still sending).
    pub min: Duration,
    /// Give up waiting for connections after this long.
    pub timeout: Duration,
}

/// Whether a drain that started `elapsed` ago is over, with `connections` still open
/// (`None`: unknown, the admin API did not answer).
pub fn drain_finished(policy: DrainPolicy, elapsed: Duration, connections: Option<u64>) -> bool {
    if elapsed >= policy.timeout.max(policy.min) {
        return true;
    }
    elapsed >= policy.min && connections == Some(0)
}

/// Open downstream connections, from Envoy's `server.total_connections` gauge.
async fn open_connections(admin: SocketAddr) -> Option<u64> {
    let (status, body) =
        admin_client::request(admin, "GET", "/stats?filter=%5Eserver.total_connections%24")
            .await
            .ok()?;
    if status != 200 {
        return None;
    }
    body.lines()
        .find_map(|l| l.strip_prefix("server.total_connections: "))
        .and_then(|v| v.trim().parse().ok())
}

/// Starts the drain and waits until it is over; returns how many connections were left.
pub async fn drain(admin: SocketAddr, policy: DrainPolicy) -> Option<u64> {
    let started = tokio::time::Instant::now();
    match admin_client::request(admin, "POST", "/drain_listeners?graceful").await {
        Ok((200, _)) => tracing::info!(%admin, ?policy, "draining Envoy's listeners"),
        Ok((status, body)) => tracing::warn!(%admin, status, %body, "Envoy refused to drain"),
        Err(e) => tracing::warn!(%admin, error = %e, "Envoy's admin API is unreachable"),
    }
    loop {
        let connections = open_connections(admin).await;
        if drain_finished(policy, started.elapsed(), connections) {
            tracing::info!(?connections, elapsed = ?started.elapsed(), "drain finished");
            return connections;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Serves `/shutdown` (one drain, however many callers) and `/healthz` until the process ends.
///
/// # Errors
///
/// When `listen` cannot be bound.
pub async fn run(
    listen: SocketAddr,
    admin: SocketAddr,
    policy: DrainPolicy,
) -> std::io::Result<SocketAddr> {
    let done: Arc<OnceCell<Option<u64>>> = Arc::new(OnceCell::new());
    let handler: Handler = Arc::new(move |path: String| {
        let done = done.clone();
        Box::pin(async move {
            match path.as_str() {
                SHUTDOWN_PATH => {
                    let left = *done.get_or_init(|| drain(admin, policy)).await;
                    let body = match left {
                        Some(n) => format!("drained; {n} connections left\n"),
                        None => "drained; connections unknown\n".to_owned(),
                    };
                    reply(StatusCode::OK, "text/plain", body)
                }
                "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
                _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
            }
        })
    });
    let (bound, task) = serve_with(listen, handler).await?;
    tracing::info!(%bound, %admin, ?policy, "shutdown manager ready");
    let _ = task.await;
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: DrainPolicy = DrainPolicy {
        min: Duration::from_secs(5),
        timeout: Duration::from_secs(60),
    };

    #[test]
    fn the_minimum_is_always_served() {
        assert!(!drain_finished(POLICY, Duration::from_secs(1), Some(0)));
        assert!(drain_finished(POLICY, Duration::from_secs(5), Some(0)));
    }

    #[test]
    fn open_connections_are_waited_for_until_the_timeout() {
        assert!(!drain_finished(POLICY, Duration::from_secs(30), Some(3)));
        assert!(!drain_finished(POLICY, Duration::from_secs(30), None));
        assert!(drain_finished(POLICY, Duration::from_secs(60), Some(3)));
        assert!(drain_finished(POLICY, Duration::from_secs(60), None));
    }

    #[test]
    fn a_timeout_below_the_minimum_waits_for_the_minimum() {
        let policy = DrainPolicy {
            min: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
        };
        assert!(!drain_finished(policy, Duration::from_secs(5), Some(0)));
        assert!(drain_finished(policy, Duration::from_secs(10), Some(7)));
    }
}
