//! The project's CRDs and the Gateway API CRDs on a real kube-apiserver: the EnvoyGateway schema
//! applies defaults and rejects bad input with the field named; Gateway API objects round-trip.

use eg_crds::envoy_gateway::DEFAULT_VERSION;
use eg_crds::{EnvoyGateway, EnvoyGatewaySpec};
use eg_e2e::{shared_cluster, with_temp_namespace};
use gateway_api::apis::standard::httproutes::HttpRoute as HTTPRoute;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::{Api, Client, CustomResourceExt};
use serde_json::{Value, json};

fn envoy_gateways(client: Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client, ns, &ApiResource::erase::<EnvoyGateway>(&()))
}

fn envoy_gateway(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "operator.gateway.envoyproxy.io/v1alpha1",
        "kind": "EnvoyGateway",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("valid DynamicObject")
}

fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

#[tokio::test]
async fn envoygateway_crd_is_established_with_its_names_and_columns() {
    let client = shared_cluster().client();
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let crd = crds
        .get(EnvoyGateway::crd_name())
        .await
        .expect("EnvoyGateway CRD");
    assert!(is_established(&crd), "not Established: {:?}", crd.status);
    assert_eq!(crd.spec.names.short_names, Some(vec!["eg".to_owned()]));
    assert_eq!(crd.spec.scope, "Namespaced");
    let version = &crd.spec.versions[0];
    assert!(
        version
            .subresources
            .as_ref()
            .is_some_and(|s| s.status.is_some())
    );
    let columns: Vec<String> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.to_uppercase())
        .collect();
    assert_eq!(columns, ["READY", "VERSION", "AGE"]);
}

#[tokio::test]
async fn minimal_envoygateway_is_stored_with_schema_defaults() {
    with_temp_namespace(|client, ns| async move {
        let raw = envoy_gateways(client.clone(), &ns);
        raw.create(
            &PostParams::default(),
            &envoy_gateway("dev", json!({"gatewayClassName": "dev"})),
        )
        .await?;
        // Read back untyped: the defaults must come from the apiserver, not from Rust.
        let stored = raw.get("dev").await?;
        let spec = &stored.data["spec"];
        assert_eq!(spec["version"], DEFAULT_VERSION);
        assert_eq!(spec["controlPlane"]["replicas"], 1);
        assert_eq!(spec["controlPlane"]["antiAffinity"], "Preferred");
        assert_eq!(spec["proxy"]["replicas"], 2);
        assert_eq!(spec["proxy"]["antiAffinity"], "Preferred");
        assert_eq!(spec["proxy"]["service"]["type"], "LoadBalancer");
        assert_eq!(spec["certificates"]["duration"], "8760h");
        assert_eq!(spec["certificates"]["renewBefore"], "720h");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn design_example_round_trips_typed() {
    with_temp_namespace(|client, ns| async move {
        let spec: EnvoyGatewaySpec = serde_json::from_value(json!({
            "version": "0.1.0",
            "gatewayClassName": "production",
            "watchNamespaces": ["shop", "payments"],
            "controlPlane": {
                "replicas": 3,
                "antiAffinity": "Required",
                "podDisruptionBudget": {"maxUnavailable": 1},
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}
            },
            "proxy": {
                "replicas": 2,
                "autoscaling": {"minReplicas": 2, "maxReplicas": 10, "targetCPUUtilizationPercentage": 70},
                "antiAffinity": "Preferred",
                "topologySpread": {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone"},
                "podDisruptionBudget": {"minAvailable": 1},
                "service": {"type": "LoadBalancer", "annotations": {"lb.example/scheme": "internal"}}
            },
            "certificates": {"duration": "8760h", "renewBefore": "720h"}
        }))?;
        let api: Api<EnvoyGateway> = Api::namespaced(client, &ns);
        api.create(&PostParams::default(), &EnvoyGateway::new("production", spec.clone()))
            .await?;
        let stored = api.get("production").await?;
        assert_eq!(stored.spec, spec);
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn invalid_envoygateways_are_rejected_naming_the_field() {
    with_temp_namespace(|client, ns| async move {
        let raw = envoy_gateways(client, &ns);
        let cases = [
            (json!({"gatewayClassName": "a", "controlPlane": {"replicas": -1}}),
                "spec.controlPlane.replicas", "greater than or equal to 1"),
            (json!({"gatewayClassName": "a", "proxy": {"replicas": -3}}),
                "spec.proxy.replicas", "greater than or equal to 0"),
            (json!({"gatewayClassName": "a", "controlPlane": {"antiAffinity": "Sometimes"}}),
                "spec.controlPlane.antiAffinity", "Unsupported value"),
            (json!({"gatewayClassName": "a", "proxy": {"replicas": "three"}}),
                "spec.proxy.replicas", "must be of type integer"),
            (json!({"gatewayClassName": "a", "watchNamespaces": "shop"}),
                "spec.watchNamespaces", "must be of type array"),
            (json!({"gatewayClassName": "a", "certificates": {"duration": "one year"}}),
                "spec.certificates.duration", "should match"),
            (json!({"gatewayClassName": "a", "proxy": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}}),
                "spec.proxy.autoscaling.minReplicas", "minReplicas must not exceed maxReplicas"),
            (json!({"gatewayClassName": "a", "proxy": {"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}}}),
                "spec.proxy.podDisruptionBudget", "exactly one of minAvailable and maxUnavailable"),
            (json!({"controlPlane": {"replicas": 1}}),
                "spec.gatewayClassName", "Required value"),
            (json!({"gatewayClassName": "Not_A_Name"}),
                "spec.gatewayClassName", "should match"),
        ];
        for (i, (spec, field, phrase)) in cases.into_iter().enumerate() {
            let name = format!("bad-{i}");
            let err = raw
                .create(&PostParams::default(), &envoy_gateway(&name, spec.clone()))
                .await
                .expect_err(&format!("{spec} must be rejected"));
            let kube::Error::Api(status) = err else {
                panic!("{spec}: expected an API error, got {err:?}");
            };
            assert_eq!(status.code, 422, "{spec}: {status:?}");
            assert!(
                status.message.contains(field) && status.message.contains(phrase),
                "{spec}: message should name {field} and say {phrase:?}, was: {}",
                status.message
            );
        }
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn gateway_api_crds_of_the_experimental_channel_are_established() {
    let crds: Api<CustomResourceDefinition> = Api::all(shared_cluster().client());
    for kind in [
        "gatewayclasses",
        "gateways",
        "httproutes",
        "grpcroutes",
        "tlsroutes",
        "tcproutes",
        "udproutes",
        "referencegrants",
        "backendtlspolicies",
    ] {
        let name = format!("{kind}.gateway.networking.k8s.io");
        let crd = crds
            .get(&name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(is_established(&crd), "{name} not Established");
    }
}

#[tokio::test]
async fn httproute_round_trips() {
    with_temp_namespace(|client, ns| async move {
        let route: HTTPRoute = serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "shop"},
            "spec": {
                "parentRefs": [{"name": "production", "sectionName": "https"}],
                "hostnames": ["shop.example.com"],
                "rules": [{
                    "matches": [{
                        "path": {"type": "PathPrefix", "value": "/api"},
                        "headers": [{"name": "x-canary", "value": "true"}],
                        "method": "GET"
                    }],
                    "filters": [{
                        "type": "RequestHeaderModifier",
                        "requestHeaderModifier": {"add": [{"name": "x-env", "value": "prod"}]}
                    }],
                    "backendRefs": [
                        {"name": "shop-v1", "port": 8080, "weight": 90},
                        {"name": "shop-v2", "port": 8080, "weight": 10}
                    ]
                }]
            }
        }))?;
        let api: Api<HTTPRoute> = Api::namespaced(client, &ns);
        api.create(&PostParams::default(), &route).await?;
        let stored = api.get("shop").await?;
        let rule = &stored.spec.rules.as_ref().expect("rules")[0];
        let backends = rule.backend_refs.as_ref().expect("backendRefs");
        assert_eq!(
            stored.spec.hostnames,
            Some(vec!["shop.example.com".to_owned()])
        );
        assert_eq!(backends.len(), 2);
        assert_eq!(backends[0].name, "shop-v1");
        assert_eq!(backends[0].weight, Some(90));
        assert_eq!(backends[1].port, Some(8080));
        let stored_json = serde_json::to_value(&stored.spec)?;
        let sent_json = serde_json::to_value(&route.spec)?;
        let stored_match = &stored_json["rules"][0]["matches"][0];
        let sent_match = &sent_json["rules"][0]["matches"][0];
        assert_eq!(stored_match["path"], sent_match["path"]);
        assert_eq!(stored_match["method"], "GET");
        assert_eq!(stored_match["headers"][0]["name"], "x-canary");
        // The Gateway API schema's own default, applied by the apiserver.
        assert_eq!(stored_match["headers"][0]["type"], "Exact");
        assert_eq!(
            stored_json["rules"][0]["filters"],
            sent_json["rules"][0]["filters"]
        );
        assert_eq!(stored_json["parentRefs"][0]["sectionName"], "https");
        Ok(())
    })
    .await;
}
