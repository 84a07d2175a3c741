//! A stand-in for the kubelet's status reports, for API-level tests that do not need the pods to
//! run (the process kubelet of [`crate::kubelet`] runs them for real): marks the pods of a workload Running and Ready through the status subresource,
//! exactly as a kubelet would report them, so kube-controller-manager counts the Deployment
//! available. Nothing runs in those pods; tests that need a running process must not use this.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};

/// Reports every pod matching `selector` in `namespace` as Running and Ready; returns how many.
pub async fn report_pods_ready(
    client: &Client,
    namespace: &str,
    selector: &str,
) -> Result<usize, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods.list(&ListParams::default().labels(selector)).await?;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let mut count = 0;
    for pod in list.items {
        let Some(name) = pod.metadata.name else {
            continue;
        };
        let status = serde_json::json!({
            "status": {
                "phase": "Running",
                "podIP": "127.0.0.1",
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                    {"type": "Ready", "status": "True", "lastTransitionTime": now}
                ]
            }
        });
        match pods
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            Ok(_) => count += 1,
            // Replaced by a rollout between the list and the patch.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(count)
}
