//! Applying manifests written as JSON in tests: server-side apply with the harness's field
//! manager, for any kind (the API resource is derived from apiVersion and kind).

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, TypeMeta};
use kube::{Api, Client};

use crate::cluster::FIELD_MANAGER;

/// Server-side applies `obj` in `namespace` (None for cluster-scoped kinds); panics with the
/// object's name and the API's answer when the apiserver refuses it.
pub async fn apply(client: &Client, namespace: Option<&str>, obj: serde_json::Value) {
    let types: TypeMeta =
        serde_json::from_value(obj.clone()).expect("manifest has apiVersion and kind");
    let gvk = GroupVersionKind::try_from(&types).expect("valid apiVersion");
    let ar = ApiResource::from_gvk(&gvk);
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let name = obj["metadata"]["name"]
        .as_str()
        .expect("manifest has metadata.name")
        .to_owned();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&obj),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {} {name}: {e}", types.kind));
}

/// A Service on port 80 and the EndpointSlice the endpoint controller would make for it,
/// pointing at `address:8080`.
pub async fn service_with_endpoint(
    client: &Client,
    namespace: &str,
    name: &str,
    address: std::net::IpAddr,
) {
    apply(
        client,
        Some(namespace),
        serde_json::json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }),
    )
    .await;
    endpoint_slice(client, namespace, name, address).await;
}

/// (Re)points the Service `name` at `address:8080`.
pub async fn endpoint_slice(
    client: &Client,
    namespace: &str,
    name: &str,
    address: std::net::IpAddr,
) {
    apply(client, Some(namespace), serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-1"), "labels": {"kubernetes.io/service-name": name}},
        "addressType": if address.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{"addresses": [address.to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    }))
    .await;
}

/// A GatewayClass `class` for `controller_name`.
pub async fn gateway_class(client: &Client, class: &str, controller_name: &str) {
    apply(
        client,
        None,
        serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": class}, "spec": {"controllerName": controller_name}
        }),
    )
    .await;
}

/// A GatewayClass and a Gateway `gateway` of it with one HTTP listener `http` on `port`.
pub async fn http_gateway(
    client: &Client,
    namespace: &str,
    gateway: &str,
    class: &str,
    controller_name: &str,
    port: u16,
) {
    gateway_class(client, class, controller_name).await;
    apply(
        client,
        Some(namespace),
        serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": gateway},
            "spec": {"gatewayClassName": class,
                     "listeners": [{"name": "http", "protocol": "HTTP", "port": port}]}
        }),
    )
    .await;
}
