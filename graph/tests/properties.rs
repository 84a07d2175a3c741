//! Property tests of the engine's promises, through the public API only: waves honour every
//! edge, cycles are reported as real cycles, applying a plan converges, and pruning never
//! touches objects or fields that are not ours.

use std::collections::{BTreeMap, BTreeSet};

use eg_graph::{
    Action, GraphBuilder, GraphError, Node, ObjectRef, Ownership, Readiness, ResourceGraph, plan,
    simulate_apply,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const KINDS: &[(&str, &str, bool)] = &[
    ("v1", "ConfigMap", true),
    ("v1", "Secret", true),
    ("apps/v1", "Deployment", true),
    ("example.com/v1", "Widget", false),
];

fn identity_object(i: usize) -> Value {
    let (api, kind, namespaced) = KINDS[i % KINDS.len()];
    let mut meta = json!({"name": format!("n{}", i / KINDS.len())});
    if namespaced {
        meta["namespace"] = json!("ns");
    }
    json!({"apiVersion": api, "kind": kind, "metadata": meta})
}

fn id_of(obj: &Value) -> ObjectRef {
    ObjectRef::from_object(obj).expect("generated objects have an identity")
}

// --- (1) waves of random DAGs -----------------------------------------------------------------

/// `n` nodes, a shuffled insertion order, and shuffled edges `(dependent, dependency)` that
/// always point from a higher index to a lower one, so the graph is acyclic.
fn dag() -> impl Strategy<Value = (usize, Vec<usize>, Vec<(usize, usize)>)> {
    (1usize..24).prop_flat_map(|n| {
        let order = Just((0..n).collect::<Vec<_>>()).prop_shuffle();
        let edges = prop::collection::vec((0..n, 0..n), 0..n * 3)
            .prop_map(|pairs| {
                pairs
                    .into_iter()
                    .filter(|(a, b)| a != b)
                    .map(|(a, b)| (a.max(b), a.min(b)))
                    .collect::<Vec<_>>()
            })
            .prop_shuffle();
        (Just(n), order, edges)
    })
}

fn build(n: usize, order: &[usize], edges: &[(usize, usize)]) -> Result<ResourceGraph, GraphError> {
    let ids: Vec<ObjectRef> = (0..n).map(|i| id_of(&identity_object(i))).collect();
    let mut b = GraphBuilder::new();
    for &i in order {
        b.add(Node::new(identity_object(i), Readiness::Exists).expect("valid"))
            .expect("identities are unique");
    }
    for &(dependent, dependency) in edges {
        b.needs(&ids[dependent], &ids[dependency]);
    }
    b.build()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn waves_respect_every_edge((n, order, edges) in dag()) {
        let g = build(n, &order, &edges).expect("edges only point downwards");
        let ids: Vec<ObjectRef> = (0..n).map(|i| id_of(&identity_object(i))).collect();
        let waves = g.waves();

        let mut wave_of = BTreeMap::new();
        for (w, wave) in waves.iter().enumerate() {
            prop_assert!(!wave.is_empty(), "wave {w} is empty");
            prop_assert!(wave.windows(2).all(|p| p[0] < p[1]), "wave {w} not sorted");
            for id in wave {
                prop_assert!(wave_of.insert(id.clone(), w).is_none(), "{id} in two waves");
            }
        }
        prop_assert_eq!(wave_of.len(), n, "every node in exactly one wave");
        prop_assert_eq!(g.len(), n);

        for &(dependent, dependency) in &edges {
            prop_assert!(
                wave_of[&ids[dependency]] < wave_of[&ids[dependent]],
                "{} (wave {}) needs {} (wave {})",
                ids[dependent], wave_of[&ids[dependent]], ids[dependency], wave_of[&ids[dependency]]
            );
        }
        // Waves are as early as possible, not merely consistent.
        for id in &ids {
            let expected = g
                .dependencies(id)
                .into_iter()
                .map(|d| wave_of[d] + 1)
                .max()
                .unwrap_or(0);
            prop_assert_eq!(wave_of[id], expected);
            prop_assert_eq!(g.wave(id), Some(expected));
        }
        // dependencies() is exactly the declared edges.
        for (i, id) in ids.iter().enumerate() {
            let declared: BTreeSet<&ObjectRef> = edges
                .iter()
                .filter(|(a, _)| *a == i)
                .map(|(_, b)| &ids[*b])
                .collect();
            let got = g.dependencies(id);
            prop_assert!(got.windows(2).all(|p| p[0] < p[1]));
            prop_assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), declared);
        }
        let mut reversed = waves.clone();
        reversed.reverse();
        prop_assert_eq!(g.prune_waves(), reversed);
    }

    #[test]
    fn cycles_are_reported_as_real_cycles(
        (n, order, edges) in dag(),
        picks in prop::collection::btree_set(0usize..24, 1..5),
    ) {
        // Close a loop through the picked nodes: each needs the previous, the first needs the
        // last (a self-edge when only one is picked).
        let on_cycle: Vec<usize> = picks.into_iter().filter(|&i| i < n).collect();
        prop_assume!(!on_cycle.is_empty());
        let mut all_edges = edges.clone();
        for pair in on_cycle.windows(2) {
            all_edges.push((pair[1], pair[0]));
        }
        all_edges.push((on_cycle[0], on_cycle[on_cycle.len() - 1]));

        let ids: Vec<ObjectRef> = (0..n).map(|i| id_of(&identity_object(i))).collect();
        let declared: BTreeSet<(&ObjectRef, &ObjectRef)> =
            all_edges.iter().map(|&(a, b)| (&ids[a], &ids[b])).collect();

        let err = build(n, &order, &all_edges).expect_err("a cycle was added");
        let GraphError::Cycle(cycle) = &err else {
            return Err(TestCaseError::fail(format!("expected a cycle, got {err}")));
        };
        prop_assert!(!cycle.is_empty());
        prop_assert_eq!(cycle.iter().collect::<BTreeSet<_>>().len(), cycle.len(), "simple cycle");
        prop_assert_eq!(cycle.iter().min(), cycle.first(), "starts at its smallest node");
        for (k, dependent) in cycle.iter().enumerate() {
            let dependency = &cycle[(k + 1) % cycle.len()];
            prop_assert!(declared.contains(&(dependent, dependency)), "{dependent} -> {dependency} is no edge");
        }
        let smallest_forced = on_cycle.iter().map(|&i| &ids[i]).min().expect("non-empty");
        prop_assert!(&cycle[0] <= smallest_forced, "not the smallest node on a cycle");
        let text = err.to_string();
        let expected_text = format!("{} -> {}", cycle[cycle.len() - 1], cycle[0]);
        prop_assert!(text.ends_with(&expected_text), "{}", text);
    }
}

// --- shared pieces for plans -------------------------------------------------------------------

const UID: &str = "uid-1";
const UID_LABEL: &str = "eg.example.com/owner-uid";
const LABEL_POOL: &[(&str, &str)] = &[
    ("app.kubernetes.io/managed-by", "eg-operator"),
    ("eg.example.com/instance", "production"),
    ("team", "edge"),
];
const MANAGER: &str = "eg-operator";

fn ownership(label_count: usize) -> Ownership {
    Ownership {
        field_manager: MANAGER.to_owned(),
        owner_uid: UID.to_owned(),
        owner_uid_label: UID_LABEL.to_owned(),
        labels: LABEL_POOL[..label_count]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

/// The ownership rule restated independently of `Ownership::owns`.
fn really_owned(live: &Value, own: &Ownership) -> bool {
    let label = |k: &str| live["metadata"]["labels"][k].as_str().map(str::to_owned);
    label(&own.owner_uid_label).as_deref() == Some(own.owner_uid.as_str())
        && own
            .labels
            .iter()
            .all(|(k, v)| label(k).as_deref() == Some(v.as_str()))
}

fn owned_labels() -> Map<String, Value> {
    let mut m: Map<String, Value> = LABEL_POOL
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    m.insert(UID_LABEL.to_owned(), json!(UID));
    m
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c", "app.kubernetes.io/x", "d_1"]).prop_map(str::to_owned)
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        4 => (-3i64..3).prop_map(Value::from),
        3 => "[a-z]{0,2}".prop_map(Value::from),
        2 => any::<bool>().prop_map(Value::from),
        1 => Just(Value::Null),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Content of an object besides its identity: `spec` and/or `data` maps.
fn body() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(
        prop::sample::select(vec!["spec", "data"]).prop_map(str::to_owned),
        prop::collection::btree_map(key(), json_value(), 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        0..3,
    )
    .prop_map(|m| m.into_iter().collect())
}

fn with_body(mut obj: Value, body: &Map<String, Value>, labels: Map<String, Value>) -> Value {
    if let Some(map) = obj.as_object_mut() {
        for (k, v) in body {
            map.insert(k.clone(), v.clone());
        }
    }
    obj["metadata"]["labels"] = Value::Object(labels);
    obj
}

/// Test-local deep merge used to derive live objects from desired ones.
fn overlay(base: &mut Value, top: &Value) {
    match (base.as_object_mut(), top.as_object()) {
        (Some(b), Some(t)) => {
            for (k, v) in t {
                match b.get_mut(k) {
                    Some(existing) => overlay(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        _ => *base = top.clone(),
    }
}

/// Leaf key paths of an object (through maps only), as server-side apply would track them.
fn leaf_paths(value: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match value.as_object() {
        Some(m) if !m.is_empty() => {
            for (k, v) in m {
                prefix.push(k.clone());
                leaf_paths(v, prefix, out);
                prefix.pop();
            }
        }
        _ => out.push(prefix.clone()),
    }
}

/// `fieldsV1` claiming `paths`, with the `.` and `k:` entries real servers add.
fn fields_v1(paths: &[Vec<String>]) -> Value {
    let mut root = json!({});
    for path in paths {
        let mut cur = &mut root;
        for seg in path {
            cur = cur
                .as_object_mut()
                .expect("fieldsV1 nodes are maps")
                .entry(format!("f:{seg}"))
                .or_insert_with(|| json!({}));
        }
        if let Some(m) = cur.as_object_mut() {
            m.insert(".".to_owned(), json!({}));
            m.insert("k:{\"name\":\"x\"}".to_owned(), json!({".": {}}));
        }
    }
    root
}

fn managed_field_entry(manager: &str, fields: Value) -> Value {
    json!({"manager": manager, "operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": fields})
}

/// Where a live object that is also desired comes from.
#[derive(Clone, Debug)]
enum LiveFrom {
    /// Unrelated content.
    Random,
    /// Desired with random content laid over it (changed and extra fields).
    Overlay,
    /// Desired with a few small edits: a scalar changed, a list grown, a key added. Often the
    /// only difference, so a planner that misses it leaves the object unapplied.
    Tweak(u64),
}

fn live_from() -> impl Strategy<Value = LiveFrom> {
    prop_oneof![
        1 => Just(LiveFrom::Random),
        1 => Just(LiveFrom::Overlay),
        2 => (any::<u64>(), any::<u64>()).prop_map(|(a, b)| LiveFrom::Tweak(a & b)),
    ]
}

/// Edits the value at every node whose running number `k` has its bit set in `seed`.
fn tweak(value: &mut Value, seed: u64, k: &mut u32) {
    let hit = seed & (1u64 << (*k % 64)) != 0;
    *k += 1;
    match value {
        Value::Object(m) => {
            for v in m.values_mut() {
                tweak(v, seed, k);
            }
            if hit {
                m.insert("extra".to_owned(), json!(1));
            }
        }
        Value::Array(items) => {
            for v in items.iter_mut() {
                tweak(v, seed, k);
            }
            if hit {
                items.push(json!(0));
            }
        }
        Value::Number(n) if hit => *value = json!(n.as_i64().unwrap_or(0) + 1),
        Value::String(s) if hit => s.push('x'),
        Value::Bool(b) if hit => *b = !*b,
        Value::Null if hit => *value = json!(0),
        _ => {}
    }
}

/// How one identity of the pool appears in a scenario.
#[derive(Clone, Debug)]
enum Role {
    Absent,
    DesiredOnly,
    /// Desired and live; the live one is derived from desired or random, and claims some of
    /// its fields for our manager and some for another.
    Both {
        live_from: LiveFrom,
        live_body: Map<String, Value>,
        ours_mask: u64,
        theirs_mask: u64,
    },
    LiveOwned(Map<String, Value>),
    /// Live, with each pool label present-right / present-wrong / absent (0/1/2) and a uid label
    /// right / wrong / absent.
    LiveLabelled {
        body: Map<String, Value>,
        labels: Vec<u8>,
        uid: u8,
    },
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![
        1 => Just(Role::Absent),
        2 => Just(Role::DesiredOnly),
        6 => (live_from(), body(), any::<u64>(), any::<u64>()).prop_map(
            |(live_from, live_body, ours_mask, theirs_mask)| Role::Both {
                live_from,
                live_body,
                ours_mask,
                theirs_mask,
            }
        ),
        2 => body().prop_map(Role::LiveOwned),
        3 => (body(), prop::collection::vec(0u8..3, LABEL_POOL.len()), 0u8..3)
            .prop_map(|(body, labels, uid)| Role::LiveLabelled { body, labels, uid }),
    ]
}

#[derive(Debug)]
struct Scenario {
    own: Ownership,
    desired: ResourceGraph,
    desired_objects: Vec<Value>,
    live: Vec<Value>,
    /// Per live object: key paths claimed by the other manager only.
    others_fields: BTreeMap<ObjectRef, Vec<Vec<String>>>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        0..=LABEL_POOL.len(),
        prop::collection::vec((role(), body(), any::<bool>()), 1..12),
    )
        .prop_map(|(label_count, roles)| {
            let own = ownership(label_count);
            let mut desired_objects = Vec::new();
            let mut live = Vec::new();
            let mut others_fields = BTreeMap::new();
            for (i, (role, desired_body, desired_owned)) in roles.into_iter().enumerate() {
                let ident = identity_object(i);
                let desired_labels = if desired_owned {
                    owned_labels()
                } else {
                    Map::new()
                };
                let desired_obj = with_body(ident.clone(), &desired_body, desired_labels);
                match role {
                    Role::Absent => {}
                    Role::DesiredOnly => desired_objects.push(desired_obj),
                    Role::Both {
                        live_from,
                        live_body,
                        ours_mask,
                        theirs_mask,
                    } => {
                        let mut live_obj = match live_from {
                            LiveFrom::Random => {
                                with_body(ident.clone(), &live_body, owned_labels())
                            }
                            LiveFrom::Overlay => {
                                let mut l = desired_obj.clone();
                                overlay(&mut l, &Value::Object(live_body));
                                l
                            }
                            LiveFrom::Tweak(seed) => {
                                let mut l = desired_obj.clone();
                                for key in ["spec", "data"] {
                                    if let Some(v) = l.get_mut(key) {
                                        tweak(v, seed, &mut 0);
                                    }
                                }
                                l
                            }
                        };
                        live_obj["metadata"]["uid"] = json!("server-uid");
                        live_obj["metadata"]["resourceVersion"] = json!("7");
                        let mut paths = Vec::new();
                        leaf_paths(&live_obj, &mut Vec::new(), &mut paths);
                        // Of metadata, only labels are fields an apply owns.
                        paths.retain(|p| match p.first() {
                            Some(k) if k == "metadata" => p.get(1).is_some_and(|k| k == "labels"),
                            _ => true,
                        });
                        let pick = |mask: u64| -> Vec<Vec<String>> {
                            paths
                                .iter()
                                .enumerate()
                                .filter(|(k, _)| mask & (1 << (k % 64)) != 0)
                                .map(|(_, p)| p.clone())
                                .collect()
                        };
                        let ours = pick(ours_mask);
                        let theirs: Vec<Vec<String>> = pick(theirs_mask)
                            .into_iter()
                            .filter(|p| !ours.contains(p))
                            .collect();
                        live_obj["metadata"]["managedFields"] = json!([
                            managed_field_entry(MANAGER, fields_v1(&ours)),
                            managed_field_entry("someone-else", fields_v1(&theirs)),
                        ]);
                        others_fields.insert(id_of(&live_obj), theirs);
                        desired_objects.push(desired_obj);
                        live.push(live_obj);
                    }
                    Role::LiveOwned(body) => live.push(with_body(ident, &body, owned_labels())),
                    Role::LiveLabelled { body, labels, uid } => {
                        let mut m = Map::new();
                        for ((k, v), state) in LABEL_POOL.iter().zip(labels) {
                            match state {
                                0 => m.insert((*k).to_owned(), json!(v)),
                                1 => m.insert((*k).to_owned(), json!("wrong")),
                                _ => None,
                            };
                        }
                        match uid {
                            0 => m.insert(UID_LABEL.to_owned(), json!(UID)),
                            1 => m.insert(UID_LABEL.to_owned(), json!("uid-2")),
                            _ => None,
                        };
                        live.push(with_body(ident, &body, m));
                    }
                }
            }
            let mut b = GraphBuilder::new();
            for obj in &desired_objects {
                b.add(Node::new(obj.clone(), Readiness::Exists).expect("valid"))
                    .expect("unique identities");
            }
            let desired = b.build().expect("no edges, no errors");
            Scenario {
                own,
                desired,
                desired_objects,
                live,
                others_fields,
            }
        })
}

/// Whether applying `desired` leaves `path` alone: walking it, desired stops at a map that lacks
/// the key. (A `null` there removes the field, a non-map replaces the whole value.)
fn untouched_by(desired: &Value, path: &[String]) -> bool {
    let mut cur = desired;
    for key in path {
        let Some(map) = cur.as_object() else {
            return false;
        };
        match map.get(key) {
            None => return true,
            Some(next) => cur = next,
        }
    }
    false
}

/// "desired is a subset of live", restated independently of the planner: maps key by key
/// (`null` meaning absent), lists element-wise with equal length, scalars equal.
fn is_subset(desired: &Value, live: Option<&Value>) -> bool {
    match (desired, live) {
        (Value::Object(d), Some(Value::Object(l))) => d.iter().all(|(k, dv)| {
            if dv.is_null() {
                l.get(k).is_none_or(Value::is_null)
            } else {
                is_subset(dv, l.get(k))
            }
        }),
        (Value::Object(_), _) => false,
        (Value::Array(d), Some(Value::Array(l))) => {
            d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| is_subset(dv, Some(lv)))
        }
        (_, Some(l)) => desired == l,
        (_, None) => false,
    }
}

fn get_path<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter()
        .try_fold(value, |cur, k| cur.as_object()?.get(k))
}

// --- (2) convergence and (3) prune safety ------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn applying_a_plan_converges(s in scenario()) {
        let p = plan(&s.desired, &s.live, &s.own);
        let result = simulate_apply(&p, &s.desired, &s.live);
        let again = plan(&s.desired, &result, &s.own);
        prop_assert!(
            !again.has_changes(),
            "first plan:\n{}second plan:\n{}",
            p.render_text(),
            again.render_text()
        );

        let result_ids: BTreeSet<ObjectRef> = result.iter().map(id_of).collect();
        prop_assert_eq!(result_ids.len(), result.len(), "no identity twice");
        for obj in &s.desired_objects {
            let id = id_of(obj);
            let after = result.iter().find(|o| id_of(o) == id);
            prop_assert!(after.is_some(), "{} missing", id);
            prop_assert!(is_subset(obj, after), "{} is not applied: {:#}", id, json!(after));
        }
        // Exactly the owned, undesired objects are gone; everything else survives.
        for obj in &s.live {
            let id = id_of(obj);
            let should_go = s.desired.node(&id).is_none() && really_owned(obj, &s.own);
            prop_assert_eq!(result_ids.contains(&id), !should_go, "{}", id);
        }
        // Fields only another manager set, and that desired does not mention, survive.
        for live_obj in &s.live {
            let id = id_of(live_obj);
            let (Some(theirs), Some(node)) = (s.others_fields.get(&id), s.desired.node(&id)) else {
                continue;
            };
            let after = result.iter().find(|o| id_of(o) == id).expect("desired object kept");
            for path in theirs {
                if untouched_by(&node.object, path) {
                    prop_assert_eq!(
                        get_path(after, path),
                        get_path(live_obj, path),
                        "{} lost {:?}",
                        id,
                        path
                    );
                }
            }
        }
        let (create, update, unchanged, delete) = p.counts();
        prop_assert_eq!(create + update + unchanged, s.desired.len());
        prop_assert_eq!(create + update + unchanged + delete, p.steps.len());
    }

    #[test]
    fn prune_only_selects_owned_objects(s in scenario()) {
        let p = plan(&s.desired, &s.live, &s.own);
        let live_by_id: BTreeMap<ObjectRef, &Value> =
            s.live.iter().map(|o| (id_of(o), o)).collect();
        let mut deleted = BTreeSet::new();
        for step in &p.steps {
            if step.action != Action::Delete {
                prop_assert!(step.wave.is_some());
                continue;
            }
            prop_assert_eq!(step.wave, None);
            prop_assert!(s.desired.node(&step.id).is_none(), "deleting desired {}", step.id);
            let obj = live_by_id.get(&step.id);
            prop_assert!(obj.is_some(), "deleting {} which does not exist", step.id);
            let obj = obj.expect("checked");
            prop_assert!(really_owned(obj, &s.own), "deleting unowned {}", step.id);
            prop_assert!(deleted.insert(step.id.clone()), "{} deleted twice", step.id);
        }
        // And nothing owned and undesired is left behind.
        for (id, obj) in &live_by_id {
            if s.desired.node(id).is_none() && really_owned(obj, &s.own) {
                prop_assert!(deleted.contains(id), "{} not pruned", id);
            }
        }
        // Deletes come after every desired step.
        let first_delete = p.steps.iter().position(|st| st.action == Action::Delete);
        if let Some(first) = first_delete {
            prop_assert!(p.steps[first..].iter().all(|st| st.action == Action::Delete));
        }
    }
}
