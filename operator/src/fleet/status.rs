//! What a fleet reports on its Gateway (pure): `status.addresses` from the fleet Service, and
//! one condition of its own saying whether the fleet is as its settings ask.
//!
//! The translator owns the Gateway API conditions (Accepted, Programmed); the fleet's verdict is
//! a separate, domain-prefixed condition type so the two writers never flip each other's
//! conditions. Writing keeps every other condition as it is.

use gateway_api::apis::standard::gateways::GatewayStatusAddresses;
use serde_json::{Value, json};

/// The fleet's condition type on a Gateway.
pub const FLEET_CONDITION: &str = "operator.gateway.envoyproxy.io/ProxyFleet";

/// Reasons of [`FLEET_CONDITION`].
pub mod reason {
    pub const APPLIED: &str = "Applied";
    /// Gateway API's reason for unusable infrastructure parameters.
    pub const INVALID_PARAMETERS: &str = "InvalidParameters";
    pub const CONFLICT: &str = "Conflict";
    pub const APPLY_FAILED: &str = "ApplyFailed";
}

/// The addresses of a live fleet Service: its load balancer ingress, or for a Service that is
/// not of type `LoadBalancer`, its cluster IPs. A `LoadBalancer` Service still waiting for its
/// ingress has none yet, as upstream reports it: its cluster IP is usually unreachable from
/// where clients are, and a client reading the address as soon as one shows (the conformance
/// suite does) would keep the wrong one.
pub fn addresses(service: &Value) -> Vec<GatewayStatusAddresses> {
    let address = |type_: &str, value: &str| GatewayStatusAddresses {
        r#type: Some(type_.to_owned()),
        value: value.to_owned(),
    };
    let mut out = Vec::new();
    for ingress in service
        .pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(ip) = ingress.get("ip").and_then(Value::as_str) {
            out.push(address("IPAddress", ip));
        } else if let Some(host) = ingress.get("hostname").and_then(Value::as_str) {
            out.push(address("Hostname", host));
        }
    }
    let load_balancer =
        service.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer");
    if out.is_empty() && !load_balancer {
        let ips: Vec<&str> = match service
            .pointer("/spec/clusterIPs")
            .and_then(Value::as_array)
        {
            Some(list) => list.iter().filter_map(Value::as_str).collect(),
            None => service
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .into_iter()
                .collect(),
        };
        out.extend(
            ips.into_iter()
                .filter(|ip| *ip != "None")
                .map(|ip| address("IPAddress", ip)),
        );
    }
    out
}

/// The fleet's verdict on a Gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub ok: bool,
    pub reason: &'static str,
    pub message: String,
}

/// The status patch for `live` (the Gateway as read): its conditions with ours replaced or
/// added, and `addresses` when known. `None` when the live status already says all of it. The
/// transition time moves only when our condition's status changes.
pub fn status_patch(
    live: &Value,
    verdict: &Verdict,
    addresses: Option<&[GatewayStatusAddresses]>,
    now: &str,
) -> Option<Value> {
    let generation = live.pointer("/metadata/generation").cloned();
    let mut conditions: Vec<Value> = live
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let status = if verdict.ok { "True" } else { "False" };
    let previous = conditions
        .iter()
        .position(|c| c.get("type").and_then(Value::as_str) == Some(FLEET_CONDITION));
    let transition = previous
        .and_then(|i| {
            let c = &conditions[i];
            (c.get("status").and_then(Value::as_str) == Some(status))
                .then(|| c.get("lastTransitionTime").cloned())
                .flatten()
        })
        .unwrap_or_else(|| json!(now));
    let ours = json!({
        "type": FLEET_CONDITION,
        "status": status,
        "reason": verdict.reason,
        "message": verdict.message,
        "observedGeneration": generation,
        "lastTransitionTime": transition,
    });
    let mut changed = false;
    match previous {
        Some(i) if conditions[i] == ours => {}
        Some(i) => {
            conditions[i] = ours;
            changed = true;
        }
        None => {
            conditions.push(ours);
            changed = true;
        }
    }
    let mut status = json!({ "conditions": conditions });
    if let Some(addresses) = addresses {
        let wanted = serde_json::to_value(addresses).unwrap_or_default();
        if live.pointer("/status/addresses") != Some(&wanted) {
            changed = true;
        }
        status["addresses"] = wanted;
    }
    changed.then(|| {
        json!({
            // Optimistic concurrency: a status written meanwhile (the translator's) is never
            // overwritten with conditions read before it.
            "metadata": {"resourceVersion": live.pointer("/metadata/resourceVersion")},
            "status": status,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_balancer_service_without_ingress_has_no_address_yet() {
        let svc = json!({"spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.7"}});
        assert!(addresses(&svc).is_empty());
        let svc = json!({
            "spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.7"},
            "status": {"loadBalancer": {"ingress": [{"ip": "10.214.0.5"}]}}
        });
        assert_eq!(addresses(&svc)[0].value, "10.214.0.5");
    }

    #[test]
    fn load_balancer_ingress_wins_over_the_cluster_ip() {
        let svc = json!({"spec": {"clusterIP": "10.0.0.7", "clusterIPs": ["10.0.0.7"]}});
        let a = addresses(&svc);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].value, "10.0.0.7");
        let svc = json!({
            "spec": {"clusterIP": "10.0.0.7"},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}, {"hostname": "lb.example.com"}]}}
        });
        let a = addresses(&svc);
        assert_eq!(
            a.iter()
                .map(|a| (a.r#type.clone().unwrap_or_default(), a.value.clone()))
                .collect::<Vec<_>>(),
            [
                ("IPAddress".to_owned(), "203.0.113.9".to_owned()),
                ("Hostname".to_owned(), "lb.example.com".to_owned())
            ]
        );
    }

    #[test]
    fn our_condition_is_replaced_others_kept_and_no_change_writes_nothing() {
        let live = json!({
            "metadata": {"generation": 2, "resourceVersion": "7"},
            "status": {"conditions": [
                {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "", "lastTransitionTime": "t0"}
            ]}
        });
        let bad = Verdict {
            ok: false,
            reason: reason::INVALID_PARAMETERS,
            message: "EnvoyProxy shop/big: spec.provider.kubernetes.envoyHpa.minReplicas: 5 is greater than maxReplicas (3)".into(),
        };
        let patch = status_patch(&live, &bad, None, "t1").expect("a change");
        let conditions = patch["status"]["conditions"].as_array().expect("list");
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[0]["type"], "Accepted");
        assert_eq!(conditions[1]["status"], "False");
        assert_eq!(patch["metadata"]["resourceVersion"], "7");

        let mut after = live.clone();
        after["status"] = patch["status"].clone();
        assert_eq!(status_patch(&after, &bad, None, "t2"), None);
    }
}
