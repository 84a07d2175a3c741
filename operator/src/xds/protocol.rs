//! Sans-IO, per-connection state of Envoy's Aggregated Discovery Service (ADS), for both the
//! state-of-the-world (SotW) and the incremental (delta) protocol variants.
//!
//! This module owns every *protocol* decision for one proxy connection: which subscription a
//! request expresses, whether a request is an ACK, a NACK or stale, what (if anything) must be
//! sent when a request or a new [`Snapshot`] arrives, in which order types are pushed, and which
//! nonces are issued. It deliberately owns nothing else: no async runtime, no gRPC, no protobuf.
//! The gRPC shell converts envoy protos to and from the plain types here and forwards the
//! returned responses verbatim.
//!
//! Keeping the state machine pure is what makes the protocol's corner cases (stale nonces,
//! NACK loops, reconnects, make-before-break ordering) testable with plain `#[test]`s, and lets
//! the shell stay a thin, obviously-correct loop.
//!
//! Decisions where the xDS spec leaves room are documented on the items that make them; the
//! important ones are: responses are pipelined (a new snapshot is pushed without waiting for the
//! previous ACK), a rejected configuration is never resent until the desired content changes,
//! and removals of clusters, endpoints and secrets are pushed only after listeners and routes
//! (see [`PUSH_ORDER`] and [`DEFERRED_REMOVAL_ORDER`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

/// A fully qualified xDS resource type URL, e.g. [`CLUSTER`].
pub type TypeUrl = String;

/// Cluster Discovery Service resources.
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// Endpoint Discovery Service resources.
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// Listener Discovery Service resources.
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// Route Discovery Service resources.
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// Secret Discovery Service resources.
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// Resource name that explicitly subscribes to every resource of a wildcard-capable type.
pub const WILDCARD: &str = "*";

/// Order in which a snapshot's additions and updates are pushed across types.
///
/// Dependencies point from later to earlier entries: listeners and clusters reference secrets,
/// endpoints belong to clusters, listeners reference route configurations and routes reference
/// clusters. Pushing the referenced resources first means that by the time Envoy sees a
/// listener or route that uses something new, that thing is already there (or at least already
/// warming), instead of traffic hitting a reference that does not resolve yet. This is the
/// "make before break" sequence recommended by the xDS protocol documentation. Types not listed
/// here are pushed afterwards, in type URL order.
pub const PUSH_ORDER: [&str; 5] = [SECRET, CLUSTER, ENDPOINT, LISTENER, ROUTE];

/// Types whose *removals* are held back until listeners and routes of the same snapshot have
/// been pushed, in this order.
///
/// Removing a cluster in the same step that adds its replacement would break the routes that
/// still point at it until the route update lands. So when a snapshot drops clusters, the SotW
/// CDS response first keeps the dropped clusters alongside the new ones and a second CDS
/// response after LDS/RDS drops them; in delta the removals simply travel in a later response.
pub const DEFERRED_REMOVAL_ORDER: [&str; 3] = [CLUSTER, ENDPOINT, SECRET];

/// Upper bound on distinct type URLs one connection may request.
///
/// Every requested type allocates state, and the type URL comes from the (untrusted) peer.
pub const MAX_TYPES_PER_CONNECTION: usize = 32;

/// Upper bound on delta responses remembered while awaiting their ACK/NACK, per type.
///
/// Envoy answers every response, so this only bites a peer that stopped answering; forgetting
/// the oldest entry merely turns its eventual answer into a stale one.
const MAX_IN_FLIGHT: usize = 64;

/// Whether an empty or `"*"` subscription means "everything of this type".
///
/// Only listeners and clusters are wildcard-capable: they are the roots of Envoy's config
/// graph, while endpoints, routes and secrets are always requested by the name a root uses.
pub fn is_wildcard_type(type_url: &str) -> bool {
    type_url == CLUSTER || type_url == LISTENER
}

/// One named, versioned xDS resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub name: String,
    /// Per-resource version (e.g. a content hash); equal versions mean equal content, which is
    /// what lets identical content be detected without looking at `body`.
    pub version: String,
    /// Serialized `google.protobuf.Any` payload, opaque to this module. Reference-counted:
    /// snapshots and responses copy resources freely, and a route table can be megabytes.
    pub body: bytes::Bytes,
}

impl Resource {
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        body: impl Into<bytes::Bytes>,
    ) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            body: body.into(),
        }
    }
}

/// The full desired state for one proxy, produced by the control plane: per type URL, the
/// resources by name, plus one overall snapshot version.
///
/// Map keys must equal the resources' `name`s; [`Snapshot::insert`] maintains that.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub version: String,
    pub resources: BTreeMap<TypeUrl, BTreeMap<String, Resource>>,
}

impl Snapshot {
    pub fn new(version: impl Into<String>) -> Self {
        Self {
            version: version.into(),
            resources: BTreeMap::new(),
        }
    }

    /// Adds or replaces a resource, returning the one it replaced.
    pub fn insert(&mut self, type_url: &str, resource: Resource) -> Option<Resource> {
        self.resources
            .entry(type_url.to_owned())
            .or_default()
            .insert(resource.name.clone(), resource)
    }
}

/// A SotW `DiscoveryRequest`, reduced to what the protocol logic needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SotwRequest {
    pub type_url: TypeUrl,
    pub version_info: String,
    pub resource_names: Vec<String>,
    pub response_nonce: String,
    /// `Some` makes the request a NACK; the shell flattens `google.rpc.Status` to its message.
    pub error_detail: Option<String>,
}

/// A SotW `DiscoveryResponse`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SotwResponse {
    pub type_url: TypeUrl,
    pub version_info: String,
    pub resources: Vec<Resource>,
    pub nonce: String,
}

/// A `DeltaDiscoveryRequest`, reduced to what the protocol logic needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeltaRequest {
    pub type_url: TypeUrl,
    pub resource_names_subscribe: Vec<String>,
    pub resource_names_unsubscribe: Vec<String>,
    /// Only honoured on the first request for a type, as the protocol specifies.
    pub initial_resource_versions: BTreeMap<String, String>,
    pub response_nonce: String,
    /// `Some` makes the request a NACK; the shell flattens `google.rpc.Status` to its message.
    pub error_detail: Option<String>,
}

/// A `DeltaDiscoveryResponse`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeltaResponse {
    pub type_url: TypeUrl,
    pub system_version_info: String,
    pub resources: Vec<Resource>,
    pub removed_resources: Vec<String>,
    pub nonce: String,
}

/// A rejection of a configuration by the proxy, which keeps running its last accepted one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nack {
    /// The snapshot version the proxy rejected.
    pub version: String,
    /// Envoy's error message, meant to be surfaced in status as-is.
    pub message: String,
}

/// What the proxy said about the configuration it was sent, for the shell to report in status:
/// a Gateway is Programmed only once its current config is ACKed, and a NACK carries Envoy's
/// error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtocolEvent {
    /// The proxy runs everything of `type_url` that snapshot `version` holds for it.
    Ack { type_url: TypeUrl, version: String },
    /// The proxy rejected the configuration of `type_url` from snapshot `version`.
    Nack {
        type_url: TypeUrl,
        version: String,
        message: String,
    },
}

/// A request that breaks the protocol; the shell should end the stream with an error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// ADS multiplexes all types on one stream, so a request without a type cannot be routed.
    #[error("request has an empty type_url, which ADS requires on every request")]
    EmptyTypeUrl,
    #[error("request for {type_url} exceeds the limit of {limit} resource types per connection")]
    TooManyTypes { type_url: TypeUrl, limit: usize },
}

impl ProtocolError {
    /// A stable, low-cardinality label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::EmptyTypeUrl => "protocol_violation",
            Self::TooManyTypes { .. } => "resource_limit",
        }
    }
}

/// Name → per-resource version: enough to tell whether content changed.
type Versions = BTreeMap<String, String>;

/// Which resources of one type the proxy wants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Subscription {
    wildcard: bool,
    names: BTreeSet<String>,
    /// Whether the proxy has ever named resources explicitly (SotW only). Until it does, an
    /// empty name list is the "legacy wildcard"; afterwards it means "nothing", as the protocol
    /// documentation prescribes.
    explicit: bool,
}

impl Subscription {
    fn covers(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// Applies a SotW request, whose `resource_names` always restate the whole interest.
    fn replace(&mut self, type_url: &str, resource_names: &[String]) {
        let wildcard_capable = is_wildcard_type(type_url);
        self.names.clear();
        if resource_names.is_empty() && !self.explicit {
            self.wildcard = wildcard_capable;
            return;
        }
        self.explicit = true;
        self.wildcard = false;
        for name in resource_names {
            if wildcard_capable && name == WILDCARD {
                self.wildcard = true;
            } else {
                // On types that are not wildcard-capable "*" is just a name no resource has.
                self.names.insert(name.clone());
            }
        }
    }
}

/// The snapshot's resources for a subscription, by name.
fn select<'a>(
    snapshot: &'a Snapshot,
    type_url: &str,
    subscription: &Subscription,
) -> BTreeMap<&'a str, &'a Resource> {
    let Some(all) = snapshot.resources.get(type_url) else {
        return BTreeMap::new();
    };
    if subscription.wildcard {
        all.iter().map(|(name, r)| (name.as_str(), r)).collect()
    } else {
        subscription
            .names
            .iter()
            .filter_map(|name| all.get_key_value(name.as_str()))
            .map(|(name, r)| (name.as_str(), r))
            .collect()
    }
}

fn versions_of(selected: &BTreeMap<&str, &Resource>) -> Versions {
    selected
        .iter()
        .map(|(name, r)| ((*name).to_owned(), r.version.clone()))
        .collect()
}

/// Subscribed types in push order: [`PUSH_ORDER`] first, anything else after, by URL.
fn ordered_types<'a>(types: impl Iterator<Item = &'a TypeUrl>) -> Vec<TypeUrl> {
    let mut ordered: Vec<TypeUrl> = types.cloned().collect();
    // Stable sort on top of the BTreeMap's URL order gives the URL order among unknown types.
    ordered.sort_by_key(|t| {
        PUSH_ORDER
            .iter()
            .position(|known| *known == t.as_str())
            .unwrap_or(PUSH_ORDER.len())
    });
    ordered
}

fn defers_removal(type_url: &str) -> bool {
    DEFERRED_REMOVAL_ORDER.contains(&type_url)
}

/// Nonces only need to be unique within a connection; a counter is also handy in logs because
/// it shows how far apart a stale answer and the latest response are.
fn issue_nonce(counter: &mut u64) -> String {
    *counter += 1;
    counter.to_string()
}

fn check_type_url(type_url: &str, known_types: usize, is_new: bool) -> Result<(), ProtocolError> {
    if type_url.is_empty() {
        return Err(ProtocolError::EmptyTypeUrl);
    }
    if is_new && known_types >= MAX_TYPES_PER_CONNECTION {
        return Err(ProtocolError::TooManyTypes {
            type_url: type_url.to_owned(),
            limit: MAX_TYPES_PER_CONNECTION,
        });
    }
    Ok(())
}

/// The proxy's verdicts on one type, shared by both protocol variants.
#[derive(Clone, Debug, Default)]
struct Verdicts {
    acked_version: Option<String>,
    /// Cleared by a later ACK: status wants "is the proxy rejecting this type now", not history.
    last_nack: Option<Nack>,
}

impl Verdicts {
    fn ack(&mut self, type_url: &str, version: String, events: &mut Vec<ProtocolEvent>) {
        self.last_nack = None;
        self.acked_version = Some(version.clone());
        events.push(ProtocolEvent::Ack {
            type_url: type_url.to_owned(),
            version,
        });
    }

    fn nack(
        &mut self,
        type_url: &str,
        version: String,
        message: String,
        events: &mut Vec<ProtocolEvent>,
    ) {
        events.push(ProtocolEvent::Nack {
            type_url: type_url.to_owned(),
            version: version.clone(),
            message: message.clone(),
        });
        self.last_nack = Some(Nack { version, message });
    }
}

// ---------------------------------------------------------------------------------------------
// State of the world
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, Default)]
struct SotwTypeState {
    subscription: Subscription,
    /// Nonce of the latest response; any request carrying another one is stale.
    latest_nonce: Option<String>,
    latest_version: String,
    /// Whether the latest response got its ACK/NACK. Envoy keeps quoting the nonce in later
    /// requests (e.g. to change its subscription); those must not count as verdicts again,
    /// least of all turn a NACKed response into an ACKed one.
    answered: bool,
    /// Content of the latest response as far as the current subscription is concerned, even if
    /// it was NACKed: comparing against it is what keeps a rejected config from being resent.
    sent: Option<Versions>,
    verdicts: Verdicts,
}

impl SotwTypeState {
    /// Sends the subscription's content if it differs from what the proxy was last given.
    ///
    /// `retain_from` is the previous snapshot when removals of this type are being deferred:
    /// resources the proxy was given from it that are gone now are kept one response longer.
    fn evaluate<'a>(
        &mut self,
        type_url: &str,
        snapshot: &'a Snapshot,
        retain_from: Option<&'a Snapshot>,
        nonce_counter: &mut u64,
    ) -> Option<SotwResponse> {
        let mut selected = select(snapshot, type_url, &self.subscription);
        // LDS and CDS responses are the complete set (omission deletes); other types are
        // incremental even in SotW (omission deletes nothing), so only new content matters.
        let complete_set = is_wildcard_type(type_url);
        if complete_set
            && let (Some(previous), Some(sent)) = (retain_from, &self.sent)
            && let Some(old) = previous.resources.get(type_url)
        {
            for (name, version) in sent {
                if let Some((name, resource)) = old.get_key_value(name.as_str())
                    && resource.version == *version
                {
                    selected.entry(name.as_str()).or_insert(resource);
                }
            }
        }
        let versions = versions_of(&selected);
        let changed = if complete_set {
            self.sent.as_ref() != Some(&versions)
        } else {
            let sent = self.sent.as_ref();
            versions
                .iter()
                .any(|(name, version)| sent.and_then(|s| s.get(name)) != Some(version))
        };
        if !changed {
            if !complete_set {
                // The proxy drops what it unsubscribed from, so forget those names: otherwise a
                // later re-subscription would look like content it already has.
                self.sent = Some(versions);
            }
            return None;
        }
        let nonce = issue_nonce(nonce_counter);
        self.latest_nonce = Some(nonce.clone());
        self.latest_version = snapshot.version.clone();
        self.answered = false;
        self.sent = Some(versions);
        Some(SotwResponse {
            type_url: type_url.to_owned(),
            version_info: snapshot.version.clone(),
            resources: selected.into_values().cloned().collect(),
            nonce,
        })
    }
}

/// Protocol state of one state-of-the-world ADS stream.
///
/// Responses are pipelined: a new snapshot is pushed right away even if the previous response
/// of that type is not ACKed yet. The protocol allows it, it keeps latency low, and it is safe
/// because the older response's answer simply becomes stale.
#[derive(Clone, Debug, Default)]
pub struct SotwConnection {
    snapshot: Option<Arc<Snapshot>>,
    types: BTreeMap<TypeUrl, SotwTypeState>,
    nonce_counter: u64,
    events: Vec<ProtocolEvent>,
}

impl SotwConnection {
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles one request; returns the response to send for it, if any.
    ///
    /// The first request for a type is honoured whatever nonce it carries (there is nothing of
    /// ours it could be stale against, and a nonce from an earlier stream must not make a
    /// reconnecting proxy wait forever); an `error_detail` on it is ignored for the same reason.
    /// Afterwards, a request is stale unless it carries the latest nonce of its type (an empty
    /// nonce included), and stale requests are ignored entirely; Envoy restates its interest
    /// in the ACK of the latest response, so nothing is lost. Only the first request quoting
    /// the latest nonce is its ACK/NACK; later ones merely restate the subscription.
    pub fn on_request(
        &mut self,
        request: SotwRequest,
    ) -> Result<Option<SotwResponse>, ProtocolError> {
        let SotwRequest {
            type_url,
            version_info: _,
            resource_names,
            response_nonce,
            error_detail,
        } = request;
        let is_new = !self.types.contains_key(&type_url);
        check_type_url(&type_url, self.types.len(), is_new)?;
        let state = self.types.entry(type_url.clone()).or_default();
        if let Some(latest) = &state.latest_nonce {
            if response_nonce != *latest {
                return Ok(None);
            }
            if !state.answered {
                state.answered = true;
                let version = state.latest_version.clone();
                match error_detail {
                    Some(message) => {
                        state
                            .verdicts
                            .nack(&type_url, version, message, &mut self.events)
                    }
                    None => state.verdicts.ack(&type_url, version, &mut self.events),
                }
            }
        }
        state.subscription.replace(&type_url, &resource_names);
        let Some(snapshot) = &self.snapshot else {
            return Ok(None);
        };
        Ok(state.evaluate(&type_url, snapshot, None, &mut self.nonce_counter))
    }

    /// Adopts a new snapshot; returns the responses to send, in push order.
    ///
    /// Only subscribed types whose content changed get a response. Additions and updates go in
    /// [`PUSH_ORDER`]; then, for [`DEFERRED_REMOVAL_ORDER`] types, a follow-up response drops
    /// what the snapshot removed (see there for why).
    pub fn on_snapshot(&mut self, snapshot: impl Into<Arc<Snapshot>>) -> Vec<SotwResponse> {
        let snapshot = snapshot.into();
        let previous = self.snapshot.replace(Arc::clone(&snapshot));
        let mut responses = Vec::new();
        for type_url in ordered_types(self.types.keys()) {
            let retain_from = previous.as_deref().filter(|_| defers_removal(&type_url));
            if let Some(state) = self.types.get_mut(&type_url)
                && let Some(response) =
                    state.evaluate(&type_url, &snapshot, retain_from, &mut self.nonce_counter)
            {
                responses.push(response);
            }
        }
        for type_url in DEFERRED_REMOVAL_ORDER {
            if let Some(state) = self.types.get_mut(type_url)
                && let Some(response) =
                    state.evaluate(type_url, &snapshot, None, &mut self.nonce_counter)
            {
                responses.push(response);
            }
        }
        responses
    }

    /// Whether the proxy has requested this type on this stream.
    pub fn is_subscribed(&self, type_url: &str) -> bool {
        self.types.contains_key(type_url)
    }

    /// The snapshot version of the latest ACKed response of this type.
    pub fn acked_version(&self, type_url: &str) -> Option<&str> {
        self.types.get(type_url)?.verdicts.acked_version.as_deref()
    }

    /// The NACK of this type not yet superseded by an ACK.
    pub fn last_nack(&self, type_url: &str) -> Option<&Nack> {
        self.types.get(type_url)?.verdicts.last_nack.as_ref()
    }

    /// ACK/NACK events since the last call, oldest first.
    pub fn drain_events(&mut self) -> Vec<ProtocolEvent> {
        std::mem::take(&mut self.events)
    }
}

// ---------------------------------------------------------------------------------------------
// Incremental (delta)
// ---------------------------------------------------------------------------------------------

/// What we believe the proxy holds under one name.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Held {
    Version(String),
    /// Something, or nothing: a response carrying the name was still in flight when the proxy
    /// unsubscribed and it subscribed again before answering it. Whatever is desired for the
    /// name next (the resource, or its removal) is sent.
    Unknown,
}

fn holds(held: Option<&Held>, version: &str) -> bool {
    matches!(held, Some(Held::Version(v)) if v == version)
}

/// How one response changed what we believe the proxy holds, so a NACK can undo it.
#[derive(Clone, Debug)]
struct Change {
    name: String,
    before: Option<Held>,
    /// `None` for a removal.
    after: Option<Held>,
}

#[derive(Clone, Debug)]
struct InFlight {
    nonce: String,
    version: String,
    /// The desired-content generation the response was computed from.
    generation: u64,
    changes: Vec<Change>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Removals {
    Send,
    Defer,
}

#[derive(Clone, Debug, Default)]
struct DeltaTypeState {
    subscription: Subscription,
    /// What the proxy holds per subscribed name, assuming unanswered responses get accepted.
    known: BTreeMap<String, Held>,
    /// Names unsubscribed while a response adding them was in flight. The proxy ignores that
    /// resource if it is still unsubscribed when the response arrives, but applies it if it has
    /// subscribed again by then, so a re-subscription before everything in flight is answered
    /// leaves us unsure what it holds.
    maybe_held: BTreeSet<String>,
    responded: bool,
    in_flight: VecDeque<InFlight>,
    /// Desired content at the last evaluation, and a counter bumped whenever it changes.
    desired: Option<Versions>,
    generation: u64,
    /// Set by a NACK to the generation the rejected response came from. While the desired
    /// content is still that generation, resending would only be rejected again, so nothing is
    /// sent; any change to it (new snapshot content or a new subscription) lifts the hold.
    hold: Option<u64>,
    verdicts: Verdicts,
}

impl DeltaTypeState {
    fn apply_subscription(&mut self, type_url: &str, subscribe: &[String], unsubscribe: &[String]) {
        let wildcard_capable = is_wildcard_type(type_url);
        // Unsubscriptions first, so a name in both lists ends up subscribed and resent.
        for name in unsubscribe {
            if wildcard_capable && name == WILDCARD {
                self.subscription.wildcard = false;
            } else {
                self.subscription.names.remove(name);
                // The proxy drops what it unsubscribes from, even when a wildcard still covers
                // it, so it must be sent again on re-subscription rather than skipped as known.
                self.forget(|n| n == name);
            }
        }
        for name in subscribe {
            if wildcard_capable && name == WILDCARD {
                self.subscription.wildcard = true;
            } else {
                self.subscription.names.insert(name.clone());
            }
        }
        let subscription = self.subscription.clone();
        self.forget(|n| !subscription.covers(n));
        let resubscribed: Vec<String> = self
            .maybe_held
            .iter()
            .filter(|name| subscription.covers(name))
            .cloned()
            .collect();
        for name in resubscribed {
            self.maybe_held.remove(&name);
            self.known.insert(name, Held::Unknown);
        }
    }

    /// Drops names from what the proxy is believed to hold, including from the undo records of
    /// unanswered responses, so a later NACK cannot resurrect them.
    fn forget(&mut self, matches: impl Fn(&str) -> bool) {
        self.known.retain(|name, _| !matches(name));
        for response in &mut self.in_flight {
            for change in &response.changes {
                if change.after.is_some() && matches(&change.name) {
                    self.maybe_held.insert(change.name.clone());
                }
            }
            response.changes.retain(|c| !matches(&c.name));
        }
    }

    fn resolve(
        &mut self,
        type_url: &str,
        nonce: &str,
        error_detail: Option<String>,
        events: &mut Vec<ProtocolEvent>,
    ) {
        let Some(position) = self.in_flight.iter().position(|r| r.nonce == nonce) else {
            return; // stale: unknown, already answered, or from another stream
        };
        // Envoy answers responses in order, so anything older was answered already.
        let Some(answered) = self.in_flight.drain(..=position).next_back() else {
            return;
        };
        if self.in_flight.is_empty() {
            // Everything sent has been processed, and the subscription we track is the one it
            // was processed under: no response can still land on a re-subscribed name.
            self.maybe_held.clear();
        }
        match error_detail {
            Some(message) => {
                for change in answered.changes {
                    let superseding = self
                        .in_flight
                        .iter_mut()
                        .find_map(|r| r.changes.iter_mut().find(|c| c.name == change.name));
                    match (superseding, change.before) {
                        // A later response changes the name again; it will still apply, but on
                        // top of what the proxy had before the rejected change.
                        (Some(later), before) => later.before = before,
                        (None, Some(held)) => {
                            self.known.insert(change.name, held);
                        }
                        (None, None) => {
                            self.known.remove(&change.name);
                        }
                    }
                }
                self.hold = Some(answered.generation);
                self.verdicts
                    .nack(type_url, answered.version, message, events);
            }
            // An ACK only means the proxy runs the full desired state if it answers the latest
            // response and no rejection is still outstanding; otherwise it is partial progress.
            None if self.in_flight.is_empty() && self.hold.is_none() => {
                self.verdicts.ack(type_url, answered.version, events);
            }
            None => {}
        }
    }

    /// After a snapshot that needs no response: if the proxy is rejecting this type but the
    /// desired content is now exactly what it holds (the rejected change was reverted), it runs
    /// the complete desired state again — an ACK in all but name, which Envoy will never send
    /// because nothing is sent to it.
    fn settle(&mut self, type_url: &str, version: &str, events: &mut Vec<ProtocolEvent>) {
        if self.verdicts.last_nack.is_some()
            && self.responded
            && self.in_flight.is_empty()
            && self.hold.is_none()
        {
            self.verdicts.ack(type_url, version.to_owned(), events);
        }
    }

    fn evaluate(
        &mut self,
        type_url: &str,
        snapshot: &Snapshot,
        removals: Removals,
        nonce_counter: &mut u64,
    ) -> Option<DeltaResponse> {
        let selected = select(snapshot, type_url, &self.subscription);
        let versions = versions_of(&selected);
        if self.desired.as_ref() != Some(&versions) {
            self.generation += 1;
            self.desired = Some(versions);
        }
        if self.hold == Some(self.generation) {
            return None;
        }
        self.hold = None;

        let mut changes = Vec::new();
        let mut resources = Vec::new();
        for (name, resource) in &selected {
            let before = self.known.get(*name);
            if !holds(before, &resource.version) {
                changes.push(Change {
                    name: (*name).to_owned(),
                    before: before.cloned(),
                    after: Some(Held::Version(resource.version.clone())),
                });
                resources.push((*resource).clone());
            }
        }
        let mut removed_resources = Vec::new();
        if removals == Removals::Send {
            // `known` only holds subscribed names, so anything unselected is gone upstream.
            for (name, held) in &self.known {
                if !selected.contains_key(name.as_str()) {
                    removed_resources.push(name.clone());
                    changes.push(Change {
                        name: name.clone(),
                        before: Some(held.clone()),
                        after: None,
                    });
                }
            }
        }
        // Envoy's initialization waits for a first CDS/LDS response even when it has nothing
        // to add, e.g. an empty config or a reconnect where it is already up to date.
        let first_wildcard_response = self.subscription.wildcard && !self.responded;
        if changes.is_empty() && !first_wildcard_response {
            return None;
        }

        for change in &changes {
            match &change.after {
                Some(held) => self.known.insert(change.name.clone(), held.clone()),
                None => self.known.remove(&change.name),
            };
        }
        let nonce = issue_nonce(nonce_counter);
        self.in_flight.push_back(InFlight {
            nonce: nonce.clone(),
            version: snapshot.version.clone(),
            generation: self.generation,
            changes,
        });
        if self.in_flight.len() > MAX_IN_FLIGHT {
            self.in_flight.pop_front();
        }
        self.responded = true;
        Some(DeltaResponse {
            type_url: type_url.to_owned(),
            system_version_info: snapshot.version.clone(),
            resources,
            removed_resources,
            nonce,
        })
    }
}

/// Protocol state of one incremental (delta) ADS stream.
///
/// As in [`SotwConnection`], responses are pipelined. Unlike SotW, every request's
/// subscribe/unsubscribe lists are applied even when its nonce is stale (or empty, which is how
/// Envoy sends pure subscription changes): they are increments, so dropping one would leave the
/// subscription wrong for the rest of the stream.
#[derive(Clone, Debug, Default)]
pub struct DeltaConnection {
    snapshot: Option<Arc<Snapshot>>,
    types: BTreeMap<TypeUrl, DeltaTypeState>,
    nonce_counter: u64,
    events: Vec<ProtocolEvent>,
}

impl DeltaConnection {
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles one request; returns the response to send for it, if any.
    ///
    /// A non-empty nonce matching an unanswered response is that response's ACK or NACK; any
    /// other nonce is stale and only its subscription changes are applied. A NACK makes the
    /// rejected resources count as not delivered, but they are only sent again once the desired
    /// content of the type differs from what the rejected response was built from (which may
    /// already be the case when responses were pipelined), so a rejected config never loops.
    pub fn on_request(
        &mut self,
        request: DeltaRequest,
    ) -> Result<Option<DeltaResponse>, ProtocolError> {
        let DeltaRequest {
            type_url,
            resource_names_subscribe,
            resource_names_unsubscribe,
            initial_resource_versions,
            response_nonce,
            error_detail,
        } = request;
        let is_new = !self.types.contains_key(&type_url);
        check_type_url(&type_url, self.types.len(), is_new)?;
        let state = self.types.entry(type_url.clone()).or_default();
        if is_new {
            // Legacy wildcard: a first request that names nothing wants everything. Unlike
            // SotW it persists until "*" is unsubscribed, since later requests only carry
            // increments.
            state.subscription.wildcard =
                is_wildcard_type(&type_url) && resource_names_subscribe.is_empty();
            state.known = initial_resource_versions
                .into_iter()
                .map(|(name, version)| (name, Held::Version(version)))
                .collect();
        }
        if !response_nonce.is_empty() {
            state.resolve(&type_url, &response_nonce, error_detail, &mut self.events);
        }
        state.apply_subscription(
            &type_url,
            &resource_names_subscribe,
            &resource_names_unsubscribe,
        );
        let Some(snapshot) = &self.snapshot else {
            return Ok(None);
        };
        Ok(state.evaluate(&type_url, snapshot, Removals::Send, &mut self.nonce_counter))
    }

    /// Adopts a new snapshot; returns the responses to send, in push order.
    ///
    /// Additions and updates go in [`PUSH_ORDER`]; removals of [`DEFERRED_REMOVAL_ORDER`] types
    /// follow in separate responses after listeners and routes.
    pub fn on_snapshot(&mut self, snapshot: impl Into<Arc<Snapshot>>) -> Vec<DeltaResponse> {
        let snapshot = snapshot.into();
        self.snapshot = Some(Arc::clone(&snapshot));
        let mut responses = Vec::new();
        for type_url in ordered_types(self.types.keys()) {
            let removals = if defers_removal(&type_url) {
                Removals::Defer
            } else {
                Removals::Send
            };
            if let Some(state) = self.types.get_mut(&type_url) {
                match state.evaluate(&type_url, &snapshot, removals, &mut self.nonce_counter) {
                    Some(response) => responses.push(response),
                    None => state.settle(&type_url, &snapshot.version, &mut self.events),
                }
            }
        }
        for type_url in DEFERRED_REMOVAL_ORDER {
            if let Some(state) = self.types.get_mut(type_url)
                && let Some(response) =
                    state.evaluate(type_url, &snapshot, Removals::Send, &mut self.nonce_counter)
            {
                responses.push(response);
            }
        }
        responses
    }

    /// Whether the proxy has requested this type on this stream.
    pub fn is_subscribed(&self, type_url: &str) -> bool {
        self.types.contains_key(type_url)
    }

    /// The snapshot version of the latest response of this type whose ACK left the proxy
    /// running the complete desired state.
    pub fn acked_version(&self, type_url: &str) -> Option<&str> {
        self.types.get(type_url)?.verdicts.acked_version.as_deref()
    }

    /// The NACK of this type not yet superseded by an ACK.
    pub fn last_nack(&self, type_url: &str) -> Option<&Nack> {
        self.types.get(type_url)?.verdicts.last_nack.as_ref()
    }

    /// ACK/NACK events since the last call, oldest first.
    pub fn drain_events(&mut self) -> Vec<ProtocolEvent> {
        std::mem::take(&mut self.events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(name: &str, version: &str) -> Resource {
        Resource::new(name, version, format!("{name}@{version}").into_bytes())
    }

    /// `entries`: per type URL, `(name, per-resource version)` pairs.
    fn snap(version: &str, entries: &[(&str, &[(&str, &str)])]) -> Snapshot {
        let mut snapshot = Snapshot::new(version);
        for (type_url, resources) in entries {
            snapshot
                .resources
                .entry((*type_url).to_owned())
                .or_default();
            for (name, v) in *resources {
                snapshot.insert(type_url, res(name, v));
            }
        }
        snapshot
    }

    fn names(resources: &[Resource]) -> Vec<&str> {
        resources.iter().map(|r| r.name.as_str()).collect()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn sotw(type_url: &str, resource_names: &[&str], nonce: &str) -> SotwRequest {
        SotwRequest {
            type_url: type_url.to_owned(),
            version_info: String::new(),
            resource_names: strings(resource_names),
            response_nonce: nonce.to_owned(),
            error_detail: None,
        }
    }

    fn sotw_nack(type_url: &str, resource_names: &[&str], nonce: &str, msg: &str) -> SotwRequest {
        SotwRequest {
            error_detail: Some(msg.to_owned()),
            ..sotw(type_url, resource_names, nonce)
        }
    }

    fn delta(
        type_url: &str,
        subscribe: &[&str],
        unsubscribe: &[&str],
        nonce: &str,
    ) -> DeltaRequest {
        DeltaRequest {
            type_url: type_url.to_owned(),
            resource_names_subscribe: strings(subscribe),
            resource_names_unsubscribe: strings(unsubscribe),
            initial_resource_versions: BTreeMap::new(),
            response_nonce: nonce.to_owned(),
            error_detail: None,
        }
    }

    fn delta_ack(type_url: &str, nonce: &str) -> DeltaRequest {
        delta(type_url, &[], &[], nonce)
    }

    fn delta_nack(type_url: &str, nonce: &str, msg: &str) -> DeltaRequest {
        DeltaRequest {
            error_detail: Some(msg.to_owned()),
            ..delta_ack(type_url, nonce)
        }
    }

    fn sent_versions(resources: &[Resource]) -> Vec<(&str, &str)> {
        resources
            .iter()
            .map(|r| (r.name.as_str(), r.version.as_str()))
            .collect()
    }

    // ----- SotW ----------------------------------------------------------------------------

    #[test]
    fn sotw_initial_wildcard_cds_request_gets_all_clusters() {
        let mut conn = SotwConnection::new();
        let snapshot = snap(
            "s1",
            &[
                (CLUSTER, &[("a", "1"), ("b", "1")]),
                (ENDPOINT, &[("a", "1")]),
            ],
        );
        assert!(
            conn.on_snapshot(snapshot).is_empty(),
            "nothing subscribed yet"
        );
        let response = conn
            .on_request(sotw(CLUSTER, &[], ""))
            .expect("valid request")
            .expect("initial request is answered");
        assert_eq!(response.type_url, CLUSTER);
        assert_eq!(response.version_info, "s1");
        assert_eq!(names(&response.resources), ["a", "b"]);
        assert_eq!(response.resources[0].body, &b"a@1"[..]);
    }

    #[test]
    fn sotw_wildcard_request_before_snapshot_is_answered_by_it_even_when_empty() {
        let mut conn = SotwConnection::new();
        assert_eq!(conn.on_request(sotw(LISTENER, &[], "")), Ok(None));
        let responses = conn.on_snapshot(snap("s1", &[]));
        assert_eq!(responses.len(), 1);
        assert_eq!(responses[0].type_url, LISTENER);
        assert!(responses[0].resources.is_empty());
    }

    #[test]
    fn sotw_eds_subscription_by_name_gets_only_existing_requested_names() {
        let mut conn = SotwConnection::new();
        conn.on_snapshot(snap(
            "s1",
            &[(ENDPOINT, &[("a", "1"), ("b", "1"), ("c", "1")])],
        ));
        let response = conn
            .on_request(sotw(ENDPOINT, &["a", "c", "missing"], ""))
            .expect("valid")
            .expect("answered");
        assert_eq!(names(&response.resources), ["a", "c"]);
    }

    #[test]
    fn sotw_eds_request_for_missing_names_waits_until_they_exist() {
        let mut conn = SotwConnection::new();
        conn.on_snapshot(snap("s1", &[(ENDPOINT, &[("other", "1")])]));
        assert_eq!(conn.on_request(sotw(ENDPOINT, &["a"], "")), Ok(None));
        let responses = conn.on_snapshot(snap("s2", &[(ENDPOINT, &[("a", "1")])]));
        assert_eq!(responses.len(), 1);
        assert_eq!(names(&responses[0].resources), ["a"]);
    }

    #[test]
    fn sotw_ack_records_version_and_sends_nothing() {
        let mut conn = SotwConnection::new();
        conn.on_snapshot(snap("s1", &[(CLUSTER, &[("a", "1")])]));
        let response = conn
            .on_request(sotw(CLUSTER, &[], ""))
            .expect("valid")
            .expect("answered");
        assert_eq!(conn.acked_version(CLUSTER), None);
        assert_eq!(
            conn.on_request(sotw(CLUSTER, &[], &response.nonce)),
            Ok(None)
        );
        assert_eq!(conn.acked_version(CLUSTER), Some("s1"));
        assert_eq!(
            conn.drain_events(),
            [ProtocolEvent::Ack {
                type_url: CLUSTER.to_owned(),
                version: "s1".to_owned()
            }]
        );
        // Quoting the same nonce again (e.g. a later subscription update) is not a new ACK.
        assert_eq!(
            conn.on_request(sotw(CLUSTER, &[], &response.nonce)),
            Ok(None)
        );
        assert!(conn.drain_events().is_empty());
    }

    #[test]
    fn sotw_nack_is_recorded_not_resent_and_new_content_is_sent() {
        let mut conn = SotwConnection::new();
        conn.on_snapshot(snap("s1", &[(CLUSTER, &[("a", "1")])]));
        let first = conn
            .on_request(sotw(CLUSTER, &[], ""))
            .expect("valid")
            .expect("sent");
        conn.on_request(sotw(CLUSTER, &[], &first.nonce))
            .expect("valid");
        conn.drain_events();

        let bad = conn.on_snapshot(snap("s2", &[(CLUSTER, &[("a", "2")])]));
        assert_eq!(bad.len(), 1);
        assert_eq!(
            conn.on_request(sotw_nack(CLUSTER, &[], &bad[0].nonce, "bad cluster")),
            Ok(None),
            "a NACK must not trigger a resend of the same version"
        );
        assert_eq!(
            conn.last_nack(CLUSTER),
            Some(&Nack {
                version: "s2".to_owned(),
                message: "bad cluster".to_owned()
            })
        );
        assert_eq!(conn.acked_version(CLUSTER), Some("s1"));
        assert_eq!(
            conn.drain_events(),
            [ProtocolEvent::Nack {
                type_url: CLUSTER.to_owned(),
                version: "s2".to_owned(),
                message: "bad cluster".to_owned()
            }]
        );
        // A later request quoting the NACKed nonce is neither an ACK nor a reason to resend.
        assert_eq!(conn.on_request(sotw(CLUSTER, &[], &bad[0].nonce)), Ok(None));
        assert!(conn.drain_events().is_empty());
        assert!(conn.last_nack(CLUSTER).is_some());

        // Same content under a new snapshot version: still nothing.
        assert!(
            conn.on_snapshot(snap("s3", &[(CLUSTER, &[("a", "2")])]))
                .is_empty()
        );
        // New content is sent, and its ACK clears the NACK.
        let fixed = conn.on_snapshot(snap("s4", &[(CLUSTER, &[("a", "3")])]));
        assert_eq!(fixed.len(), 1);
        assert_eq!(sent_versions(&fixed[0].resources), [("a", "3")]);
        conn.on_request(sotw(CLUSTER, &[], &fixed[0].nonce))
            .expect("valid");
        assert_eq!(conn.last_nack(CLUSTER), None);
        assert_eq!(conn.acked_version(CLUSTER), Some("s4"));
    }

    #[test]
    fn sotw_stale_nonce_is_ignored() {
        let mut conn = SotwConnection::new();
        conn.on_snapshot(snap("s1", &[(ENDPOINT, &[("a", "1"), ("b", "1")])]));
        let first = conn
            .on_request(sotw(ENDPOINT, &["a"], ""))
            .expect("valid")
            .expect("sent");
        let second = conn.on_snapshot(snap("s2", &[(ENDPOINT, &[("a", "2"), ("b", "1")])]));
        assert_eq!(second.len(), 1);

        // Answers to the superseded response, and an empty nonce after we sent something.
        for nonce in [first.nonce.as_str(), "", "no-such-nonce"] {
            assert_eq!(
                conn.on_request(sotw(ENDPOINT, &["a", "b"], nonce)),
                Ok(None)
            );
            assert_eq!(
                conn.on_request(sotw_nack(ENDPOINT, &["a"], nonce, "boom")),
                Ok(None)
            );
        }
        assert!(conn.drain_events().is_empty());
        assert_eq!(conn.last_nack(ENDPOINT), None);
        assert_eq!(conn.acked_version(ENDPOINT), None);
        // The ignored subscription change did not take effect: ACKing with ["a"] sends nothing.
        assert_eq!(
            conn.on_request(sotw(ENDPOINT, &["a"], &second[0].nonce)),
            Ok(None)
        );
        assert_eq!(conn.acked_version(ENDPOINT), Some("s2"));
    }

    #[test]
    fn sotw_subscription_change_in_ack_sends_new_names() {
        let mut conn = SotwConnection::new();
        conn.on_snapshot(snap("s1", &[(ENDPOINT, &[("a", "1"), ("b", "1")])]));
        let first = conn
            .on_request(sotw(ENDPOINT, &["a"], ""))
            .expect("valid")
            .expect("sent");
        let second = conn
            .on_request(sotw(ENDPOINT, &["a", "b"], &first.nonce))
            .expect("valid")
            .expect("new names are sent");
        assert_eq!(names(&second.resources), ["a", "b"]);
        assert_ne!(second.nonce, first.nonce);
        assert_eq!(conn.acked_version(ENDPOINT), Some("s1"));
    }

    #[test]
    fn sotw_narrowed_subscription_sends_nothing_but_resubscription_resends() {
        let mut conn = SotwConnection::new();
        conn.on_snapshot(snap("s1", &[(ENDPOINT, &[("a", "1"), ("b", "1")])]));
        let first = conn
            .on_request(sotw(ENDPOINT, &["a", "b"], ""))
            .expect("valid")
            .expect("sent");
        assert_eq!(
            conn.on_request(sotw(ENDPOINT, &["a"], &first.nonce)),
            Ok(None)
        );
        // Envoy dropped "b" when it stopped asking for it, so asking again must deliver it.
        let again = conn
            .on_request(sotw(ENDPOINT, &["a", "b"], &first.nonce))
            .expect("valid")
            .expect("re-subscription is answered");
        assert_eq!(names(&again.resources), ["a", "b"]);
    }

    #[test]
    fn sotw_unchanged_type_content_sends_nothing() {
        let mut conn = SotwConnection::new();
        conn.on_snapshot(snap(
            "s1",
            &[(CLUSTER, &[("a", "1")]), (ENDPOINT, &[("a", "1")])],
        ));
        conn.on_request(sotw(CLUSTER, &[], "")).expect("valid");
        conn.on_request(sotw(ENDPOINT, &["a"], "")).expect("valid");
        let responses = conn.on_snapshot(snap(
            "s2",
            &[(CLUSTER, &[("a", "1")]), (ENDPOINT, &[("a", "2")])],
        ));
        assert_eq!(responses.len(), 1);
        assert_eq!(responses[0].type_url, ENDPOINT);
        // A change to a resource nobody subscribed to is not an update either.
        let responses = conn.on_snapshot(snap(
            "s3",
            &[
                (CLUSTER, &[("a", "1")]),
                (ENDPOINT, &[("a", "2"), ("unrelated", "9")]),
                (ROUTE, &[("r", "1")]),
            ],
        ));
        assert!(responses.is_empty());
    }

    fn five_types(version: &str, v: &str) -> Snapshot {
        snap(
            version,
            &[
                (SECRET, &[("s", v)]),
                (CLUSTER, &[("c", v)]),
                (ENDPOINT, &[("c", v)]),
                (LISTENER, &[("l", v)]),
                (ROUTE, &[("r", v)]),
            ],
        )
    }

    #[test]
    fn sotw_multi_type_snapshot_is_pushed_in_dependency_order() {
        let mut conn = SotwConnection::new();
        // Subscribe in an order unrelated to the push order, with an unknown type too.
        conn.on_request(sotw("type.example/Zzz", &["z"], ""))
            .expect("valid");
        conn.on_request(sotw(ROUTE, &["r"], "")).expect("valid");
        conn.on_request(sotw(LISTENER, &[], "")).expect("valid");
        conn.on_request(sotw(ENDPOINT, &["c"], "")).expect("valid");
        conn.on_request(sotw(CLUSTER, &[], "")).expect("valid");
        conn.on_request(sotw(SECRET, &["s"], "")).expect("valid");
        let mut snapshot = five_types("s1", "1");
        snapshot.insert("type.example/Zzz", res("z", "1"));
        let responses = conn.on_snapshot(snapshot);
        let order: Vec<&str> = responses.iter().map(|r| r.type_url.as_str()).collect();
        assert_eq!(
            order,
            [
                SECRET,
                CLUSTER,
                ENDPOINT,
                LISTENER,
                ROUTE,
                "type.example/Zzz"
            ]
        );
    }

    #[test]
    fn sotw_cluster_removal_is_deferred_until_after_routes() {
        let mut conn = SotwConnection::new();
        conn.on_snapshot(snap(
            "s1",
            &[(CLUSTER, &[("old", "1")]), (ROUTE, &[("r", "1")])],
        ));
        conn.on_request(sotw(CLUSTER, &[], "")).expect("valid");
        conn.on_request(sotw(ROUTE, &["r"], "")).expect("valid");
        // The route moves from "old" to "new".
        let responses = conn.on_snapshot(snap(
            "s2",
            &[(CLUSTER, &[("new", "1")]), (ROUTE, &[("r", "2")])],
        ));
        let summary: Vec<(&str, Vec<&str>)> = responses
            .iter()
            .map(|r| (r.type_url.as_str(), names(&r.resources)))
            .collect();
        assert_eq!(
            summary,
            [
                (CLUSTER, vec!["new", "old"]),
                (ROUTE, vec!["r"]),
                (CLUSTER, vec!["new"]),
            ]
        );
        // The retained cluster is the exact resource the proxy already runs.
        assert_eq!(responses[0].resources[1], res("old", "1"));
    }

    #[test]
    fn sotw_nonces_are_unique_across_types() {
        let mut conn = SotwConnection::new();
        for t in [CLUSTER, LISTENER] {
            conn.on_request(sotw(t, &[], "")).expect("valid");
        }
        conn.on_request(sotw(ENDPOINT, &["c"], "")).expect("valid");
        let mut nonces = BTreeSet::new();
        for round in 1..=5 {
            let v = round.to_string();
            for response in conn.on_snapshot(five_types(&v, &v)) {
                assert!(nonces.insert(response.nonce), "nonce reused");
            }
        }
        assert_eq!(nonces.len(), 15);
    }

    #[test]
    fn sotw_legacy_wildcard_then_explicit_names() {
        let mut conn = SotwConnection::new();
        conn.on_snapshot(snap("s1", &[(LISTENER, &[("l1", "1"), ("l2", "1")])]));
        let r1 = conn
            .on_request(sotw(LISTENER, &[], ""))
            .expect("valid")
            .expect("sent");
        assert_eq!(names(&r1.resources), ["l1", "l2"]);
        let r2 = conn
            .on_request(sotw(LISTENER, &["l1"], &r1.nonce))
            .expect("valid")
            .expect("narrowed complete set");
        assert_eq!(names(&r2.resources), ["l1"]);
        // Once names were explicit, an empty list unsubscribes from everything.
        let r3 = conn
            .on_request(sotw(LISTENER, &[], &r2.nonce))
            .expect("valid")
            .expect("sent");
        assert!(r3.resources.is_empty());
        // "*" next to a name is the explicit wildcard.
        let r4 = conn
            .on_request(sotw(LISTENER, &["*", "l1"], &r3.nonce))
            .expect("valid")
            .expect("sent");
        assert_eq!(names(&r4.resources), ["l1", "l2"]);
    }

    #[test]
    fn sotw_star_is_not_a_wildcard_for_endpoints() {
        let mut conn = SotwConnection::new();
        conn.on_snapshot(snap("s1", &[(ENDPOINT, &[("a", "1")])]));
        assert_eq!(conn.on_request(sotw(ENDPOINT, &["*"], "")), Ok(None));
        assert_eq!(conn.on_request(sotw(ENDPOINT, &[], "")), Ok(None));
    }

    #[test]
    fn sotw_first_request_with_foreign_nonce_is_answered() {
        let mut conn = SotwConnection::new();
        conn.on_snapshot(snap("s1", &[(CLUSTER, &[("a", "1")])]));
        let request = SotwRequest {
            version_info: "s0".to_owned(),
            ..sotw(CLUSTER, &[], "nonce-from-previous-stream")
        };
        let response = conn.on_request(request).expect("valid").expect("answered");
        assert_eq!(names(&response.resources), ["a"]);
        assert!(conn.drain_events().is_empty());
    }

    #[test]
    fn errors_have_categories() {
        let mut conn = SotwConnection::new();
        let err = conn.on_request(sotw("", &[], "")).expect_err("empty type");
        assert_eq!(err, ProtocolError::EmptyTypeUrl);
        assert_eq!(err.category(), "protocol_violation");
        let mut delta_conn = DeltaConnection::new();
        let err = delta_conn
            .on_request(delta("", &[], &[], ""))
            .expect_err("empty type");
        assert_eq!(err.category(), "protocol_violation");
        assert!(!err.to_string().is_empty());

        for i in 0..MAX_TYPES_PER_CONNECTION {
            conn.on_request(sotw(&format!("type.example/T{i}"), &[], ""))
                .expect("within limit");
        }
        let err = conn
            .on_request(sotw("type.example/one-too-many", &[], ""))
            .expect_err("over limit");
        assert_eq!(err.category(), "resource_limit");
        // Known types keep working.
        assert_eq!(conn.on_request(sotw("type.example/T0", &[], "")), Ok(None));
    }

    // ----- Delta ---------------------------------------------------------------------------

    #[test]
    fn delta_initial_wildcard_gets_all_and_ack_is_recorded() {
        let mut conn = DeltaConnection::new();
        conn.on_snapshot(snap("s1", &[(CLUSTER, &[("a", "1"), ("b", "1")])]));
        let response = conn
            .on_request(delta(CLUSTER, &[], &[], ""))
            .expect("valid")
            .expect("sent");
        assert_eq!(names(&response.resources), ["a", "b"]);
        assert!(response.removed_resources.is_empty());
        assert_eq!(response.system_version_info, "s1");
        assert_eq!(
            conn.on_request(delta_ack(CLUSTER, &response.nonce)),
            Ok(None)
        );
        assert_eq!(conn.acked_version(CLUSTER), Some("s1"));
        assert_eq!(
            conn.drain_events(),
            [ProtocolEvent::Ack {
                type_url: CLUSTER.to_owned(),
                version: "s1".to_owned()
            }]
        );
    }

    #[test]
    fn delta_initial_resource_versions_suppress_unchanged_resources_on_reconnect() {
        let mut conn = DeltaConnection::new();
        conn.on_snapshot(snap(
            "s2",
            &[(CLUSTER, &[("same", "1"), ("changed", "2"), ("added", "1")])],
        ));
        let request = DeltaRequest {
            initial_resource_versions: [("same", "1"), ("changed", "1"), ("deleted", "1")]
                .into_iter()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect(),
            ..delta(CLUSTER, &[], &[], "")
        };
        let response = conn.on_request(request).expect("valid").expect("sent");
        assert_eq!(
            sent_versions(&response.resources),
            [("added", "1"), ("changed", "2")]
        );
        assert_eq!(response.removed_resources, ["deleted"]);
    }

    #[test]
    fn delta_reconnect_when_up_to_date() {
        let mut conn = DeltaConnection::new();
        conn.on_snapshot(snap(
            "s1",
            &[(CLUSTER, &[("a", "1")]), (ENDPOINT, &[("a", "1")])],
        ));
        let have = |name: &str| BTreeMap::from([(name.to_owned(), "1".to_owned())]);
        // Wildcard types still get an (empty) response: Envoy's init waits for one.
        let cds = conn
            .on_request(DeltaRequest {
                initial_resource_versions: have("a"),
                ..delta(CLUSTER, &["*"], &[], "")
            })
            .expect("valid")
            .expect("first wildcard response");
        assert!(cds.resources.is_empty() && cds.removed_resources.is_empty());
        // Named types have nothing to say.
        let eds = conn
            .on_request(DeltaRequest {
                initial_resource_versions: have("a"),
                ..delta(ENDPOINT, &["a"], &[], "")
            })
            .expect("valid");
        assert_eq!(eds, None);
        // initial_resource_versions only counts on the first request of a type.
        let later = conn
            .on_request(DeltaRequest {
                initial_resource_versions: BTreeMap::from([("a".to_owned(), "0".to_owned())]),
                ..delta(ENDPOINT, &[], &[], "")
            })
            .expect("valid");
        assert_eq!(later, None);
    }

    #[test]
    fn delta_removed_resources_on_deletion() {
        let mut conn = DeltaConnection::new();
        conn.on_snapshot(snap(
            "s1",
            &[
                (LISTENER, &[("l1", "1"), ("l2", "1")]),
                (ENDPOINT, &[("a", "1"), ("b", "1")]),
            ],
        ));
        conn.on_request(delta(LISTENER, &[], &[], ""))
            .expect("valid");
        conn.on_request(delta(ENDPOINT, &["a", "b"], &[], ""))
            .expect("valid");
        let responses = conn.on_snapshot(snap(
            "s2",
            &[(LISTENER, &[("l1", "1")]), (ENDPOINT, &[("a", "1")])],
        ));
        let summary: Vec<(&str, Vec<&str>, Vec<&str>)> = responses
            .iter()
            .map(|r| {
                (
                    r.type_url.as_str(),
                    names(&r.resources),
                    r.removed_resources.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (LISTENER, vec![], vec!["l2"]),
                // Endpoint removals come after listeners/routes.
                (ENDPOINT, vec![], vec!["b"]),
            ]
        );
        // Nothing left to do for an identical snapshot.
        assert!(
            conn.on_snapshot(snap(
                "s3",
                &[(LISTENER, &[("l1", "1")]), (ENDPOINT, &[("a", "1")])],
            ))
            .is_empty()
        );
    }

    #[test]
    fn delta_unsubscribe_forgets_names() {
        let mut conn = DeltaConnection::new();
        conn.on_snapshot(snap("s1", &[(ENDPOINT, &[("a", "1"), ("b", "1")])]));
        let first = conn
            .on_request(delta(ENDPOINT, &["a", "b"], &[], ""))
            .expect("valid")
            .expect("sent");
        assert_eq!(names(&first.resources), ["a", "b"]);
        // No removal is sent for an unsubscribed name.
        assert_eq!(conn.on_request(delta(ENDPOINT, &[], &["b"], "")), Ok(None));
        // Its updates and deletion no longer concern the proxy.
        assert!(
            conn.on_snapshot(snap("s2", &[(ENDPOINT, &[("a", "1"), ("b", "2")])]))
                .is_empty()
        );
        assert!(
            conn.on_snapshot(snap("s3", &[(ENDPOINT, &[("a", "1")])]))
                .is_empty()
        );
        conn.on_snapshot(snap("s4", &[(ENDPOINT, &[("a", "1"), ("b", "2")])]));
        // Re-subscribing delivers it again.
        let again = conn
            .on_request(delta(ENDPOINT, &["b"], &[], ""))
            .expect("valid")
            .expect("sent");
        assert_eq!(sent_versions(&again.resources), [("b", "2")]);
    }

    #[test]
    fn delta_wildcard_star_handling() {
        let mut conn = DeltaConnection::new();
        conn.on_snapshot(snap("s1", &[(CLUSTER, &[("a", "1"), ("b", "1")])]));
        // Explicit "*" plus a name.
        let first = conn
            .on_request(delta(CLUSTER, &["*", "a"], &[], ""))
            .expect("valid")
            .expect("sent");
        assert_eq!(names(&first.resources), ["a", "b"]);
        // Dropping the wildcard keeps the explicitly named cluster only.
        assert_eq!(conn.on_request(delta(CLUSTER, &[], &["*"], "")), Ok(None));
        assert!(
            conn.on_snapshot(snap(
                "s2",
                &[(CLUSTER, &[("a", "1"), ("b", "2"), ("c", "1")])]
            ))
            .is_empty(),
            "b and c are no longer subscribed"
        );
        // Subscribing to "*" again sends what the proxy dropped and what is new.
        let back = conn
            .on_request(delta(CLUSTER, &["*"], &[], ""))
            .expect("valid")
            .expect("sent");
        assert_eq!(sent_versions(&back.resources), [("b", "2"), ("c", "1")]);
        // Unsubscribing a name under the wildcard: the proxy dropped it, so it comes back.
        let resent = conn
            .on_request(delta(CLUSTER, &[], &["a"], ""))
            .expect("valid")
            .expect("sent");
        assert_eq!(names(&resent.resources), ["a"]);
    }

    #[test]
    fn delta_legacy_wildcard_survives_explicit_subscriptions() {
        let mut conn = DeltaConnection::new();
        conn.on_snapshot(snap("s1", &[(LISTENER, &[("l1", "1"), ("l2", "1")])]));
        let first = conn
            .on_request(delta(LISTENER, &[], &[], ""))
            .expect("valid")
            .expect("sent");
        assert_eq!(names(&first.resources), ["l1", "l2"]);
        assert_eq!(conn.on_request(delta(LISTENER, &["l1"], &[], "")), Ok(None));
        let update = conn.on_snapshot(snap("s2", &[(LISTENER, &[("l1", "1"), ("l2", "2")])]));
        assert_eq!(update.len(), 1);
        assert_eq!(sent_versions(&update[0].resources), [("l2", "2")]);
    }

    #[test]
    fn delta_star_is_a_plain_name_for_endpoints() {
        let mut conn = DeltaConnection::new();
        conn.on_snapshot(snap("s1", &[(ENDPOINT, &[("a", "1")])]));
        assert_eq!(conn.on_request(delta(ENDPOINT, &["*"], &[], "")), Ok(None));
        assert_eq!(conn.on_request(delta(SECRET, &[], &[], "")), Ok(None));
    }

    #[test]
    fn delta_subscribed_but_missing_then_gone() {
        let mut conn = DeltaConnection::new();
        conn.on_snapshot(snap("s1", &[(ROUTE, &[("r1", "1")])]));
        let first = conn
            .on_request(delta(ROUTE, &["r1", "r2"], &[], ""))
            .expect("valid")
            .expect("sent");
        assert_eq!(names(&first.resources), ["r1"]);
        assert!(first.removed_resources.is_empty(), "never had r2");
        let gone = conn.on_snapshot(snap("s2", &[(ROUTE, &[("r2", "1")])]));
        assert_eq!(gone.len(), 1);
        assert_eq!(names(&gone[0].resources), ["r2"]);
        assert_eq!(gone[0].removed_resources, ["r1"]);
    }

    #[test]
    fn delta_nack_is_recorded_not_looped_and_rejected_content_resent_on_change() {
        let mut conn = DeltaConnection::new();
        conn.on_snapshot(snap("s1", &[(CLUSTER, &[("a", "1"), ("b", "1")])]));
        let first = conn
            .on_request(delta(CLUSTER, &[], &[], ""))
            .expect("valid")
            .expect("sent");
        conn.on_request(delta_ack(CLUSTER, &first.nonce))
            .expect("valid");
        conn.drain_events();

        let bad = conn.on_snapshot(snap("s2", &[(CLUSTER, &[("a", "2"), ("b", "1")])]));
        assert_eq!(bad.len(), 1);
        assert_eq!(sent_versions(&bad[0].resources), [("a", "2")]);
        assert_eq!(
            conn.on_request(delta_nack(CLUSTER, &bad[0].nonce, "invalid a")),
            Ok(None),
            "the rejected content must not be resent straight away"
        );
        assert_eq!(
            conn.last_nack(CLUSTER),
            Some(&Nack {
                version: "s2".to_owned(),
                message: "invalid a".to_owned()
            })
        );
        assert_eq!(conn.acked_version(CLUSTER), Some("s1"));
        assert_eq!(
            conn.drain_events(),
            [ProtocolEvent::Nack {
                type_url: CLUSTER.to_owned(),
                version: "s2".to_owned(),
                message: "invalid a".to_owned()
            }]
        );
        // Re-quoting the answered nonce and re-publishing the same content change nothing.
        assert_eq!(conn.on_request(delta_ack(CLUSTER, &bad[0].nonce)), Ok(None));
        assert!(conn.drain_events().is_empty());
        assert!(
            conn.on_snapshot(snap("s3", &[(CLUSTER, &[("a", "2"), ("b", "1")])]))
                .is_empty()
        );
        // Once the content changes, the proxy gets everything it lacks, including the
        // previously rejected resource (it may have been rejected only because of `b`).
        let next = conn.on_snapshot(snap("s4", &[(CLUSTER, &[("a", "2"), ("b", "2")])]));
        assert_eq!(next.len(), 1);
        assert_eq!(sent_versions(&next[0].resources), [("a", "2"), ("b", "2")]);
        conn.on_request(delta_ack(CLUSTER, &next[0].nonce))
            .expect("valid");
        assert_eq!(conn.last_nack(CLUSTER), None);
        assert_eq!(conn.acked_version(CLUSTER), Some("s4"));
    }

    #[test]
    fn delta_reverting_a_rejected_change_counts_as_accepted() {
        let mut conn = DeltaConnection::new();
        conn.on_snapshot(snap("s1", &[(CLUSTER, &[("a", "1")])]));
        let first = conn
            .on_request(delta(CLUSTER, &[], &[], ""))
            .expect("valid")
            .expect("sent");
        conn.on_request(delta_ack(CLUSTER, &first.nonce))
            .expect("valid");
        let bad = conn.on_snapshot(snap("s2", &[(CLUSTER, &[("a", "2")])]));
        conn.on_request(delta_nack(CLUSTER, &bad[0].nonce, "invalid a"))
            .expect("valid");
        conn.drain_events();

        // Back to what the proxy runs: nothing to send, and the proxy runs s3 in full.
        assert!(
            conn.on_snapshot(snap("s3", &[(CLUSTER, &[("a", "1")])]))
                .is_empty()
        );
        assert_eq!(
            conn.drain_events(),
            [ProtocolEvent::Ack {
                type_url: CLUSTER.to_owned(),
                version: "s3".to_owned()
            }]
        );
        assert_eq!(conn.last_nack(CLUSTER), None);
        assert_eq!(conn.acked_version(CLUSTER), Some("s3"));
        // Without an outstanding rejection, a quiet snapshot is not an answer.
        assert!(
            conn.on_snapshot(snap("s4", &[(CLUSTER, &[("a", "1")])]))
                .is_empty()
        );
        assert!(conn.drain_events().is_empty());
    }

    #[test]
    fn delta_nack_reverts_to_what_the_proxy_runs() {
        let mut conn = DeltaConnection::new();
        conn.on_snapshot(snap("s1", &[(CLUSTER, &[("a", "1")])]));
        let first = conn
            .on_request(delta(CLUSTER, &[], &[], ""))
            .expect("valid")
            .expect("sent");
        conn.on_request(delta_ack(CLUSTER, &first.nonce))
            .expect("valid");
        let bad = conn.on_snapshot(snap("s2", &[(CLUSTER, &[("a", "2")])]));
        conn.on_request(delta_nack(CLUSTER, &bad[0].nonce, "no"))
            .expect("valid");
        // Going back to what the proxy actually runs needs no response at all.
        assert!(
            conn.on_snapshot(snap("s3", &[(CLUSTER, &[("a", "1")])]))
                .is_empty()
        );
    }

    #[test]
    fn delta_nack_of_pipelined_response_withholds_ack_of_later_one() {
        let mut conn = DeltaConnection::new();
        conn.on_snapshot(snap("s1", &[(CLUSTER, &[("a", "1")])]));
        let first = conn
            .on_request(delta(CLUSTER, &[], &[], ""))
            .expect("valid")
            .expect("sent");
        conn.on_request(delta_ack(CLUSTER, &first.nonce))
            .expect("valid");
        // Two responses in flight: a new cluster, then (phase 2) a removal.
        let responses = conn.on_snapshot(snap("s2", &[(CLUSTER, &[("b", "1")])]));
        assert_eq!(responses.len(), 2);
        assert_eq!(names(&responses[0].resources), ["b"]);
        assert_eq!(responses[1].removed_resources, ["a"]);
        conn.drain_events();
        conn.on_request(delta_nack(CLUSTER, &responses[0].nonce, "bad b"))
            .expect("valid");
        conn.on_request(delta_ack(CLUSTER, &responses[1].nonce))
            .expect("valid");
        // The proxy lacks "b", so it does not run s2: no ACK, the NACK stands.
        assert_eq!(conn.acked_version(CLUSTER), Some("s1"));
        assert_eq!(
            conn.last_nack(CLUSTER).map(|n| n.message.as_str()),
            Some("bad b")
        );
        let events = conn.drain_events();
        assert_eq!(events.len(), 1);
        assert!(matches!(events[0], ProtocolEvent::Nack { .. }));
        // And "b" is delivered again once the content moves on.
        let next = conn.on_snapshot(snap("s3", &[(CLUSTER, &[("b", "1"), ("c", "1")])]));
        assert_eq!(next.len(), 1);
        assert_eq!(names(&next[0].resources), ["b", "c"]);
    }

    #[test]
    fn delta_nack_of_pipelined_removal_keeps_later_update_consistent() {
        let mut conn = DeltaConnection::new();
        conn.on_snapshot(snap("s1", &[(CLUSTER, &[("a", "2")])]));
        let first = conn
            .on_request(delta(CLUSTER, &[], &[], ""))
            .expect("valid")
            .expect("sent");
        conn.on_request(delta_ack(CLUSTER, &first.nonce))
            .expect("valid");
        let removal = conn.on_snapshot(snap("s2", &[(CLUSTER, &[])]));
        assert_eq!(removal[0].removed_resources, ["a"]);
        let readd = conn.on_snapshot(snap("s3", &[(CLUSTER, &[("a", "1")])]));
        assert_eq!(sent_versions(&readd[0].resources), [("a", "1")]);
        // Both get rejected: the proxy still runs a@2.
        assert_eq!(
            conn.on_request(delta_nack(CLUSTER, &removal[0].nonce, "no")),
            Ok(None)
        );
        assert_eq!(
            conn.on_request(delta_nack(CLUSTER, &readd[0].nonce, "no")),
            Ok(None)
        );
        // So deleting it later must tell the proxy.
        let gone = conn.on_snapshot(snap("s4", &[(CLUSTER, &[])]));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].removed_resources, ["a"]);
    }

    #[test]
    fn delta_resubscription_racing_an_in_flight_response() {
        let setup = || {
            let mut conn = DeltaConnection::new();
            conn.on_snapshot(snap("s1", &[(ENDPOINT, &[("c", "1")])]));
            let in_flight = conn
                .on_request(delta(ENDPOINT, &["c"], &[], ""))
                .expect("valid")
                .expect("sent");
            assert_eq!(conn.on_request(delta(ENDPOINT, &[], &["c"], "")), Ok(None));
            assert!(conn.on_snapshot(snap("s2", &[(ENDPOINT, &[])])).is_empty());
            (conn, in_flight)
        };
        // Re-subscribed before answering: the proxy applies c@1 when it arrives, so it must
        // be told that "c" is gone.
        let (mut conn, _in_flight) = setup();
        let response = conn
            .on_request(delta(ENDPOINT, &["c"], &[], ""))
            .expect("valid")
            .expect("sent");
        assert_eq!(response.removed_resources, ["c"]);
        // Answered while unsubscribed: the proxy ignored c@1 and holds nothing to remove.
        let (mut conn, in_flight) = setup();
        conn.on_request(delta_ack(ENDPOINT, &in_flight.nonce))
            .expect("valid");
        assert_eq!(conn.on_request(delta(ENDPOINT, &["c"], &[], "")), Ok(None));
    }

    #[test]
    fn delta_stale_nonce_ignores_verdict_but_applies_subscription() {
        let mut conn = DeltaConnection::new();
        conn.on_snapshot(snap("s1", &[(ENDPOINT, &[("a", "1"), ("b", "1")])]));
        let first = conn
            .on_request(delta(ENDPOINT, &["a"], &[], ""))
            .expect("valid")
            .expect("sent");
        let second = conn.on_snapshot(snap("s2", &[(ENDPOINT, &[("a", "2"), ("b", "1")])]));
        conn.on_request(delta_ack(ENDPOINT, &first.nonce))
            .expect("valid");
        conn.on_request(delta_ack(ENDPOINT, &second[0].nonce))
            .expect("valid");
        conn.drain_events();
        // A NACK quoting an answered nonce is stale...
        let response = conn
            .on_request(DeltaRequest {
                error_detail: Some("late".to_owned()),
                ..delta(ENDPOINT, &["b"], &[], &first.nonce)
            })
            .expect("valid")
            .expect("subscription change still applies");
        assert!(conn.drain_events().is_empty());
        assert_eq!(conn.last_nack(ENDPOINT), None);
        assert_eq!(names(&response.resources), ["b"]);
        // ...and so is one with a nonce never issued.
        assert_eq!(conn.on_request(delta_nack(ENDPOINT, "999", "x")), Ok(None));
        assert_eq!(conn.last_nack(ENDPOINT), None);
    }

    #[test]
    fn delta_multi_type_ordering_with_deferred_removals() {
        let mut conn = DeltaConnection::new();
        conn.on_request(delta(ROUTE, &["r"], &[], ""))
            .expect("valid");
        conn.on_request(delta(LISTENER, &[], &[], ""))
            .expect("valid");
        conn.on_request(delta(ENDPOINT, &["c", "old"], &[], ""))
            .expect("valid");
        conn.on_request(delta(CLUSTER, &[], &[], ""))
            .expect("valid");
        conn.on_request(delta(SECRET, &["s", "old"], &[], ""))
            .expect("valid");
        let mut initial = five_types("s1", "1");
        for t in [SECRET, CLUSTER, ENDPOINT] {
            initial.insert(t, res("old", "1"));
        }
        let responses = conn.on_snapshot(initial);
        let order: Vec<&str> = responses.iter().map(|r| r.type_url.as_str()).collect();
        assert_eq!(order, [SECRET, CLUSTER, ENDPOINT, LISTENER, ROUTE]);

        let responses = conn.on_snapshot(five_types("s2", "2"));
        let summary: Vec<(&str, usize, usize)> = responses
            .iter()
            .map(|r| {
                (
                    r.type_url.as_str(),
                    r.resources.len(),
                    r.removed_resources.len(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (SECRET, 1, 0),
                (CLUSTER, 1, 0),
                (ENDPOINT, 1, 0),
                (LISTENER, 1, 0),
                (ROUTE, 1, 0),
                (CLUSTER, 0, 1),
                (ENDPOINT, 0, 1),
                (SECRET, 0, 1),
            ]
        );
    }

    #[test]
    fn delta_nonces_are_unique() {
        let mut conn = DeltaConnection::new();
        conn.on_request(delta(CLUSTER, &[], &[], ""))
            .expect("valid");
        conn.on_request(delta(ENDPOINT, &["c"], &[], ""))
            .expect("valid");
        let mut nonces = BTreeSet::new();
        for round in 1..=5 {
            let v = round.to_string();
            for response in conn.on_snapshot(five_types(&v, &v)) {
                assert!(nonces.insert(response.nonce), "nonce reused");
            }
        }
        assert_eq!(nonces.len(), 10);
    }

    // ----- Model-based: the proxy converges on the latest snapshot ------------------------

    mod model {
        use super::*;
        use proptest::prelude::*;

        const POOL: [&str; 4] = ["a", "b", "c", "d"];
        /// Generous bound on deliveries while draining; the protocol must quiesce well before.
        const DRAIN_LIMIT: usize = 1_000;

        #[derive(Clone, Debug)]
        enum Op {
            Snapshot {
                clusters: Versions,
                endpoints: Versions,
            },
            Interest(BTreeSet<String>),
            /// Deliver the oldest queued response; `reject` makes the proxy NACK it unapplied.
            Deliver {
                reject: bool,
            },
            Reconnect,
        }

        fn name() -> impl Strategy<Value = String> {
            proptest::sample::select(POOL.to_vec()).prop_map(str::to_owned)
        }

        fn versions() -> impl Strategy<Value = Versions> {
            proptest::collection::btree_map(name(), (1u8..=3).prop_map(|v| v.to_string()), 0..=4)
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                2 => (versions(), versions())
                    .prop_map(|(clusters, endpoints)| Op::Snapshot { clusters, endpoints }),
                1 => proptest::collection::btree_set(name(), 0..=4).prop_map(Op::Interest),
                5 => Just(Op::Deliver { reject: false }),
                1 => Just(Op::Deliver { reject: true }),
                1 => Just(Op::Reconnect),
            ]
        }

        fn build(n: usize, clusters: &Versions, endpoints: &Versions) -> Arc<Snapshot> {
            let mut snapshot = Snapshot::new(format!("s{n}"));
            for (name, v) in clusters {
                snapshot.insert(CLUSTER, res(name, v));
            }
            for (name, v) in endpoints {
                snapshot.insert(ENDPOINT, res(name, v));
            }
            Arc::new(snapshot)
        }

        fn of_type(snapshot: &Snapshot, type_url: &str) -> Versions {
            snapshot
                .resources
                .get(type_url)
                .map(|all| {
                    all.values()
                        .map(|r| (r.name.clone(), r.version.clone()))
                        .collect()
                })
                .unwrap_or_default()
        }

        /// An Envoy that subscribes to all clusters and to `interest` endpoints, receives
        /// responses with arbitrary delay (but in order) and ACKs everything.
        #[derive(Default)]
        struct SotwProxy {
            conn: SotwConnection,
            queue: VecDeque<SotwResponse>,
            interest: BTreeSet<String>,
            nonce: BTreeMap<TypeUrl, String>,
            version: BTreeMap<TypeUrl, String>,
            view: BTreeMap<TypeUrl, Versions>,
        }

        impl SotwProxy {
            fn send(&mut self, type_url: &str, error_detail: Option<String>) {
                let resource_names = if type_url == CLUSTER {
                    Vec::new()
                } else {
                    self.interest.iter().cloned().collect()
                };
                let request = SotwRequest {
                    type_url: type_url.to_owned(),
                    version_info: self.version.get(type_url).cloned().unwrap_or_default(),
                    resource_names,
                    response_nonce: self.nonce.get(type_url).cloned().unwrap_or_default(),
                    error_detail,
                };
                if let Some(response) = self.conn.on_request(request).expect("valid request") {
                    self.queue.push_back(response);
                }
            }

            fn connect(&mut self, snapshot: Option<&Arc<Snapshot>>) {
                self.conn = SotwConnection::new();
                self.queue.clear();
                self.nonce.clear();
                if let Some(snapshot) = snapshot {
                    assert!(self.conn.on_snapshot(Arc::clone(snapshot)).is_empty());
                }
                self.send(CLUSTER, None);
                self.send(ENDPOINT, None);
            }

            fn deliver(&mut self, reject: bool) -> bool {
                let Some(response) = self.queue.pop_front() else {
                    return false;
                };
                let t = response.type_url.clone();
                self.nonce.insert(t.clone(), response.nonce);
                if reject {
                    self.send(&t, Some("rejected".to_owned()));
                    return true;
                }
                let view = self.view.entry(t.clone()).or_default();
                if t == CLUSTER {
                    view.clear();
                }
                for r in &response.resources {
                    if t == CLUSTER || self.interest.contains(&r.name) {
                        view.insert(r.name.clone(), r.version.clone());
                    }
                }
                self.version.insert(t.clone(), response.version_info);
                self.send(&t, None);
                true
            }

            fn set_interest(&mut self, interest: BTreeSet<String>) {
                self.view
                    .entry(ENDPOINT.to_owned())
                    .or_default()
                    .retain(|name, _| interest.contains(name));
                self.interest = interest;
                self.send(ENDPOINT, None);
            }
        }

        /// The delta counterpart of [`SotwProxy`], reconnecting with its current versions.
        #[derive(Default)]
        struct DeltaProxy {
            conn: DeltaConnection,
            queue: VecDeque<DeltaResponse>,
            interest: BTreeSet<String>,
            view: BTreeMap<TypeUrl, Versions>,
        }

        impl DeltaProxy {
            fn send(&mut self, request: DeltaRequest) {
                if let Some(response) = self.conn.on_request(request).expect("valid request") {
                    self.queue.push_back(response);
                }
            }

            fn connect(&mut self, snapshot: Option<&Arc<Snapshot>>) {
                self.conn = DeltaConnection::new();
                self.queue.clear();
                if let Some(snapshot) = snapshot {
                    assert!(self.conn.on_snapshot(Arc::clone(snapshot)).is_empty());
                }
                let have = |proxy: &Self, t: &str| proxy.view.get(t).cloned().unwrap_or_default();
                self.send(DeltaRequest {
                    initial_resource_versions: have(self, CLUSTER),
                    ..delta(CLUSTER, &[], &[], "")
                });
                let subscribe: Vec<&str> = self.interest.iter().map(String::as_str).collect();
                self.send(DeltaRequest {
                    initial_resource_versions: have(self, ENDPOINT),
                    ..delta(ENDPOINT, &subscribe, &[], "")
                });
            }

            fn deliver(&mut self, reject: bool) -> bool {
                let Some(response) = self.queue.pop_front() else {
                    return false;
                };
                let t = response.type_url.clone();
                if reject {
                    self.send(delta_nack(&t, &response.nonce, "rejected"));
                    return true;
                }
                let view = self.view.entry(t.clone()).or_default();
                for r in &response.resources {
                    if t == CLUSTER || self.interest.contains(&r.name) {
                        view.insert(r.name.clone(), r.version.clone());
                    }
                }
                for name in &response.removed_resources {
                    view.remove(name);
                }
                self.send(delta_ack(&t, &response.nonce));
                true
            }

            fn set_interest(&mut self, interest: BTreeSet<String>) {
                let subscribe: Vec<&str> = interest
                    .difference(&self.interest)
                    .map(String::as_str)
                    .collect();
                let unsubscribe: Vec<&str> = self
                    .interest
                    .difference(&interest)
                    .map(String::as_str)
                    .collect();
                let request = delta(ENDPOINT, &subscribe, &unsubscribe, "");
                self.view
                    .entry(ENDPOINT.to_owned())
                    .or_default()
                    .retain(|name, _| interest.contains(name));
                self.interest = interest;
                self.send(request);
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn sotw_proxy_converges_on_latest_snapshot(ops in proptest::collection::vec(op(), 0..40)) {
                let mut proxy = SotwProxy::default();
                let mut latest: Option<Arc<Snapshot>> = None;
                proxy.connect(None);
                for (n, op) in ops.iter().enumerate() {
                    match op {
                        Op::Snapshot { clusters, endpoints } => {
                            let snapshot = build(n, clusters, endpoints);
                            let responses = proxy.conn.on_snapshot(Arc::clone(&snapshot));
                            proxy.queue.extend(responses);
                            latest = Some(snapshot);
                        }
                        Op::Interest(interest) => proxy.set_interest(interest.clone()),
                        Op::Deliver { reject } => { proxy.deliver(*reject); }
                        Op::Reconnect => proxy.connect(latest.as_ref()),
                    }
                }
                let mut steps = 0;
                while proxy.deliver(false) {
                    steps += 1;
                    prop_assert!(steps < DRAIN_LIMIT, "protocol does not quiesce");
                }
                let Some(latest) = latest else {
                    prop_assert!(proxy.view.values().all(BTreeMap::is_empty));
                    return Ok(());
                };
                // A type without an outstanding NACK runs exactly what is desired.
                if proxy.conn.last_nack(CLUSTER).is_none() {
                    let clusters = proxy.view.get(CLUSTER).cloned().unwrap_or_default();
                    prop_assert_eq!(clusters, of_type(&latest, CLUSTER));
                    prop_assert!(proxy.conn.acked_version(CLUSTER).is_some());
                }
                let endpoints = proxy.view.get(ENDPOINT).cloned().unwrap_or_default();
                if proxy.conn.last_nack(ENDPOINT).is_none() {
                    let wanted = of_type(&latest, ENDPOINT);
                    for name in &proxy.interest {
                        if let Some(version) = wanted.get(name) {
                            prop_assert_eq!(endpoints.get(name), Some(version));
                        }
                    }
                }
                prop_assert!(endpoints.keys().all(|n| proxy.interest.contains(n)));
                // Whatever was rejected or accepted, identical content is never sent again.
                prop_assert!(proxy.conn.on_snapshot(latest).is_empty(), "identical content resent");
            }

            #[test]
            fn delta_proxy_converges_on_latest_snapshot(ops in proptest::collection::vec(op(), 0..40)) {
                let mut proxy = DeltaProxy::default();
                let mut latest: Option<Arc<Snapshot>> = None;
                proxy.connect(None);
                for (n, op) in ops.iter().enumerate() {
                    match op {
                        Op::Snapshot { clusters, endpoints } => {
                            let snapshot = build(n, clusters, endpoints);
                            let responses = proxy.conn.on_snapshot(Arc::clone(&snapshot));
                            proxy.queue.extend(responses);
                            latest = Some(snapshot);
                        }
                        Op::Interest(interest) => proxy.set_interest(interest.clone()),
                        Op::Deliver { reject } => { proxy.deliver(*reject); }
                        Op::Reconnect => proxy.connect(latest.as_ref()),
                    }
                }
                let mut steps = 0;
                while proxy.deliver(false) {
                    steps += 1;
                    prop_assert!(steps < DRAIN_LIMIT, "protocol does not quiesce");
                }
                let Some(latest) = latest else {
                    prop_assert!(proxy.view.values().all(BTreeMap::is_empty));
                    return Ok(());
                };
                // A type without an outstanding NACK runs exactly what is desired.
                if proxy.conn.last_nack(CLUSTER).is_none() {
                    let clusters = proxy.view.get(CLUSTER).cloned().unwrap_or_default();
                    prop_assert_eq!(clusters, of_type(&latest, CLUSTER));
                    prop_assert!(proxy.conn.acked_version(CLUSTER).is_some());
                }
                if proxy.conn.last_nack(ENDPOINT).is_none() {
                    let endpoints = proxy.view.get(ENDPOINT).cloned().unwrap_or_default();
                    let mut wanted = of_type(&latest, ENDPOINT);
                    wanted.retain(|name, _| proxy.interest.contains(name));
                    prop_assert_eq!(endpoints, wanted);
                }
                // Whatever was rejected or accepted, identical content is never sent again.
                prop_assert!(proxy.conn.on_snapshot(latest).is_empty(), "identical content resent");
            }
        }
    }
}
