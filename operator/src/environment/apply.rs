//! Carries out a [`Plan`] (I/O): server-side apply with one field manager in topological waves,
//! waiting for each wave's readiness rules before the next, then prunes in the plan's delete
//! order. Unchanged objects are not written at all, so reconciling an environment that is as
//! desired makes no mutating API call.

use std::collections::BTreeMap;

use eg_graph::{Action, ObjectRef, Plan, ResourceGraph};
use futures::future::try_join_all;
use kube::Client;
use kube::api::{DeleteParams, Patch, PatchParams};

use super::dereference::api_for;
use super::names::FIELD_MANAGER;

/// Errors applying a plan.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("applying {id}: {source}")]
    Apply {
        id: Box<ObjectRef>,
        #[source]
        source: kube::Error,
    },
    #[error("deleting {id}: {source}")]
    Delete {
        id: Box<ObjectRef>,
        #[source]
        source: kube::Error,
    },
    #[error("reading {id}: {source}")]
    Read {
        id: Box<ObjectRef>,
        #[source]
        source: kube::Error,
    },
}

impl ApplyError {
    /// Stable category for metric labels and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            ApplyError::Apply { .. } => "apply",
            ApplyError::Delete { .. } => "delete",
            ApplyError::Read { .. } => "read",
        }
    }
}

/// How far an apply got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Every object is applied and ready, and every orphan was deleted.
    Complete { written: usize, deleted: usize },
    /// A wave is applied but `id` is not ready yet (`rule` says what is awaited); later waves and
    /// pruning wait for the next reconcile.
    Waiting {
        written: usize,
        id: ObjectRef,
        rule: String,
    },
}

/// Applies `plan` for `desired`, given the live objects the plan was made from.
pub async fn apply(
    client: &Client,
    desired: &ResourceGraph,
    plan: &Plan,
    live: &[serde_json::Value],
) -> Result<ApplyOutcome, ApplyError> {
    let actions: BTreeMap<&ObjectRef, &Action> =
        plan.steps.iter().map(|s| (&s.id, &s.action)).collect();
    let mut current: BTreeMap<ObjectRef, serde_json::Value> = live
        .iter()
        .filter_map(|o| ObjectRef::from_object(o).ok().map(|id| (id, o.clone())))
        .collect();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut written = 0;

    for wave in desired.waves() {
        let writes = wave.iter().filter(|id| {
            matches!(
                actions.get(id),
                Some(Action::Create | Action::Update { .. })
            )
        });
        let applied = try_join_all(writes.map(|id| {
            let params = &params;
            async move {
                let node = desired.node(id).expect("wave members are graph nodes");
                let result = api_for(client, id)
                    .patch(&id.name, params, &Patch::Apply(&node.object))
                    .await
                    .map_err(|source| ApplyError::Apply {
                        id: Box::new(id.clone()),
                        source,
                    })?;
                let value = serde_json::to_value(&result).unwrap_or_default();
                tracing::info!(object = %id, "applied");
                Ok::<_, ApplyError>((id.clone(), value))
            }
        }))
        .await?;
        written += applied.len();
        current.extend(applied);

        for id in &wave {
            let node = desired.node(id).expect("wave members are graph nodes");
            let ready = current
                .get(id)
                .is_some_and(|live| node.readiness.is_ready(live));
            if !ready {
                return Ok(ApplyOutcome::Waiting {
                    written,
                    id: id.clone(),
                    rule: node.readiness.describe(),
                });
            }
        }
    }

    let mut deleted = 0;
    for step in &plan.steps {
        if step.action != Action::Delete {
            continue;
        }
        let result = api_for(client, &step.id)
            .delete(&step.id.name, &DeleteParams::background())
            .await;
        match result {
            Ok(_) => {
                deleted += 1;
                tracing::info!(object = %step.id, "pruned");
            }
            // Already gone: pruning is idempotent.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(ApplyError::Delete {
                    id: Box::new(step.id.clone()),
                    source,
                });
            }
        }
    }
    Ok(ApplyOutcome::Complete { written, deleted })
}
