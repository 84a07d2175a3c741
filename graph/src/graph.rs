//! The desired resource graph: which objects should exist and which ones need which.
//!
//! Dependencies decide the apply order (a CRD before its custom resources, a ServiceAccount
//! before the Deployment that runs as it) and, reversed, the prune order. The graph is built
//! once, validated in [`GraphBuilder::build`] (no duplicates, no dangling edges, no cycles), and
//! is immutable afterwards, so its waves are computed once and every query is deterministic.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use petgraph::Direction;
use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::Value;

use crate::object_ref::{ObjectRef, ObjectRefError};
use crate::readiness::Readiness;

/// Errors from building a [`ResourceGraph`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    // Boxed: an ObjectRef is five strings, and errors travel up every Result of the operator.
    #[error("{0} is added twice")]
    Duplicate(Box<ObjectRef>),
    #[error("{dependent} needs {dependency}, which is not in the graph")]
    UnknownNode {
        dependent: Box<ObjectRef>,
        dependency: Box<ObjectRef>,
    },
    /// The cycle in "needs" order, starting at its smallest [`ObjectRef`], without repeating
    /// the first element at the end (the `Display` closes it).
    #[error("dependency cycle: {}", CycleDisplay(.0))]
    Cycle(Vec<ObjectRef>),
}

impl GraphError {
    /// Stable category for metric labels and logs.
    pub fn category(&self) -> &'static str {
        match self {
            GraphError::Duplicate(_) => "duplicate",
            GraphError::UnknownNode { .. } => "unknown_node",
            GraphError::Cycle(_) => "cycle",
        }
    }
}

struct CycleDisplay<'a>(&'a [ObjectRef]);

impl fmt::Display for CycleDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for id in self.0 {
            write!(f, "{id} -> ")?;
        }
        match self.0.first() {
            Some(first) => write!(f, "{first}"),
            None => Ok(()),
        }
    }
}

/// One desired object and the rule that says when it is ready.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub id: ObjectRef,
    pub object: Value,
    pub readiness: Readiness,
}

impl Node {
    /// A node whose id is read from the object itself, so the two can never disagree.
    pub fn new(object: Value, readiness: Readiness) -> Result<Self, ObjectRefError> {
        Ok(Node {
            id: ObjectRef::from_object(&object)?,
            object,
            readiness,
        })
    }
}

/// Collects nodes and "needs" edges; [`GraphBuilder::build`] validates them all at once, so
/// callers can declare edges in any order relative to the nodes they name.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    nodes: BTreeMap<ObjectRef, Node>,
    // (dependent, dependency); a set because declaring the same need twice is harmless.
    edges: BTreeSet<(ObjectRef, ObjectRef)>,
}

impl GraphBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a node. A second node with the same id is an error and leaves the first in place.
    pub fn add(&mut self, node: Node) -> Result<&ObjectRef, GraphError> {
        match self.nodes.entry(node.id.clone()) {
            std::collections::btree_map::Entry::Occupied(existing) => {
                Err(GraphError::Duplicate(Box::new(existing.key().clone())))
            }
            std::collections::btree_map::Entry::Vacant(slot) => Ok(&slot.insert(node).id),
        }
    }

    /// Records that `dependent` must not be applied before `dependency` is ready.
    pub fn needs(&mut self, dependent: &ObjectRef, dependency: &ObjectRef) {
        self.edges.insert((dependent.clone(), dependency.clone()));
    }

    /// Validates and freezes the graph. Errors are deterministic: the first dangling edge in
    /// `(dependent, dependency)` order, or the cycle through the smallest id that is on one.
    pub fn build(self) -> Result<ResourceGraph, GraphError> {
        if let Some((dependent, dependency)) = self
            .edges
            .iter()
            .find(|(a, b)| !self.nodes.contains_key(a) || !self.nodes.contains_key(b))
        {
            return Err(GraphError::UnknownNode {
                dependent: Box::new(dependent.clone()),
                dependency: Box::new(dependency.clone()),
            });
        }

        // Nodes go in sorted, so NodeIndex order equals ObjectRef order; cycle search and
        // neighbour sorting below rely on that.
        let mut graph = DiGraph::with_capacity(self.nodes.len(), self.edges.len());
        let mut index = BTreeMap::new();
        for (id, node) in self.nodes {
            let i = graph.add_node(node);
            index.insert(id, i);
        }
        // Edges point from dependency to dependent: "must be ready before".
        for (dependent, dependency) in &self.edges {
            graph.add_edge(index[dependency], index[dependent], ());
        }

        let order = match toposort(&graph, None) {
            Ok(order) => order,
            Err(cycle) => {
                let ids = find_cycle(&graph)
                    .unwrap_or_else(|| vec![cycle.node_id()])
                    .into_iter()
                    .map(|i| graph[i].id.clone())
                    .collect();
                return Err(GraphError::Cycle(ids));
            }
        };

        let mut wave_of = vec![0usize; graph.node_count()];
        for &n in &order {
            wave_of[n.index()] = graph
                .neighbors_directed(n, Direction::Incoming)
                .map(|dep| wave_of[dep.index()] + 1)
                .max()
                .unwrap_or(0);
        }
        let wave_count = wave_of.iter().max().map_or(0, |w| w + 1);
        let mut waves = vec![Vec::new(); wave_count];
        // Iterating the index (sorted) keeps every wave sorted by ObjectRef.
        for (id, &i) in &index {
            waves[wave_of[i.index()]].push(id.clone());
        }

        Ok(ResourceGraph {
            graph,
            index,
            wave_of,
            waves,
        })
    }
}

/// The cycle through the smallest node that lies on any cycle, in "needs" order, starting at
/// that node. `None` only if the graph is acyclic.
fn find_cycle(graph: &DiGraph<Node, ()>) -> Option<Vec<NodeIndex>> {
    let start = tarjan_scc(graph)
        .into_iter()
        .filter(|scc| scc.len() > 1 || scc.iter().any(|&n| graph.contains_edge(n, n)))
        .filter_map(|scc| scc.into_iter().min())
        .min()?;
    // Breadth-first search along "needs" edges (Incoming in our edge direction), neighbours in
    // index order, gives the shortest cycle back to `start` and the same one on every run.
    let mut parent: BTreeMap<NodeIndex, NodeIndex> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(n) = queue.pop_front() {
        let mut next: Vec<NodeIndex> = graph.neighbors_directed(n, Direction::Incoming).collect();
        next.sort();
        for m in next {
            if m == start {
                let mut path = vec![n];
                let mut cur = n;
                while cur != start {
                    cur = parent[&cur];
                    path.push(cur);
                }
                path.reverse();
                return Some(path);
            }
            if let std::collections::btree_map::Entry::Vacant(slot) = parent.entry(m) {
                slot.insert(n);
                queue.push_back(m);
            }
        }
    }
    None
}

/// A validated, acyclic graph of desired objects.
#[derive(Debug, Clone)]
pub struct ResourceGraph {
    // Edge a -> b means "a must be ready before b" (b needs a).
    graph: DiGraph<Node, ()>,
    index: BTreeMap<ObjectRef, NodeIndex>,
    wave_of: Vec<usize>,
    waves: Vec<Vec<ObjectRef>>,
}

impl ResourceGraph {
    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    pub fn node(&self, id: &ObjectRef) -> Option<&Node> {
        self.index.get(id).map(|&i| &self.graph[i])
    }

    /// Every node, sorted by [`ObjectRef`].
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.index.values().map(move |&i| &self.graph[i])
    }

    /// What `id` needs, sorted; empty for unknown ids.
    pub fn dependencies(&self, id: &ObjectRef) -> Vec<&ObjectRef> {
        let Some(&i) = self.index.get(id) else {
            return Vec::new();
        };
        let mut deps: Vec<&ObjectRef> = self
            .graph
            .neighbors_directed(i, Direction::Incoming)
            .map(|d| &self.graph[d].id)
            .collect();
        deps.sort();
        deps
    }

    /// What needs `id`, sorted; empty for unknown ids.
    pub fn dependents(&self, id: &ObjectRef) -> Vec<&ObjectRef> {
        let Some(&i) = self.index.get(id) else {
            return Vec::new();
        };
        let mut deps: Vec<&ObjectRef> = self
            .graph
            .neighbors_directed(i, Direction::Outgoing)
            .map(|d| &self.graph[d].id)
            .collect();
        deps.sort();
        deps
    }

    /// The wave `id` is applied in (see [`ResourceGraph::waves`]).
    pub fn wave(&self, id: &ObjectRef) -> Option<usize> {
        self.index.get(id).map(|i| self.wave_of[i.index()])
    }

    /// Topological layers: wave 0 has no dependencies, a node's wave is one more than the
    /// highest wave among its dependencies. Each wave is sorted by [`ObjectRef`]. Everything in
    /// one wave can be applied at once, and waiting for a wave to be ready before the next is
    /// enough to honour every edge.
    pub fn waves(&self) -> Vec<Vec<ObjectRef>> {
        self.waves.clone()
    }

    /// [`ResourceGraph::waves`] reversed: dependents are removed before what they need.
    pub fn prune_waves(&self) -> Vec<Vec<ObjectRef>> {
        self.waves.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cm(name: &str) -> Node {
        Node::new(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": "ns", "name": name}}),
            Readiness::Exists,
        )
        .expect("valid object")
    }

    fn secret(name: &str) -> Node {
        Node::new(
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"namespace": "ns", "name": name}}),
            Readiness::Exists,
        )
        .expect("valid object")
    }

    #[test]
    fn node_takes_its_id_from_the_object() {
        let n = cm("a");
        assert_eq!(n.id, ObjectRef::new("v1", "ConfigMap", Some("ns"), "a"));
        let err =
            Node::new(json!({"kind": "ConfigMap"}), Readiness::Exists).expect_err("no apiVersion");
        assert_eq!(err, ObjectRefError::MissingField("apiVersion"));
    }

    #[test]
    fn duplicate_is_rejected_and_first_kept() {
        let mut b = GraphBuilder::new();
        let id = b.add(cm("a")).expect("first add").clone();
        let mut other = cm("a");
        other.readiness = Readiness::DeploymentAvailable;
        let err = b.add(other).expect_err("duplicate");
        assert_eq!(err, GraphError::Duplicate(Box::new(id.clone())));
        assert_eq!(err.category(), "duplicate");
        assert_eq!(err.to_string(), "ConfigMap ns/a is added twice");
        let g = b.build().expect("valid graph");
        assert_eq!(g.node(&id).map(|n| &n.readiness), Some(&Readiness::Exists));
    }

    #[test]
    fn unknown_node_is_rejected() {
        let mut b = GraphBuilder::new();
        let a = b.add(cm("a")).expect("add").clone();
        let missing = ObjectRef::new("v1", "Secret", Some("ns"), "missing");
        b.needs(&a, &missing);
        let err = b.build().expect_err("dangling edge");
        assert_eq!(
            err,
            GraphError::UnknownNode {
                dependent: Box::new(a),
                dependency: Box::new(missing)
            }
        );
        assert_eq!(err.category(), "unknown_node");
        assert_eq!(
            err.to_string(),
            "ConfigMap ns/a needs Secret ns/missing, which is not in the graph"
        );
    }

    #[test]
    fn unknown_dependent_is_rejected() {
        let mut b = GraphBuilder::new();
        let a = b.add(cm("a")).expect("add").clone();
        let missing = ObjectRef::new("v1", "Secret", Some("ns"), "missing");
        b.needs(&missing, &a);
        assert!(matches!(b.build(), Err(GraphError::UnknownNode { .. })));
    }

    #[test]
    fn self_edge_is_a_cycle_of_one() {
        let mut b = GraphBuilder::new();
        let a = b.add(cm("a")).expect("add").clone();
        b.needs(&a, &a);
        let err = b.build().expect_err("self cycle");
        assert_eq!(err, GraphError::Cycle(vec![a]));
        assert_eq!(err.category(), "cycle");
        assert_eq!(
            err.to_string(),
            "dependency cycle: ConfigMap ns/a -> ConfigMap ns/a"
        );
    }

    #[test]
    fn two_cycle_display() {
        let mut b = GraphBuilder::new();
        let a = b.add(cm("a")).expect("add").clone();
        let s = b.add(secret("b")).expect("add").clone();
        b.needs(&s, &a);
        b.needs(&a, &s);
        let err = b.build().expect_err("cycle");
        assert_eq!(
            err.to_string(),
            "dependency cycle: ConfigMap ns/a -> Secret ns/b -> ConfigMap ns/a"
        );
    }

    #[test]
    fn three_cycle_starts_at_smallest_in_needs_order() {
        // Added out of order, and with an acyclic tail, to show neither matters.
        let mut b = GraphBuilder::new();
        let z = b.add(secret("z")).expect("add").clone();
        let c = b.add(cm("c")).expect("add").clone();
        let a = b.add(cm("a")).expect("add").clone();
        let tail = b.add(cm("0-tail")).expect("add").clone();
        // a needs z, z needs c, c needs a.
        b.needs(&c, &a);
        b.needs(&z, &c);
        b.needs(&a, &z);
        b.needs(&tail, &a);
        let err = b.build().expect_err("cycle");
        assert_eq!(
            err,
            GraphError::Cycle(vec![a.clone(), z.clone(), c.clone()])
        );
        assert_eq!(
            err.to_string(),
            "dependency cycle: ConfigMap ns/a -> Secret ns/z -> ConfigMap ns/c -> ConfigMap ns/a"
        );
    }

    #[test]
    fn waves_of_a_known_graph() {
        //   ns <- sa <- deploy
        //   ns <- cm <- deploy
        //   crd (alone)
        //   ns <- svc
        let node = |api: &str, kind: &str, ns: Option<&str>, name: &str| {
            let mut meta = json!({"name": name});
            if let Some(ns) = ns {
                meta["namespace"] = json!(ns);
            }
            Node::new(
                json!({"apiVersion": api, "kind": kind, "metadata": meta}),
                Readiness::Exists,
            )
            .expect("valid")
        };
        let mut b = GraphBuilder::new();
        let deploy = b
            .add(node("apps/v1", "Deployment", Some("eg"), "ctl"))
            .expect("add")
            .clone();
        let cmap = b
            .add(node("v1", "ConfigMap", Some("eg"), "cfg"))
            .expect("add")
            .clone();
        let sa = b
            .add(node("v1", "ServiceAccount", Some("eg"), "ctl"))
            .expect("add")
            .clone();
        let ns = b
            .add(node("v1", "Namespace", None, "eg"))
            .expect("add")
            .clone();
        let svc = b
            .add(node("v1", "Service", Some("eg"), "ctl"))
            .expect("add")
            .clone();
        let crd = b
            .add(node(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                None,
                "x.example.com",
            ))
            .expect("add")
            .clone();
        b.needs(&deploy, &sa);
        b.needs(&deploy, &cmap);
        b.needs(&deploy, &ns); // redundant with the transitive path; must not change waves
        b.needs(&sa, &ns);
        b.needs(&cmap, &ns);
        b.needs(&svc, &ns);
        let g = b.build().expect("acyclic");

        assert_eq!(g.len(), 6);
        assert!(!g.is_empty());
        // Within a wave, ObjectRef order: group "" before "apiextensions.k8s.io" and "apps",
        // then kind.
        let expected = vec![
            vec![ns.clone(), crd.clone()],
            vec![cmap.clone(), svc.clone(), sa.clone()],
            vec![deploy.clone()],
        ];
        assert_eq!(g.waves(), expected);
        let mut reversed = expected.clone();
        reversed.reverse();
        assert_eq!(g.prune_waves(), reversed);

        assert_eq!(g.wave(&deploy), Some(2));
        assert_eq!(g.wave(&crd), Some(0));
        let mut deploy_deps = vec![&cmap, &sa, &ns];
        deploy_deps.sort();
        assert_eq!(g.dependencies(&deploy), deploy_deps);
        assert!(g.dependencies(&ns).is_empty());
        let mut ns_dependents = vec![&cmap, &sa, &svc, &deploy];
        ns_dependents.sort();
        assert_eq!(g.dependents(&ns), ns_dependents);
        let ids: Vec<_> = g.nodes().map(|n| n.id.clone()).collect();
        let mut sorted_ids = ids.clone();
        sorted_ids.sort();
        assert_eq!(ids, sorted_ids);
    }

    #[test]
    fn empty_graph() {
        let g = GraphBuilder::new().build().expect("empty is valid");
        assert!(g.is_empty());
        assert_eq!(g.len(), 0);
        assert!(g.waves().is_empty());
        assert!(g.prune_waves().is_empty());
        let unknown = ObjectRef::new("v1", "ConfigMap", Some("ns"), "x");
        assert!(g.node(&unknown).is_none());
        assert!(g.dependencies(&unknown).is_empty());
        assert_eq!(g.wave(&unknown), None);
    }
}
