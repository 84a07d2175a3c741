//! The plan: what the executor must do to turn the live objects into the desired graph.
//!
//! Planning is a pure function of (desired graph, live objects, ownership), so everything the
//! operator would change can be shown before it happens (like `terraform plan`), tested on JSON
//! fixtures, and checked by property tests against [`simulate_apply`], a model of the executor.
//!
//! Two rules carry the safety of the whole operator and are enforced only here:
//! - a live object is deleted only if [`Ownership::owns`] it;
//! - a field is reported as removed only if this field manager owned it (server-side apply
//!   `managedFields`), so fields set by other controllers or by defaulting are never touched.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

use crate::graph::ResourceGraph;
use crate::object_ref::ObjectRef;
use crate::path::{self, Segment};

/// Who owns what: the field manager used for server-side apply and the labels that mark an
/// object as this owner's.
#[derive(Clone, Debug)]
pub struct Ownership {
    pub field_manager: String,
    pub owner_uid: String,
    pub owner_uid_label: String,
    pub labels: BTreeMap<String, String>,
}

impl Ownership {
    /// True only if the live object carries every label in `labels` with the same value AND
    /// label `owner_uid_label` == `owner_uid`.
    ///
    /// An empty `owner_uid` owns nothing: it would otherwise match objects whose uid label is
    /// empty, and a misconfigured owner must fail towards deleting less.
    pub fn owns(&self, live: &Value) -> bool {
        if self.owner_uid.is_empty() {
            return false;
        }
        let Some(live_labels) = live.pointer("/metadata/labels").and_then(Value::as_object) else {
            return false;
        };
        let has = |k: &str, v: &str| live_labels.get(k).and_then(Value::as_str) == Some(v);
        has(&self.owner_uid_label, &self.owner_uid) && self.labels.iter().all(|(k, v)| has(k, v))
    }
}

/// One field that differs. `before` is `None` when the live object lacks the field, `after` is
/// `None` when the field is to be removed.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FieldChange {
    pub path: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    Create,
    Update { changes: Vec<FieldChange> },
    Unchanged,
    Delete,
}

/// One object's action. `wave` is the desired node's wave, `None` for deletes (they follow
/// every wave).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Step {
    pub id: ObjectRef,
    pub wave: Option<usize>,
    #[serde(flatten)]
    pub action: Action,
}

/// Every step, in the order the executor runs them: desired objects by wave, then deletes.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Plan {
    pub steps: Vec<Step>,
}

/// Install order by kind: lower ranks are needed by higher ones. Deletes go by descending rank
/// so workloads stop before what they use disappears. Unknown kinds (custom resources, mostly)
/// rank last, so they are deleted first, while their CRD still exists.
pub fn kind_rank(kind: &str) -> u8 {
    const ORDER: &[&str] = &[
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "Secret",
        "ConfigMap",
        "ClusterRole",
        "Role",
        "ClusterRoleBinding",
        "RoleBinding",
        "Service",
        "EnvoyProxy",
        "GatewayClass",
        "Deployment",
        "DaemonSet",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    ];
    ORDER
        .iter()
        .position(|k| *k == kind)
        .and_then(|i| u8::try_from(i).ok())
        .unwrap_or(u8::MAX)
}

/// Plans the steps from `live` to `desired`.
///
/// Live objects without a readable identity are ignored (the API server never returns such an
/// object); if `live` lists an identity twice, the first one counts.
pub fn plan(desired: &ResourceGraph, live: &[Value], ownership: &Ownership) -> Plan {
    let live_by_id = index_live(live);
    let mut steps = Vec::new();

    for (wave, ids) in desired.waves().into_iter().enumerate() {
        for id in ids {
            let Some(node) = desired.node(&id) else {
                continue;
            };
            let action = match live_by_id.get(&id) {
                None => Action::Create,
                Some(live_obj) => {
                    let changes = diff(&node.object, live_obj, &ownership.field_manager);
                    if changes.is_empty() {
                        Action::Unchanged
                    } else {
                        Action::Update { changes }
                    }
                }
            };
            steps.push(Step {
                id,
                wave: Some(wave),
                action,
            });
        }
    }

    let mut deletes: Vec<&ObjectRef> = live_by_id
        .iter()
        .filter(|(id, obj)| desired.node(id).is_none() && ownership.owns(obj))
        .map(|(id, _)| id)
        .collect();
    deletes.sort_by_key(|id| (Reverse(kind_rank(&id.kind)), *id));
    steps.extend(deletes.into_iter().map(|id| Step {
        id: id.clone(),
        wave: None,
        action: Action::Delete,
    }));

    Plan { steps }
}

fn index_live(live: &[Value]) -> BTreeMap<ObjectRef, &Value> {
    let mut by_id = BTreeMap::new();
    for obj in live {
        if let Ok(id) = ObjectRef::from_object(obj) {
            by_id.entry(id).or_insert(obj);
        }
    }
    by_id
}

impl Plan {
    /// Whether applying the plan would change anything.
    pub fn has_changes(&self) -> bool {
        self.steps
            .iter()
            .any(|s| !matches!(s.action, Action::Unchanged))
    }

    /// (create, update, unchanged, delete).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let mut counts = (0, 0, 0, 0);
        for step in &self.steps {
            match step.action {
                Action::Create => counts.0 += 1,
                Action::Update { .. } => counts.1 += 1,
                Action::Unchanged => counts.2 += 1,
                Action::Delete => counts.3 += 1,
            }
        }
        counts
    }

    /// Human-readable plan in the spirit of `terraform plan` (the same text as `Display`).
    /// The format is pinned by golden files: change it only together with them.
    pub fn render_text(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in &self.steps {
            match &step.action {
                Action::Create => writeln!(f, "  + {}", step.id)?,
                Action::Unchanged => writeln!(f, "    {} (unchanged)", step.id)?,
                Action::Delete => writeln!(f, "  - {}", step.id)?,
                Action::Update { changes } => {
                    writeln!(f, "  ~ {}", step.id)?;
                    for c in changes {
                        let before = c.before.as_ref().map_or("(absent)".to_owned(), compact);
                        let after = c.after.as_ref().map_or("(removed)".to_owned(), compact);
                        writeln!(f, "      {}: {before} -> {after}", c.path)?;
                    }
                }
            }
        }
        let (create, update, unchanged, delete) = self.counts();
        writeln!(
            f,
            "Plan: {create} to create, {update} to update, {unchanged} unchanged, {delete} to delete."
        )
    }
}

fn compact(value: &Value) -> String {
    value.to_string()
}

/// Metadata fields the API server sets; desired objects never own them.
const SERVER_METADATA: &[&str] = &[
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "selfLink",
];

/// Every change needed to make `live` match `desired`: fields of `desired` that `live` lacks or
/// holds differently, then fields this manager applied before that `desired` no longer has.
/// Sorted by path, segment by segment (list indices numerically).
fn diff(desired: &Value, live: &Value, field_manager: &str) -> Vec<FieldChange> {
    let mut changes: Vec<(Vec<Segment>, FieldChange)> = Vec::new();

    if let Some(d) = desired.as_object() {
        let mut relevant = d.clone();
        relevant.remove("status");
        if let Some(Value::Object(meta)) = relevant.get_mut("metadata") {
            meta.retain(|k, _| !SERVER_METADATA.contains(&k.as_str()));
        }
        diff_value(
            &mut Vec::new(),
            &Value::Object(relevant),
            Some(live),
            &mut changes,
        );
    }

    for path in owned_leaves(live, field_manager) {
        if removal_relevant(&path)
            && absent_from(desired, &path)
            && let Some(before) = path::get(live, &path)
        {
            let change = FieldChange {
                path: path::render(&path),
                before: Some(before.clone()),
                after: None,
            };
            changes.push((path, change));
        }
    }

    changes.sort_by(|a, b| a.0.cmp(&b.0));
    changes.dedup_by(|a, b| a.0 == b.0);
    changes.into_iter().map(|(_, c)| c).collect()
}

/// "desired is a subset of live": maps key by key (extra live keys are defaults or other
/// managers' fields), lists by length and position, scalars by equality. A `null` map value in
/// desired asks for the field to be absent, as in server-side apply.
fn diff_value(
    path: &mut Vec<Segment>,
    desired: &Value,
    live: Option<&Value>,
    out: &mut Vec<(Vec<Segment>, FieldChange)>,
) {
    let mut record = |path: &[Segment], after: Option<Value>| {
        out.push((
            path.to_vec(),
            FieldChange {
                path: path::render(path),
                before: live.cloned(),
                after,
            },
        ));
    };
    match (desired, live) {
        (Value::Object(d), Some(Value::Object(l))) => {
            for (key, d_value) in d {
                path.push(Segment::Key(key.clone()));
                let l_value = l.get(key);
                if d_value.is_null() {
                    if let Some(l_value) = l_value.filter(|v| !v.is_null()) {
                        out.push((
                            path.clone(),
                            FieldChange {
                                path: path::render(path),
                                before: Some(l_value.clone()),
                                after: None,
                            },
                        ));
                    }
                } else {
                    diff_value(path, d_value, l_value, out);
                }
                path.pop();
            }
        }
        (Value::Array(d), Some(Value::Array(l))) if d.len() == l.len() => {
            for (i, (d_item, l_item)) in d.iter().zip(l).enumerate() {
                path.push(Segment::Index(i));
                diff_value(path, d_item, Some(l_item), out);
                path.pop();
            }
        }
        // Whole subtrees that are missing or of another type are one change: listing their
        // leaves would hide that an empty map (e.g. `emptyDir: {}`) must be created too.
        (Value::Object(_) | Value::Array(_), _) => record(path, Some(desired.clone())),
        (_, Some(l)) if scalars_equal(desired, l) => {}
        _ => record(path, Some(desired.clone())),
    }
}

fn scalars_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        // 1 and 1.0 are the same number to the API server; serde_json keeps them apart.
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Leaf paths this manager owns according to its `Apply` entry (or entries) in
/// `metadata.managedFields` of the main resource. Lists are owned as a whole: `k:`, `v:`, `i:`
/// and `.` entries are skipped, so a list field is a leaf.
fn owned_leaves(live: &Value, field_manager: &str) -> BTreeSet<Vec<Segment>> {
    let mut leaves = BTreeSet::new();
    let Some(entries) = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return leaves;
    };
    for entry in entries {
        let field = |k: &str| entry.get(k).and_then(Value::as_str);
        // Status and scale subresources are written by controllers, not by this apply.
        let main_resource = field("subresource").is_none_or(str::is_empty);
        if field("manager") == Some(field_manager)
            && field("operation") == Some("Apply")
            && main_resource
            && let Some(fields) = entry.get("fieldsV1").and_then(Value::as_object)
        {
            collect_leaves(&mut Vec::new(), fields, &mut leaves);
        }
    }
    leaves
}

fn collect_leaves(
    path: &mut Vec<Segment>,
    fields: &Map<String, Value>,
    out: &mut BTreeSet<Vec<Segment>>,
) {
    for (key, child) in fields {
        let Some(name) = key.strip_prefix("f:") else {
            continue;
        };
        path.push(Segment::Key(name.to_owned()));
        let has_field_children = child
            .as_object()
            .is_some_and(|m| m.keys().any(|k| k.starts_with("f:")));
        match child.as_object() {
            Some(m) if has_field_children => collect_leaves(path, m, out),
            _ => {
                out.insert(path.clone());
            }
        }
        path.pop();
    }
}

/// Removal is reported only where desired objects may hold fields: not `status`, and in
/// `metadata` only labels and annotations (the rest is identity or set by the server).
fn removal_relevant(path: &[Segment]) -> bool {
    match path {
        [Segment::Key(root), ..] if root == "status" => false,
        [Segment::Key(root), rest @ ..] if root == "metadata" => matches!(
            rest.first(),
            Some(Segment::Key(k)) if k == "labels" || k == "annotations"
        ),
        _ => true,
    }
}

/// Whether `desired` leaves out `path`: some map on the way lacks the key (or holds `null`). A
/// non-map on the way means desired replaces that whole value, which the diff already covers.
fn absent_from(desired: &Value, path: &[Segment]) -> bool {
    let mut cur = desired;
    for seg in path {
        let Segment::Key(key) = seg else {
            return false;
        };
        let Some(map) = cur.as_object() else {
            return false;
        };
        match map.get(key) {
            None | Some(Value::Null) => return true,
            Some(next) => cur = next,
        }
    }
    false
}

/// Pure model of what the executor does, for property tests: Create inserts the desired
/// object; Update deep-merges the desired object into the live one (maps merged key by key,
/// lists and scalars replaced, `null` removes) and then removes fields whose
/// [`FieldChange::after`] is `None`; Delete removes the live object; Unchanged leaves it.
///
/// The result keeps the order of `live`, with created objects appended in plan order.
pub fn simulate_apply(plan: &Plan, desired: &ResourceGraph, live: &[Value]) -> Vec<Value> {
    let mut objects: Vec<(Option<ObjectRef>, Value)> = live
        .iter()
        .map(|obj| (ObjectRef::from_object(obj).ok(), obj.clone()))
        .collect();
    let position = |objects: &[(Option<ObjectRef>, Value)], id: &ObjectRef| {
        objects.iter().position(|(oid, _)| oid.as_ref() == Some(id))
    };

    for step in &plan.steps {
        match &step.action {
            Action::Unchanged => {}
            Action::Create => {
                if let Some(node) = desired.node(&step.id) {
                    objects.push((Some(step.id.clone()), node.object.clone()));
                }
            }
            Action::Delete => {
                if let Some(i) = position(&objects, &step.id) {
                    objects.remove(i);
                }
            }
            Action::Update { changes } => {
                let (Some(node), Some(i)) = (desired.node(&step.id), position(&objects, &step.id))
                else {
                    continue;
                };
                let target = &mut objects[i].1;
                merge_object(target, &node.object, true);
                for change in changes.iter().filter(|c| c.after.is_none()) {
                    if let Some(p) = path::parse(&change.path) {
                        path::remove(target, &p);
                    }
                }
            }
        }
    }
    objects.into_iter().map(|(_, obj)| obj).collect()
}

fn merge_object(live: &mut Value, desired: &Value, at_root: bool) {
    let (Some(l), Some(d)) = (live.as_object_mut(), desired.as_object()) else {
        *live = desired.clone();
        return;
    };
    for (key, d_value) in d {
        // The API server ignores status on the main resource.
        if at_root && key == "status" {
            continue;
        }
        if d_value.is_null() {
            l.remove(key);
            continue;
        }
        match l.get_mut(key) {
            Some(l_value) if l_value.is_object() && d_value.is_object() => {
                merge_object(l_value, d_value, false);
            }
            _ => {
                l.insert(key.clone(), d_value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{GraphBuilder, Node};
    use crate::readiness::Readiness;
    use serde_json::json;

    const UID: &str = "0d9e-owner";

    fn ownership() -> Ownership {
        Ownership {
            field_manager: "eg-operator".to_owned(),
            owner_uid: UID.to_owned(),
            owner_uid_label: "eg.example.com/owner-uid".to_owned(),
            labels: BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    "eg-operator".to_owned(),
                ),
                (
                    "eg.example.com/instance".to_owned(),
                    "production".to_owned(),
                ),
            ]),
        }
    }

    fn owned_labels() -> Value {
        json!({
            "app.kubernetes.io/managed-by": "eg-operator",
            "eg.example.com/instance": "production",
            "eg.example.com/owner-uid": UID,
        })
    }

    fn graph(objects: Vec<Value>) -> ResourceGraph {
        let mut b = GraphBuilder::new();
        for obj in objects {
            b.add(Node::new(obj, Readiness::Exists).expect("valid object"))
                .expect("unique");
        }
        b.build().expect("valid graph")
    }

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "eg-controller", "namespace": "eg-production", "labels": owned_labels()},
            "spec": {
                "replicas": replicas,
                "template": {"spec": {"containers": [
                    {"name": "envoy-gateway", "image": image},
                ]}},
            },
        })
    }

    fn object(api: &str, kind: &str, name: &str, labels: Value) -> Value {
        json!({
            "apiVersion": api,
            "kind": kind,
            "metadata": {"name": name, "namespace": "eg-production", "labels": labels},
        })
    }

    fn only_step(p: &Plan) -> &Step {
        assert_eq!(p.steps.len(), 1, "{p:#?}");
        &p.steps[0]
    }

    #[test]
    fn owns_needs_every_label_and_the_uid() {
        let own = ownership();
        assert!(own.owns(&object("v1", "ConfigMap", "a", owned_labels())));

        let mut wrong_uid = owned_labels();
        wrong_uid["eg.example.com/owner-uid"] = json!("someone-else");
        assert!(!own.owns(&object("v1", "ConfigMap", "a", wrong_uid)));

        let mut missing_label = owned_labels();
        missing_label
            .as_object_mut()
            .expect("map")
            .remove("eg.example.com/instance");
        assert!(!own.owns(&object("v1", "ConfigMap", "a", missing_label)));

        let mut other_value = owned_labels();
        other_value["eg.example.com/instance"] = json!("staging");
        assert!(!own.owns(&object("v1", "ConfigMap", "a", other_value)));

        assert!(!own.owns(&json!({"metadata": {}})));
        assert!(!own.owns(&json!({})));

        let empty_uid = Ownership {
            owner_uid: String::new(),
            ..own
        };
        let mut blank = owned_labels();
        blank["eg.example.com/owner-uid"] = json!("");
        assert!(!empty_uid.owns(&object("v1", "ConfigMap", "a", blank)));
    }

    #[test]
    fn kind_rank_orders_installs() {
        assert!(kind_rank("Namespace") < kind_rank("CustomResourceDefinition"));
        assert!(kind_rank("ServiceAccount") < kind_rank("Deployment"));
        assert!(kind_rank("Deployment") < kind_rank("HorizontalPodAutoscaler"));
        assert_eq!(kind_rank("SomethingCustom"), u8::MAX);
        assert!(kind_rank("HorizontalPodAutoscaler") < kind_rank("SomethingCustom"));
    }

    #[test]
    fn missing_object_is_created() {
        let d = graph(vec![deployment(1, "eg:1")]);
        let p = plan(&d, &[], &ownership());
        let step = only_step(&p);
        assert_eq!(step.action, Action::Create);
        assert_eq!(step.wave, Some(0));
        assert!(p.has_changes());
        assert_eq!(p.counts(), (1, 0, 0, 0));
    }

    #[test]
    fn live_with_defaulted_and_server_fields_is_unchanged() {
        let desired = deployment(1, "eg:1");
        let mut live = desired.clone();
        live["metadata"]["uid"] = json!("1234");
        live["metadata"]["resourceVersion"] = json!("99");
        live["metadata"]["generation"] = json!(3);
        live["metadata"]["creationTimestamp"] = json!("2024-01-01T00:00:00Z");
        live["metadata"]["annotations"] = json!({"deployment.kubernetes.io/revision": "3"});
        live["spec"]["progressDeadlineSeconds"] = json!(600);
        live["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] =
            json!("IfNotPresent");
        live["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        live["status"] = json!({"replicas": 1});
        let d = graph(vec![desired]);
        let p = plan(&d, &[live], &ownership());
        assert_eq!(only_step(&p).action, Action::Unchanged);
        assert!(!p.has_changes());
        assert_eq!(p.counts(), (0, 0, 1, 0));
    }

    #[test]
    fn server_fields_in_desired_and_status_are_ignored() {
        let mut desired = deployment(1, "eg:1");
        desired["metadata"]["resourceVersion"] = json!("1");
        desired["status"] = json!({"replicas": 5});
        let live = deployment(1, "eg:1");
        let p = plan(&graph(vec![desired]), &[live], &ownership());
        assert_eq!(only_step(&p).action, Action::Unchanged);
    }

    #[test]
    fn changed_scalar_and_list_element_are_updates() {
        let d = graph(vec![deployment(3, "eg:2")]);
        let live = deployment(1, "eg:1");
        let p = plan(&d, &[live], &ownership());
        assert_eq!(
            only_step(&p).action,
            Action::Update {
                changes: vec![
                    FieldChange {
                        path: ".spec.replicas".to_owned(),
                        before: Some(json!(1)),
                        after: Some(json!(3)),
                    },
                    FieldChange {
                        path: ".spec.template.spec.containers[0].image".to_owned(),
                        before: Some(json!("eg:1")),
                        after: Some(json!("eg:2")),
                    },
                ]
            }
        );
    }

    #[test]
    fn list_of_other_length_is_replaced_whole() {
        let mut desired = deployment(1, "eg:1");
        desired["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .expect("list")
            .push(json!({"name": "sidecar", "image": "s:1"}));
        let live = deployment(1, "eg:1");
        let p = plan(
            &graph(vec![desired.clone()]),
            std::slice::from_ref(&live),
            &ownership(),
        );
        let Action::Update { changes } = &only_step(&p).action else {
            panic!("expected update: {p:#?}");
        };
        assert_eq!(
            changes,
            &vec![FieldChange {
                path: ".spec.template.spec.containers".to_owned(),
                before: Some(live["spec"]["template"]["spec"]["containers"].clone()),
                after: Some(desired["spec"]["template"]["spec"]["containers"].clone()),
            }]
        );
    }

    #[test]
    fn missing_fields_and_quoted_keys() {
        let mut desired = deployment(1, "eg:1");
        desired["spec"]["template"]["metadata"] = json!({"annotations": {"x": "y"}});
        desired["metadata"]["labels"]["app.kubernetes.io/name"] = json!("eg");
        desired["spec"]["template"]["spec"]["volumes"] = json!([{"name": "v", "emptyDir": {}}]);
        let mut live = deployment(1, "eg:1");
        live["spec"]["template"]["metadata"] = json!({"annotations": {}});
        let p = plan(&graph(vec![desired]), &[live], &ownership());
        let Action::Update { changes } = &only_step(&p).action else {
            panic!("expected update: {p:#?}");
        };
        let rendered: Vec<(&str, Option<&Value>, Option<&Value>)> = changes
            .iter()
            .map(|c| (c.path.as_str(), c.before.as_ref(), c.after.as_ref()))
            .collect();
        assert_eq!(
            rendered,
            vec![
                (
                    r#".metadata.labels["app.kubernetes.io/name"]"#,
                    None,
                    Some(&json!("eg"))
                ),
                (
                    r#".spec.template.metadata.annotations.x"#,
                    None,
                    Some(&json!("y"))
                ),
                (
                    ".spec.template.spec.volumes",
                    None,
                    Some(&json!([{"name": "v", "emptyDir": {}}]))
                ),
            ]
        );
    }

    #[test]
    fn numbers_compare_by_value() {
        let desired = deployment(1, "eg:1");
        let mut live = deployment(1, "eg:1");
        live["spec"]["replicas"] = json!(1.0);
        let p = plan(&graph(vec![desired]), &[live], &ownership());
        assert_eq!(only_step(&p).action, Action::Unchanged);
    }

    fn managed_fields(manager: &str, operation: &str, fields: Value) -> Value {
        json!([{
            "manager": manager,
            "operation": operation,
            "apiVersion": "apps/v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": fields,
        }])
    }

    fn previously_applied_fields() -> Value {
        json!({
            "f:metadata": {
                "f:labels": {".": {}, "f:app.kubernetes.io/managed-by": {}, "f:old": {}},
                "f:annotations": {"f:note": {}},
                "f:finalizers": {".": {}, "v:\"x\"": {}},
            },
            "f:spec": {
                "f:replicas": {},
                "f:minReadySeconds": {},
                "f:template": {"f:spec": {
                    "f:containers": {"k:{\"name\":\"envoy-gateway\"}": {".": {}, "f:image": {}, "f:name": {}}},
                    "f:nodeSelector": {},
                }},
            },
        })
    }

    #[test]
    fn fields_dropped_from_desired_are_removed_if_we_applied_them() {
        let desired = deployment(1, "eg:1");
        let mut live = deployment(1, "eg:1");
        live["metadata"]["labels"]["old"] = json!("1");
        live["metadata"]["annotations"] = json!({"note": "n"});
        live["metadata"]["finalizers"] = json!(["x"]);
        live["spec"]["minReadySeconds"] = json!(5);
        live["spec"]["template"]["spec"]["nodeSelector"] = json!({"disk": "ssd"});
        // Set by someone else: must stay.
        live["spec"]["paused"] = json!(false);
        live["metadata"]["managedFields"] =
            managed_fields("eg-operator", "Apply", previously_applied_fields());

        let p = plan(
            &graph(vec![desired.clone()]),
            std::slice::from_ref(&live),
            &ownership(),
        );
        assert_eq!(
            only_step(&p).action,
            Action::Update {
                changes: vec![
                    FieldChange {
                        path: ".metadata.annotations.note".to_owned(),
                        before: Some(json!("n")),
                        after: None,
                    },
                    FieldChange {
                        path: ".metadata.labels.old".to_owned(),
                        before: Some(json!("1")),
                        after: None,
                    },
                    FieldChange {
                        path: ".spec.minReadySeconds".to_owned(),
                        before: Some(json!(5)),
                        after: None,
                    },
                    FieldChange {
                        path: ".spec.template.spec.nodeSelector".to_owned(),
                        before: Some(json!({"disk": "ssd"})),
                        after: None,
                    },
                ]
            }
        );

        let after = simulate_apply(&p, &graph(vec![desired.clone()]), &[live]);
        assert_eq!(after.len(), 1);
        assert_eq!(after[0]["spec"]["paused"], json!(false));
        assert_eq!(after[0]["spec"].get("minReadySeconds"), None);
        assert_eq!(after[0]["metadata"]["finalizers"], json!(["x"]));
        let again = plan(&graph(vec![desired]), &after, &ownership());
        assert!(!again.has_changes(), "{}", again.render_text());
    }

    #[test]
    fn other_managers_and_operations_do_not_remove() {
        let desired = deployment(1, "eg:1");
        for (manager, operation) in [("kubectl", "Apply"), ("eg-operator", "Update")] {
            let mut live = deployment(1, "eg:1");
            live["spec"]["minReadySeconds"] = json!(5);
            live["metadata"]["managedFields"] =
                managed_fields(manager, operation, previously_applied_fields());
            let p = plan(&graph(vec![desired.clone()]), &[live], &ownership());
            assert_eq!(
                only_step(&p).action,
                Action::Unchanged,
                "{manager} {operation}"
            );
        }
    }

    #[test]
    fn status_subresource_entry_does_not_remove() {
        let desired = deployment(1, "eg:1");
        let mut live = deployment(1, "eg:1");
        live["spec"]["minReadySeconds"] = json!(5);
        live["metadata"]["managedFields"] =
            managed_fields("eg-operator", "Apply", previously_applied_fields());
        live["metadata"]["managedFields"][0]["subresource"] = json!("status");
        let p = plan(&graph(vec![desired]), &[live], &ownership());
        assert_eq!(only_step(&p).action, Action::Unchanged);
    }

    #[test]
    fn owned_extra_is_deleted_unowned_is_not() {
        let d = graph(vec![deployment(1, "eg:1")]);
        let mut foreign_uid = owned_labels();
        foreign_uid["eg.example.com/owner-uid"] = json!("another-owner");
        let live = vec![
            deployment(1, "eg:1"),
            object("v1", "ConfigMap", "old", owned_labels()),
            object("v1", "ConfigMap", "theirs", json!({"app": "x"})),
            object("v1", "ConfigMap", "other-uid", foreign_uid),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "nolabels", "namespace": "eg-production"}}),
        ];
        let p = plan(&d, &live, &ownership());
        let deletes: Vec<String> = p
            .steps
            .iter()
            .filter(|s| s.action == Action::Delete)
            .map(|s| s.id.to_string())
            .collect();
        assert_eq!(deletes, vec!["ConfigMap eg-production/old"]);
        assert_eq!(p.counts(), (0, 0, 1, 1));
    }

    #[test]
    fn deletes_go_workloads_first_and_after_all_waves() {
        let live = vec![
            object("v1", "ConfigMap", "b", owned_labels()),
            object("v1", "ServiceAccount", "a", owned_labels()),
            object("example.com/v1", "Widget", "w", owned_labels()),
            object("apps/v1", "Deployment", "d", owned_labels()),
            object("v1", "ConfigMap", "a", owned_labels()),
        ];
        let d = graph(vec![object("v1", "Service", "s", json!({}))]);
        let p = plan(&d, &live, &ownership());
        let order: Vec<(String, Option<usize>)> =
            p.steps.iter().map(|s| (s.id.to_string(), s.wave)).collect();
        assert_eq!(
            order,
            vec![
                ("Service eg-production/s".to_owned(), Some(0)),
                ("Widget eg-production/w".to_owned(), None),
                ("Deployment eg-production/d".to_owned(), None),
                ("ConfigMap eg-production/a".to_owned(), None),
                ("ConfigMap eg-production/b".to_owned(), None),
                ("ServiceAccount eg-production/a".to_owned(), None),
            ]
        );
    }

    #[test]
    fn desired_steps_follow_waves() {
        let mut b = GraphBuilder::new();
        let sa = b
            .add(
                Node::new(
                    object("v1", "ServiceAccount", "eg", json!({})),
                    Readiness::Exists,
                )
                .expect("valid"),
            )
            .expect("add")
            .clone();
        let dep = b
            .add(Node::new(deployment(1, "eg:1"), Readiness::DeploymentAvailable).expect("valid"))
            .expect("add")
            .clone();
        b.needs(&dep, &sa);
        let d = b.build().expect("acyclic");
        let p = plan(&d, &[], &ownership());
        let order: Vec<_> = p.steps.iter().map(|s| (s.id.clone(), s.wave)).collect();
        assert_eq!(order, vec![(sa, Some(0)), (dep, Some(1))]);
    }

    #[test]
    fn null_in_desired_means_absent() {
        let mut desired = deployment(1, "eg:1");
        desired["spec"]["minReadySeconds"] = Value::Null;
        desired["spec"]["paused"] = Value::Null;
        let mut live = deployment(1, "eg:1");
        live["spec"]["minReadySeconds"] = json!(5);
        let d = graph(vec![desired]);
        let p = plan(&d, std::slice::from_ref(&live), &ownership());
        assert_eq!(
            only_step(&p).action,
            Action::Update {
                changes: vec![FieldChange {
                    path: ".spec.minReadySeconds".to_owned(),
                    before: Some(json!(5)),
                    after: None,
                }]
            }
        );
        let after = simulate_apply(&p, &d, &[live]);
        assert!(!plan(&d, &after, &ownership()).has_changes());
    }

    #[test]
    fn render_text_of_a_mixed_plan() {
        let mut desired_deploy = deployment(3, "eg:1");
        desired_deploy["spec"]["template"]["metadata"] = json!({"annotations": {"x": "y"}});
        let sa = object("v1", "ServiceAccount", "eg-controller", owned_labels());
        let svc = object("v1", "Service", "eg-controller", owned_labels());
        let d = graph(vec![desired_deploy, sa, svc.clone()]);

        let mut live_deploy = deployment(1, "eg:1");
        live_deploy["spec"]["template"]["metadata"] = json!({"annotations": {}});
        live_deploy["spec"]["minReadySeconds"] = json!(5);
        live_deploy["metadata"]["managedFields"] = managed_fields(
            "eg-operator",
            "Apply",
            json!({"f:spec": {"f:replicas": {}, "f:minReadySeconds": {}}}),
        );
        let live = vec![
            svc,
            live_deploy,
            object("v1", "ConfigMap", "old", owned_labels()),
        ];
        let p = plan(&d, &live, &ownership());
        let expected = [
            "    Service eg-production/eg-controller (unchanged)",
            "  + ServiceAccount eg-production/eg-controller",
            "  ~ Deployment eg-production/eg-controller",
            "      .spec.minReadySeconds: 5 -> (removed)",
            "      .spec.replicas: 1 -> 3",
            "      .spec.template.metadata.annotations.x: (absent) -> \"y\"",
            "  - ConfigMap eg-production/old",
            "Plan: 1 to create, 1 to update, 1 unchanged, 1 to delete.",
            "",
        ]
        .join("\n");
        assert_eq!(p.render_text(), expected);
    }

    #[test]
    fn render_text_quotes_keys_and_prints_compact_json() {
        let p = Plan {
            steps: vec![Step {
                id: ObjectRef::new("v1", "ConfigMap", Some("ns"), "c"),
                wave: Some(0),
                action: Action::Update {
                    changes: vec![FieldChange {
                        path: r#".metadata.labels["a/b"]"#.to_owned(),
                        before: Some(json!({"k": [1, 2]})),
                        after: Some(json!(null)),
                    }],
                },
            }],
        };
        assert_eq!(
            p.render_text(),
            "  ~ ConfigMap ns/c\n      .metadata.labels[\"a/b\"]: {\"k\":[1,2]} -> null\nPlan: 0 to create, 1 to update, 0 unchanged, 0 to delete.\n"
        );
        let empty = Plan { steps: vec![] };
        assert_eq!(
            empty.render_text(),
            "Plan: 0 to create, 0 to update, 0 unchanged, 0 to delete.\n"
        );
    }

    #[test]
    fn serializes_with_action_tag() {
        let p = Plan {
            steps: vec![
                Step {
                    id: ObjectRef::new("v1", "ConfigMap", Some("ns"), "c"),
                    wave: Some(0),
                    action: Action::Create,
                },
                Step {
                    id: ObjectRef::new("v1", "ConfigMap", Some("ns"), "d"),
                    wave: None,
                    action: Action::Update {
                        changes: vec![FieldChange {
                            path: ".data.k".to_owned(),
                            before: None,
                            after: Some(json!("v")),
                        }],
                    },
                },
            ],
        };
        let v = serde_json::to_value(&p).expect("serializes");
        assert_eq!(v["steps"][0]["action"], json!("create"));
        assert_eq!(v["steps"][0]["wave"], json!(0));
        assert_eq!(v["steps"][0]["id"]["kind"], json!("ConfigMap"));
        assert_eq!(v["steps"][1]["action"], json!("update"));
        assert_eq!(v["steps"][1]["changes"][0]["path"], json!(".data.k"));
        assert_eq!(v["steps"][1]["wave"], Value::Null);
    }

    #[test]
    fn simulate_create_delete() {
        let desired = object("v1", "ConfigMap", "new", owned_labels());
        let old = object("v1", "ConfigMap", "old", owned_labels());
        let theirs = object("v1", "ConfigMap", "theirs", json!({}));
        let d = graph(vec![desired.clone()]);
        let live = vec![old, theirs.clone()];
        let p = plan(&d, &live, &ownership());
        assert_eq!(p.counts(), (1, 0, 0, 1));
        let after = simulate_apply(&p, &d, &live);
        assert_eq!(after, vec![theirs, desired]);
    }
}
