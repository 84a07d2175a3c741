//! Whether each Gateway's proxies run its current configuration (pure): a Gateway is
//! `Programmed=True` only after a proxy ACKed the snapshot version last published for it, and a
//! NACK turns it `False` with Envoy's own message while the previous configuration keeps serving.
//! The translator's Programmed condition says the configuration is valid; this refines it with
//! what the proxies did with it.

use std::collections::BTreeMap;

use gateway_api::apis::standard::gateways::GatewayStatus;

use crate::xds::server::ProxyEvent;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct GatewayProxies {
    published: Option<String>,
    acked: Option<String>,
    /// Per type URL, the last version a proxy ACKed.
    acked_types: BTreeMap<String, String>,
    connected: usize,
    /// (version, type URL, Envoy's message) of the last rejection.
    nack: Option<(String, String, String)>,
}

/// Per Gateway, what was published and what the proxies answered.
#[derive(Debug, Clone, Default)]
pub struct ProgrammedState {
    gateways: BTreeMap<String, GatewayProxies>,
}

impl ProgrammedState {
    /// Records that `version` of `gateway`'s snapshot was published.
    pub fn published(&mut self, gateway: &str, version: &str) {
        let g = self.gateways.entry(gateway.to_owned()).or_default();
        g.published = Some(version.to_owned());
    }

    /// Applies a proxy event; returns whether it can change a status.
    pub fn on_event(&mut self, event: &ProxyEvent) -> bool {
        match event {
            ProxyEvent::Ack {
                gateway,
                version,
                type_url,
                ..
            } => {
                let g = self.gateways.entry(gateway.clone()).or_default();
                let before = (g.acked.clone(), g.nack.clone());
                g.acked = Some(version.clone());
                g.acked_types.insert(type_url.clone(), version.clone());
                // A later version accepted supersedes an earlier rejection.
                if g.nack.as_ref().is_some_and(|(v, _, _)| v != version) {
                    g.nack = None;
                }
                (g.acked.clone(), g.nack.clone()) != before
            }
            ProxyEvent::Nack {
                gateway,
                version,
                type_url,
                message,
                ..
            } => {
                let g = self.gateways.entry(gateway.clone()).or_default();
                let nack = Some((version.clone(), type_url.clone(), message.clone()));
                let changed = g.nack != nack;
                g.nack = nack;
                changed
            }
            ProxyEvent::Connected { gateway, .. } => {
                self.gateways.entry(gateway.clone()).or_default().connected += 1;
                false
            }
            ProxyEvent::Disconnected { gateway, .. } => {
                let g = self.gateways.entry(gateway.clone()).or_default();
                g.connected = g.connected.saturating_sub(1);
                false
            }
            // A refused stream never served anything, so it says nothing about the Gateway's
            // proxies (and its claim is unproven).
            ProxyEvent::Refused { .. } => false,
        }
    }

    /// How many proxy streams of `gateway` are open.
    pub fn connected(&self, gateway: &str) -> usize {
        self.gateways.get(gateway).map_or(0, |g| g.connected)
    }

    /// Whether a proxy of `gateway` ACKed `type_url` at `version`.
    pub fn acked_type(&self, gateway: &str, type_url: &str, version: &str) -> bool {
        self.gateways
            .get(gateway)
            .and_then(|g| g.acked_types.get(type_url))
            .is_some_and(|v| v == version)
    }

    /// Whether a proxy of `gateway` ACKed the version last published for it.
    pub fn current(&self, gateway: &str) -> bool {
        self.gateways
            .get(gateway)
            .is_some_and(|g| g.published.is_some() && g.acked == g.published)
    }

    /// Rewrites the `Programmed` condition of `status` (the Gateway `gateway`) with what its
    /// proxies did, when the translator considered it programmable.
    pub fn refine(&self, gateway: &str, status: &mut GatewayStatus) {
        let Some(conditions) = status.conditions.as_mut() else {
            return;
        };
        let Some(programmed) = conditions.iter_mut().find(|c| c.type_ == "Programmed") else {
            return;
        };
        if programmed.status != "True" {
            return;
        }
        let g = self.gateways.get(gateway).cloned().unwrap_or_default();
        let published = g.published.clone().unwrap_or_default();
        if let Some((version, type_url, message)) =
            g.nack.as_ref().filter(|(v, _, _)| *v == published)
        {
            programmed.status = "False".into();
            programmed.reason = "Invalid".into();
            let kind = type_url.rsplit('.').next().unwrap_or(type_url);
            programmed.message =
                format!("Envoy rejected {kind} of configuration version {version}: {message}");
        } else if g.acked.as_deref() != Some(published.as_str()) {
            programmed.status = "False".into();
            programmed.reason = "Pending".into();
            programmed.message =
                format!("waiting for a proxy to accept configuration version {published}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn status() -> GatewayStatus {
        GatewayStatus {
            conditions: Some(vec![Condition {
                type_: "Programmed".into(),
                status: "True".into(),
                reason: "Programmed".into(),
                message: String::new(),
                observed_generation: Some(1),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            }]),
            ..GatewayStatus::default()
        }
    }

    fn programmed(s: &GatewayStatus) -> (String, String) {
        let c = &s.conditions.as_ref().expect("conditions")[0];
        (c.status.clone(), c.reason.clone())
    }

    fn ack(version: &str) -> ProxyEvent {
        ProxyEvent::Ack {
            gateway: "ns/gw".into(),
            node: "p".into(),
            type_url: "type.googleapis.com/envoy.config.route.v3.RouteConfiguration".into(),
            version: version.into(),
        }
    }

    #[test]
    fn pending_until_the_published_version_is_acked() {
        let mut p = ProgrammedState::default();
        p.published("ns/gw", "3");
        let mut s = status();
        p.refine("ns/gw", &mut s);
        assert_eq!(programmed(&s), ("False".into(), "Pending".into()));
        assert!(p.on_event(&ack("2")));
        let mut s = status();
        p.refine("ns/gw", &mut s);
        assert_eq!(
            programmed(&s).1,
            "Pending",
            "an older version does not count"
        );
        p.on_event(&ack("3"));
        let mut s = status();
        p.refine("ns/gw", &mut s);
        assert_eq!(programmed(&s), ("True".into(), "Programmed".into()));
    }

    #[test]
    fn nack_of_the_current_version_shows_envoys_message() {
        let mut p = ProgrammedState::default();
        p.published("ns/gw", "4");
        p.on_event(&ProxyEvent::Nack {
            gateway: "ns/gw".into(),
            node: "p".into(),
            type_url: "type.googleapis.com/envoy.config.route.v3.RouteConfiguration".into(),
            version: "4".into(),
            message: "missing ): (bad".into(),
        });
        let mut s = status();
        p.refine("ns/gw", &mut s);
        assert_eq!(programmed(&s), ("False".into(), "Invalid".into()));
        let message = &s.conditions.as_ref().expect("conditions")[0].message;
        assert!(message.contains("RouteConfiguration") && message.contains("missing ): (bad"));
        // A newer accepted version clears it.
        p.published("ns/gw", "5");
        p.on_event(&ack("5"));
        let mut s = status();
        p.refine("ns/gw", &mut s);
        assert_eq!(programmed(&s).0, "True");
    }
}
