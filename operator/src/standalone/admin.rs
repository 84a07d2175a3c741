//! Standalone mode's admin API: `/healthz`; `/readyz` (every Gateway's Envoy accepted its current
//! configuration and reports itself ready); `/status` (the Gateway API status of every resource, as the controller would
//! write it, plus the files that failed to load); `/metrics`; `/config_dump` (each proxy's own
//! Envoy config dump, by Gateway).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::StatusCode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use super::admin_client;
use super::config_dir::ReloadReport;
use super::envoy::{RestartCounter, admin_address};
use crate::control_plane::programmed::ProgrammedState;
use crate::control_plane::run::stamp_transition_times;
use crate::serve::{Handler, HttpResponse, reply, serve_with};
use crate::translate::Translation;

/// What the admin API shows; the main loop keeps it current.
#[derive(Debug, Default)]
pub struct AdminState {
    /// The last reload's outcome (failing files, untranslated documents).
    pub files: ReloadReport,
    /// `/status` body without the files part.
    status: Value,
    /// Whether every Gateway's proxies ACKed their current configuration.
    ready: bool,
    /// Per Gateway, where its Envoy writes its admin address.
    pub envoy_admin: BTreeMap<String, PathBuf>,
    loaded: bool,
}

impl AdminState {
    /// Re-derives status and readiness from the last translation and the proxies' answers.
    pub fn update(&mut self, translation: Option<&Translation>, programmed: &ProgrammedState) {
        let Some(t) = translation else {
            return;
        };
        self.loaded = true;
        let mut gateways = serde_json::Map::new();
        for (key, status) in &t.status.gateways {
            let mut status = status.clone();
            programmed.refine(key, &mut status);
            gateways.insert(
                key.clone(),
                serde_json::to_value(status).unwrap_or_default(),
            );
        }
        let mut next = stamp_transition_times(json!({
            "gatewayClasses": t.status.gateway_classes,
            "gateways": gateways,
            "httpRoutes": t.status.http_routes,
            "grpcRoutes": t.status.grpc_routes,
            "tlsRoutes": t.status.tls_routes,
            "tcpRoutes": t.status.tcp_routes,
            "udpRoutes": t.status.udp_routes,
            "backendTLSPolicies": t.status.backend_tls_policies,
            "backendTrafficPolicies": t.status.policies.backend_traffic_policies,
            "securityPolicies": t.status.policies.security_policies,
            "clientTrafficPolicies": t.status.client_traffic_policies,
        }));
        keep_transition_times(&self.status, &mut next);
        self.status = next;
        self.ready = t.gateways.iter().all(|g| programmed.current(&g.name));
    }

    fn status_body(&self) -> Value {
        let mut body = self.status.clone();
        if !body.is_object() {
            body = json!({});
        }
        body["files"] = json!({"errors": self.files.errors, "skipped": self.files.skipped});
        body
    }
}

/// A condition's `lastTransitionTime` moves only when its status does: where `previous` has
/// the same condition (same place, same type) with the same status, its time is kept.
fn keep_transition_times(previous: &Value, next: &mut Value) {
    match (previous, next) {
        (Value::Object(old), Value::Object(new)) => {
            for (key, child) in new.iter_mut() {
                if key == "conditions"
                    && let (Some(old), Some(new)) = (
                        old.get("conditions").and_then(Value::as_array),
                        child.as_array_mut(),
                    )
                {
                    for condition in new.iter_mut() {
                        let same = old.iter().find(|o| {
                            o["type"] == condition["type"] && o["status"] == condition["status"]
                        });
                        if let Some(same) = same {
                            condition["lastTransitionTime"] = same["lastTransitionTime"].clone();
                        }
                    }
                } else if let Some(old_child) = old.get(key) {
                    keep_transition_times(old_child, child);
                }
            }
        }
        (Value::Array(old), Value::Array(new)) => {
            for (old_child, child) in old.iter().zip(new.iter_mut()) {
                keep_transition_times(old_child, child);
            }
        }
        _ => {}
    }
}

/// Standalone metrics (prefix `eg_operator_standalone`).
#[derive(Debug)]
pub struct StandaloneMetrics {
    registry: Registry,
    pub translations: Counter,
    pub translation_duration: Histogram,
    pub gateways: Gauge,
    pub config_errors: Gauge,
    pub envoy_restarts: RestartCounter,
}

impl Default for StandaloneMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("eg_operator_standalone");
        let translations = Counter::default();
        registry.register(
            "translations",
            "Configuration changes translated and published",
            translations.clone(),
        );
        // 0.1 ms .. ~1.6 s.
        let translation_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 15));
        registry.register(
            "translation_duration_seconds",
            "Time from reading changed files to publishing their configuration",
            translation_duration.clone(),
        );
        let gateways = Gauge::default();
        registry.register("gateways", "Gateways served", gateways.clone());
        let config_errors = Gauge::default();
        registry.register(
            "config_file_errors",
            "Manifest files that currently fail to load (their last good version serves)",
            config_errors.clone(),
        );
        let envoy_restarts = RestartCounter::default();
        registry.register(
            "envoy_restarts",
            "Envoy processes that exited and were restarted, by Gateway",
            envoy_restarts.clone(),
        );
        Self {
            registry,
            translations,
            translation_duration,
            gateways,
            config_errors,
            envoy_restarts,
        }
    }
}

impl StandaloneMetrics {
    pub fn observe_translation(&self, elapsed: Duration, gateways: usize) {
        self.translations.inc();
        self.translation_duration.observe(elapsed.as_secs_f64());
        self.gateways
            .set(i64::try_from(gateways).unwrap_or(i64::MAX));
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn json_reply(status: StatusCode, body: &Value) -> HttpResponse {
    reply(
        status,
        "application/json",
        serde_json::to_string_pretty(body).unwrap_or_default() + "\n",
    )
}

async fn respond(
    path: &str,
    state: &Mutex<AdminState>,
    metrics: &StandaloneMetrics,
) -> HttpResponse {
    let lock = || state.lock().unwrap_or_else(|p| p.into_inner());
    match path {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            let (accepted, admins) = {
                let s = lock();
                (s.loaded && s.ready, s.envoy_admin.clone())
            };
            // An ACK says Envoy accepted the configuration; `/ready` that its listeners have
            // finished warming and serve it.
            let mut serving = true;
            for path in admins.values() {
                let live = match admin_address(path) {
                    Some(addr) => matches!(
                        admin_client::request(addr, "GET", "/ready").await,
                        Ok((200, _))
                    ),
                    None => false,
                };
                serving &= live;
            }
            if accepted && serving {
                reply(StatusCode::OK, "text/plain", "ok\n".into())
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "waiting for every Gateway's Envoy to accept its configuration\n".into(),
                )
            }
        }
        "/status" => json_reply(StatusCode::OK, &lock().status_body()),
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        "/config_dump" => {
            let admins = lock().envoy_admin.clone();
            let mut dumps = serde_json::Map::new();
            for (gateway, path) in admins {
                let dump = match admin_address(&path) {
                    None => json!({"error": "Envoy is not listening yet"}),
                    Some(addr) => match admin_client::request(addr, "GET", "/config_dump").await {
                        Ok((200, body)) => serde_json::from_str(&body)
                            .unwrap_or_else(|e| json!({"error": e.to_string()})),
                        Ok((code, body)) => json!({"error": format!("HTTP {code}: {body}")}),
                        Err(e) => json!({"error": e.to_string()}),
                    },
                };
                dumps.insert(gateway, dump);
            }
            json_reply(StatusCode::OK, &Value::Object(dumps))
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// Serves the admin API on `addr` until the task is dropped.
pub async fn serve(
    addr: SocketAddr,
    state: Arc<Mutex<AdminState>>,
    metrics: Arc<StandaloneMetrics>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let handler: Handler = Arc::new(move |path: String| {
        let (state, metrics) = (state.clone(), metrics.clone());
        Box::pin(async move { respond(&path, &state, &metrics).await })
    });
    serve_with(addr, handler).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_times_move_only_with_status() {
        let previous = json!({"gateways": {"a/g": {"conditions": [
            {"type": "Accepted", "status": "True", "lastTransitionTime": "t0"},
            {"type": "Programmed", "status": "False", "lastTransitionTime": "t0"}
        ]}}});
        let mut next = json!({"gateways": {"a/g": {"conditions": [
            {"type": "Accepted", "status": "True", "lastTransitionTime": "t1"},
            {"type": "Programmed", "status": "True", "lastTransitionTime": "t1"}
        ]}}});
        keep_transition_times(&previous, &mut next);
        let c = &next["gateways"]["a/g"]["conditions"];
        assert_eq!(c[0]["lastTransitionTime"], "t0");
        assert_eq!(c[1]["lastTransitionTime"], "t1");
    }
}
