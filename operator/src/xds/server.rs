//! The ADS gRPC server (I/O shell): one task per proxy stream moves messages between tonic, the
//! snapshot store and the sans-IO [`protocol`](super::protocol) state, which decides every
//! response. Proxies are grouped by `node.cluster` (`namespace/gateway`): each group sees only
//! its own Gateway's snapshot. ACKs and NACKs are published as [`ProxyEvent`]s for status.
//!
//! `node.cluster` is the proxy's own claim. Before anything is served, the claim is checked
//! against the peer's client certificate by [`identity::authorize`](super::identity::authorize):
//! a proxy holding Gateway A's certificate that claims Gateway B is refused (PermissionDenied, a
//! [`ProxyEvent::Refused`] and a warning naming both), so it receives nothing.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    Resource as PbResource,
};
use envoy_types::pb::google::protobuf::Any;
use futures::Stream;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::identity::{PeerPolicy, authorize};
use super::protocol::{
    DeltaConnection, DeltaRequest, DeltaResponse, ProtocolError, ProtocolEvent, Snapshot,
    SotwConnection, SotwRequest, SotwResponse,
};

/// What happened on a proxy's stream, for Gateway status (Programmed after ACK, NACK messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyEvent {
    Connected {
        gateway: String,
        node: String,
    },
    Ack {
        gateway: String,
        node: String,
        type_url: String,
        version: String,
    },
    Nack {
        gateway: String,
        node: String,
        type_url: String,
        version: String,
        message: String,
    },
    Disconnected {
        gateway: String,
        node: String,
    },
    /// A stream claiming `gateway` was refused before anything was served; `reason` names the
    /// certified and the claimed Gateway, or what was missing.
    Refused {
        gateway: String,
        node: String,
        category: &'static str,
        reason: String,
    },
}

/// The latest snapshot per Gateway; streams watch the one of their Gateway.
#[derive(Debug, Clone, Default)]
pub struct SnapshotStore {
    gateways: Arc<Mutex<HashMap<String, watch::Sender<Arc<Snapshot>>>>>,
}

impl SnapshotStore {
    fn sender(&self, gateway: &str) -> watch::Sender<Arc<Snapshot>> {
        let mut all = self.gateways.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(gateway.to_owned())
            .or_insert_with(|| watch::channel(Arc::new(Snapshot::default())).0)
            .clone()
    }

    /// Publishes `snapshot` for `gateway` (`namespace/name`).
    pub fn set(&self, gateway: &str, snapshot: Snapshot) {
        self.sender(gateway).send_replace(Arc::new(snapshot));
    }

    /// The current snapshot of `gateway` and its future changes.
    pub fn watch(&self, gateway: &str) -> watch::Receiver<Arc<Snapshot>> {
        self.sender(gateway).subscribe()
    }
}

/// The ADS service.
#[derive(Debug, Clone)]
pub struct AdsServer {
    store: SnapshotStore,
    events: broadcast::Sender<ProxyEvent>,
    peers: PeerPolicy,
}

impl AdsServer {
    /// A server without TLS (Unix socket, local development): `node.cluster` is trusted, and a
    /// peer presenting a certificate is refused (see [`PeerPolicy::TrustNodeCluster`]).
    pub fn new(store: SnapshotStore) -> Self {
        Self::with_peer_policy(store, PeerPolicy::TrustNodeCluster)
    }

    /// A server whose streams are authorized by `peers`; a mutual-TLS server passes
    /// [`PeerPolicy::Certificate`].
    pub fn with_peer_policy(store: SnapshotStore, peers: PeerPolicy) -> Self {
        Self {
            store,
            events: broadcast::channel(1024).0,
            peers,
        }
    }

    /// Every proxy event from now on.
    pub fn events(&self) -> broadcast::Receiver<ProxyEvent> {
        self.events.subscribe()
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn node_identity(node: Option<&Node>) -> Option<(String, String)> {
    let node = node?;
    (!node.cluster.is_empty()).then(|| (node.cluster.clone(), node.id.clone()))
}

fn publish(events: &broadcast::Sender<ProxyEvent>, gateway: &str, node: &str, e: ProtocolEvent) {
    let event = match e {
        ProtocolEvent::Ack { type_url, version } => ProxyEvent::Ack {
            gateway: gateway.to_owned(),
            node: node.to_owned(),
            type_url,
            version,
        },
        ProtocolEvent::Nack {
            type_url,
            version,
            message,
        } => ProxyEvent::Nack {
            gateway: gateway.to_owned(),
            node: node.to_owned(),
            type_url,
            version,
            message,
        },
    };
    // No subscriber is fine: status may not be running (standalone tools, tests).
    let _ = events.send(event);
}

fn sotw_response(r: SotwResponse) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: r.version_info,
        resources: r
            .resources
            .into_iter()
            .map(|res| Any {
                type_url: r.type_url.clone(),
                value: res.body.to_vec(),
            })
            .collect(),
        type_url: r.type_url,
        nonce: r.nonce,
        ..DiscoveryResponse::default()
    }
}

fn delta_response(r: DeltaResponse) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        system_version_info: r.system_version_info,
        resources: r
            .resources
            .into_iter()
            .map(|res| PbResource {
                name: res.name.clone(),
                version: res.version,
                resource: Some(Any {
                    type_url: r.type_url.clone(),
                    value: res.body.to_vec(),
                }),
                ..PbResource::default()
            })
            .collect(),
        type_url: r.type_url,
        removed_resources: r.removed_resources,
        nonce: r.nonce,
        ..DeltaDiscoveryResponse::default()
    }
}

/// What the stream driver needs of a protocol flavour: the sans-IO connection plus the
/// conversions between its plain types and Envoy's protobufs.
trait Flavour: Send + 'static {
    type PbRequest: Send + 'static;
    type PbResponse: Send + 'static;
    type Request: Send;
    type Response: Send;
    fn new() -> Self;
    fn node(req: &Self::PbRequest) -> Option<&Node>;
    fn decode(req: Self::PbRequest) -> Self::Request;
    fn encode(resp: Self::Response) -> Self::PbResponse;
    fn on_request(&mut self, req: Self::Request) -> Result<Option<Self::Response>, ProtocolError>;
    fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Vec<Self::Response>;
    fn drain_events(&mut self) -> Vec<ProtocolEvent>;
}

impl Flavour for SotwConnection {
    type PbRequest = DiscoveryRequest;
    type PbResponse = DiscoveryResponse;
    type Request = SotwRequest;
    type Response = SotwResponse;
    fn new() -> Self {
        SotwConnection::new()
    }
    fn node(req: &DiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }
    fn decode(req: DiscoveryRequest) -> SotwRequest {
        SotwRequest {
            type_url: req.type_url,
            version_info: req.version_info,
            resource_names: req.resource_names,
            response_nonce: req.response_nonce,
            error_detail: req.error_detail.map(|s| s.message),
        }
    }
    fn encode(resp: SotwResponse) -> DiscoveryResponse {
        sotw_response(resp)
    }
    fn on_request(&mut self, req: SotwRequest) -> Result<Option<SotwResponse>, ProtocolError> {
        SotwConnection::on_request(self, req)
    }
    fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Vec<SotwResponse> {
        SotwConnection::on_snapshot(self, snapshot)
    }
    fn drain_events(&mut self) -> Vec<ProtocolEvent> {
        SotwConnection::drain_events(self)
    }
}

impl Flavour for DeltaConnection {
    type PbRequest = DeltaDiscoveryRequest;
    type PbResponse = DeltaDiscoveryResponse;
    type Request = DeltaRequest;
    type Response = DeltaResponse;
    fn new() -> Self {
        DeltaConnection::new()
    }
    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }
    fn decode(req: DeltaDiscoveryRequest) -> DeltaRequest {
        DeltaRequest {
            type_url: req.type_url,
            resource_names_subscribe: req.resource_names_subscribe,
            resource_names_unsubscribe: req.resource_names_unsubscribe,
            initial_resource_versions: req.initial_resource_versions.into_iter().collect(),
            response_nonce: req.response_nonce,
            error_detail: req.error_detail.map(|s| s.message),
        }
    }
    fn encode(resp: DeltaResponse) -> DeltaDiscoveryResponse {
        delta_response(resp)
    }
    fn on_request(&mut self, req: DeltaRequest) -> Result<Option<DeltaResponse>, ProtocolError> {
        DeltaConnection::on_request(self, req)
    }
    fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Vec<DeltaResponse> {
        DeltaConnection::on_snapshot(self, snapshot)
    }
    fn drain_events(&mut self) -> Vec<ProtocolEvent> {
        DeltaConnection::drain_events(self)
    }
}

impl AdsServer {
    /// Drives one ADS stream: requests and snapshot changes in, responses and events out.
    async fn serve_stream<F: Flavour>(
        &self,
        request: Request<Streaming<F::PbRequest>>,
    ) -> Result<Response<ResponseStream<F::PbResponse>>, Status>
    where
        Streaming<F::PbRequest>: Send,
    {
        // The chain rustls verified at the handshake (leaf first); none without TLS.
        let peer_certs = request.peer_certs();
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("stream closed before the first request"))?;
        let (gateway, node) = node_identity(F::node(&first)).ok_or_else(|| {
            Status::invalid_argument(
                "the first request must carry node.cluster (namespace/gateway)",
            )
        })?;
        if let Err(e) = authorize(
            &self.peers,
            peer_certs.as_deref().map(Vec::as_slice),
            &gateway,
        ) {
            tracing::warn!(
                gateway = %gateway,
                node = %node,
                category = e.category(),
                error = %e,
                "xDS stream refused"
            );
            let _ = self.events.send(ProxyEvent::Refused {
                gateway,
                node,
                category: e.category(),
                reason: e.to_string(),
            });
            return Err(Status::permission_denied(e.to_string()));
        }
        let mut snapshots = self.store.watch(&gateway);
        let events = self.events.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let _ = events.send(ProxyEvent::Connected {
                gateway: gateway.clone(),
                node: node.clone(),
            });
            let mut conn = F::new();
            // Nothing is subscribed yet, so this only primes the connection's view.
            let primed = conn.on_snapshot(snapshots.borrow_and_update().clone());
            debug_assert!(primed.is_empty());
            let mut next = Some(first);
            'stream: loop {
                let mut responses = Vec::new();
                if let Some(req) = next.take() {
                    match conn.on_request(F::decode(req)) {
                        Ok(r) => responses.extend(r),
                        Err(e) => {
                            let _ = tx.send(Err(Status::invalid_argument(e.to_string()))).await;
                            break;
                        }
                    }
                }
                for e in conn.drain_events() {
                    publish(&events, &gateway, &node, e);
                }
                for r in responses {
                    if tx.send(Ok(F::encode(r))).await.is_err() {
                        break 'stream;
                    }
                }
                tokio::select! {
                    msg = inbound.message() => match msg {
                        Ok(Some(req)) => next = Some(req),
                        _ => break,
                    },
                    changed = snapshots.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let snapshot = snapshots.borrow_and_update().clone();
                        for r in conn.on_snapshot(snapshot) {
                            if tx.send(Ok(F::encode(r))).await.is_err() {
                                break 'stream;
                            }
                        }
                    }
                }
            }
            let _ = events.send(ProxyEvent::Disconnected { gateway, node });
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        self.serve_stream::<SotwConnection>(request).await
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        self.serve_stream::<DeltaConnection>(request).await
    }
}
