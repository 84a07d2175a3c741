//! Pod networking: one bridge per kubelet (the node's pod CIDR, a /24 of 10.214.0.0/16, this
//! machine at `.1`) and per pod a network namespace with a veth pair onto the bridge, so pods
//! reach each other on one L2 segment (no IP forwarding on this machine) and the tests reach
//! every pod. Inside a pod, the apiserver is forwarded to `127.0.0.1:443` from a socket bound in
//! the pod's namespace, and Service names resolve through the pod's `/etc/hosts` (written from
//! [`hosts_file`]) to the IPs of the pods behind them: there is no kube-proxy or cluster DNS.
//! Needs root and iproute2; everything is deleted when the kubelet stops.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

use k8s_openapi::api::core::v1::Service;

/// Errors setting up pod networking.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("`ip {args}` failed: {stderr}")]
    Ip { args: String, stderr: String },
    #[error("running ip: {0}")]
    Spawn(std::io::Error),
    #[error("no free pod address left in {0}")]
    Exhausted(String),
    #[error("no free bridge subnet in 10.214.0.0/16")]
    NoSubnet,
    #[error("entering network namespace {netns}: {message}")]
    Enter { netns: String, message: String },
}

impl NetError {
    /// Stable category for logs and pod status reasons.
    pub fn category(&self) -> &'static str {
        match self {
            NetError::Ip { .. } => "ip",
            NetError::Spawn(_) => "spawn",
            NetError::Exhausted(_) => "exhausted",
            NetError::NoSubnet => "no_subnet",
            NetError::Enter { .. } => "enter",
        }
    }
}

/// Runs `ip args`.
pub fn ip(args: &[&str]) -> Result<(), NetError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(NetError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Ip {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// The node's bridge and its /24.
#[derive(Debug)]
pub struct Bridge {
    pub name: String,
    /// Third octet of 10.214.N.0/24.
    pub subnet: u8,
    used: BTreeSet<u8>,
    last: u8,
}

impl Bridge {
    /// This machine's address on the bridge (the node's InternalIP for pods).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 214, self.subnet, 1)
    }

    pub fn cidr(&self) -> String {
        format!("10.214.{}.0/24", self.subnet)
    }

    /// Creates a bridge `egk<N>` for a /24 no other bridge of this machine uses, starting from
    /// one derived from the process id.
    pub fn create() -> Result<Self, NetError> {
        let start = (std::process::id() % 250) as u8;
        for i in 0..250u8 {
            let subnet = start.wrapping_add(i) % 250;
            let name = format!("egk{subnet}");
            if std::path::Path::new(&format!("/sys/class/net/{name}")).exists() {
                continue;
            }
            if ip(&["link", "add", &name, "type", "bridge"]).is_err() {
                continue;
            }
            let bridge = Self {
                name,
                subnet,
                used: BTreeSet::new(),
                last: 254,
            };
            let cidr = format!("{}/24", bridge.gateway());
            ip(&["addr", "add", &cidr, "dev", &bridge.name])?;
            ip(&["link", "set", &bridge.name, "up"])?;
            return Ok(bridge);
        }
        Err(NetError::NoSubnet)
    }

    /// A pod's network namespace `egk<N>-<host>` with address 10.214.N.host on the bridge.
    pub fn add_pod(&mut self) -> Result<PodNet, NetError> {
        let host =
            next_host(self.last, &self.used).ok_or_else(|| NetError::Exhausted(self.cidr()))?;
        self.last = host;
        let netns = format!("{}-{host}", self.name);
        let link = format!("{}h{host}", self.name);
        let peer = format!("{}p{host}", self.name);
        let _ = ip(&["netns", "del", &netns]);
        let _ = ip(&["link", "del", &link]);
        ip(&["netns", "add", &netns])?;
        self.used.insert(host);
        let net = PodNet {
            netns,
            link,
            address: Ipv4Addr::new(10, 214, self.subnet, host),
            host,
        };
        let address = format!("{}/24", net.address);
        let bridge = self.name.clone();
        let steps: [&[&str]; 8] = [
            &[
                "link", "add", &net.link, "type", "veth", "peer", "name", &peer,
            ],
            &["link", "set", &peer, "netns", &net.netns],
            &["link", "set", &net.link, "master", &bridge],
            &["link", "set", &net.link, "up"],
            &["-n", &net.netns, "addr", "add", &address, "dev", &peer],
            &["-n", &net.netns, "link", "set", &peer, "name", "eth0"],
            &["-n", &net.netns, "link", "set", "eth0", "up"],
            &["-n", &net.netns, "link", "set", "lo", "up"],
        ];
        for step in steps {
            if let Err(e) = ip(step) {
                self.remove_pod(&net);
                return Err(e);
            }
        }
        Ok(net)
    }

    /// Frees a pod's address once its owner deleted the namespace and link (not before: a new
    /// pod with the same address would lose its namespace to the old one's clean-up).
    pub fn forget(&mut self, net: &PodNet) {
        self.used.remove(&net.host);
    }

    /// Deletes a pod's namespace and link and frees its address.
    pub fn remove_pod(&mut self, net: &PodNet) {
        let _ = ip(&["netns", "del", &net.netns]);
        let _ = ip(&["link", "del", &net.link]);
        self.used.remove(&net.host);
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.name]);
    }
}

/// The next free host part (2..=254) after `last`, round robin: a stopped pod's address is
/// reused last.
pub fn next_host(last: u8, used: &BTreeSet<u8>) -> Option<u8> {
    let last = u16::from(last.clamp(2, 254));
    (1..=253u16)
        .map(|i| ((last - 2 + i) % 253 + 2) as u8)
        .find(|h| !used.contains(h))
}

/// A pod's network namespace and address.
#[derive(Debug, Clone)]
pub struct PodNet {
    pub netns: String,
    pub link: String,
    pub address: Ipv4Addr,
    host: u8,
}

/// Binds a TCP listener at `addr` inside network namespace `netns` (from a thread that enters
/// it; the socket keeps the namespace it was made in).
pub fn listen_in(netns: &str, addr: SocketAddr) -> Result<std::net::TcpListener, NetError> {
    let enter = |message: String| NetError::Enter {
        netns: netns.to_owned(),
        message,
    };
    let path = format!("/run/netns/{netns}");
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = File::open(&path).map_err(|e| enter(format!("{path}: {e}")))?;
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| enter(format!("setns: {e}")))?;
                let listener = std::net::TcpListener::bind(addr)
                    .map_err(|e| enter(format!("bind {addr}: {e}")))?;
                listener
                    .set_nonblocking(true)
                    .map_err(|e| enter(format!("nonblocking: {e}")))?;
                Ok(listener)
            })
            .join()
            .map_err(|_| enter("the thread entering it panicked".into()))?
    })
}

/// Forwards every connection accepted on `listener` to `target` until the task is aborted.
pub async fn forward(listener: std::net::TcpListener, target: SocketAddr) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    while let Ok((mut inbound, _)) = listener.accept().await {
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// A pod's `/etc/hosts`: localhost, the pod's own name, and for every Service with a selector the
/// IPs of the running pods it selects (`name.ns.svc.cluster.local`, `name.ns.svc`, `name.ns`, and
/// the bare name for Services of the pod's own namespace). `pods` are `(namespace, labels, ip)`.
pub fn hosts_file(
    own: (&str, &str, Ipv4Addr),
    services: &[Service],
    pods: &[(String, BTreeMap<String, String>, Ipv4Addr)],
) -> String {
    let (own_ns, own_name, own_ip) = own;
    let mut lines = vec![
        "127.0.0.1\tlocalhost".to_owned(),
        "::1\tlocalhost ip6-localhost ip6-loopback".to_owned(),
        format!("{own_ip}\t{own_name}"),
    ];
    for svc in services {
        let (Some(name), Some(ns)) = (&svc.metadata.name, &svc.metadata.namespace) else {
            continue;
        };
        let Some(selector) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
            continue;
        };
        if selector.is_empty() {
            continue;
        }
        let mut names = vec![
            format!("{name}.{ns}.svc.cluster.local"),
            format!("{name}.{ns}.svc"),
            format!("{name}.{ns}"),
        ];
        if ns == own_ns {
            names.push(name.clone());
        }
        let names = names.join(" ");
        for (_, _, ip) in pods.iter().filter(|(pns, labels, _)| {
            pns == ns && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        }) {
            lines.push(format!("{ip}\t{names}"));
        }
    }
    lines.push(String::new());
    lines.join("\n")
}

/// The load balancer addresses of a `LoadBalancer` Service: the addresses of the ready pods it
/// selects (each listens on the Service's target ports, which the fleet keeps equal to its
/// ports), sorted. Empty for other Services. `pods` are `(namespace, labels, ip, ready)`.
pub fn load_balancer_ips(
    svc: &Service,
    pods: &[(String, BTreeMap<String, String>, Ipv4Addr, bool)],
) -> Vec<Ipv4Addr> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    let (Some(selector), Some(ns)) = (&spec.selector, &svc.metadata.namespace) else {
        return Vec::new();
    };
    if spec.type_.as_deref() != Some("LoadBalancer") || selector.is_empty() {
        return Vec::new();
    }
    let mut ips: Vec<Ipv4Addr> = pods
        .iter()
        .filter(|(pns, labels, _, ready)| {
            *ready && pns == ns && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .map(|(_, _, ip, _)| *ip)
        .collect();
    ips.sort();
    ips
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn addresses_are_handed_out_round_robin_and_never_twice() {
        let mut used = BTreeSet::new();
        assert_eq!(next_host(254, &used), Some(2));
        used.extend([2, 3]);
        assert_eq!(next_host(2, &used), Some(4));
        used.remove(&2);
        // 2 is free again, but comes only after the rest of the range.
        assert_eq!(next_host(4, &used), Some(5));
        assert_eq!(next_host(253, &used), Some(254));
        assert_eq!(next_host(254, &used), Some(2));
        let full: BTreeSet<u8> = (2..=254).collect();
        assert_eq!(next_host(7, &full), None);
    }

    #[test]
    fn load_balancers_point_at_the_ready_pods_they_select() {
        let svc = |type_: &str| -> Service {
            serde_json::from_value(json!({
                "metadata": {"name": "gw", "namespace": "ns"},
                "spec": {"type": type_, "selector": {"app": "gw"}}
            }))
            .expect("svc")
        };
        let labels = BTreeMap::from([("app".to_owned(), "gw".to_owned())]);
        let pods = vec![
            (
                "ns".to_owned(),
                labels.clone(),
                Ipv4Addr::new(10, 214, 0, 9),
                true,
            ),
            (
                "ns".to_owned(),
                labels.clone(),
                Ipv4Addr::new(10, 214, 0, 3),
                true,
            ),
            (
                "ns".to_owned(),
                labels.clone(),
                Ipv4Addr::new(10, 214, 0, 4),
                false,
            ),
            (
                "other".to_owned(),
                labels,
                Ipv4Addr::new(10, 214, 0, 5),
                true,
            ),
        ];
        assert_eq!(
            load_balancer_ips(&svc("LoadBalancer"), &pods),
            [Ipv4Addr::new(10, 214, 0, 3), Ipv4Addr::new(10, 214, 0, 9)]
        );
        assert!(load_balancer_ips(&svc("ClusterIP"), &pods).is_empty());
    }

    #[test]
    fn hosts_map_service_names_to_the_pods_they_select() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "xds", "namespace": "prod"},
            "spec": {"selector": {"app": "cp"}}
        }))
        .expect("svc");
        let headless: Service = serde_json::from_value(json!({
            "metadata": {"name": "ext", "namespace": "prod"}, "spec": {}
        }))
        .expect("svc");
        let labels = |v: &str| BTreeMap::from([("app".to_owned(), v.to_owned())]);
        let pods = vec![
            (
                "prod".to_owned(),
                labels("cp"),
                Ipv4Addr::new(10, 214, 1, 2),
            ),
            (
                "prod".to_owned(),
                labels("cp"),
                Ipv4Addr::new(10, 214, 1, 3),
            ),
            (
                "other".to_owned(),
                labels("cp"),
                Ipv4Addr::new(10, 214, 1, 4),
            ),
            (
                "prod".to_owned(),
                labels("proxy"),
                Ipv4Addr::new(10, 214, 1, 5),
            ),
        ];
        let hosts = hosts_file(
            ("shop", "gw-1", Ipv4Addr::new(10, 214, 1, 9)),
            &[svc, headless],
            &pods,
        );
        assert!(hosts.contains("10.214.1.9\tgw-1\n"), "{hosts}");
        assert!(
            hosts.contains("10.214.1.2\txds.prod.svc.cluster.local xds.prod.svc xds.prod\n"),
            "{hosts}"
        );
        assert!(hosts.contains("10.214.1.3\t"), "{hosts}");
        assert!(
            !hosts.contains("10.214.1.4") && !hosts.contains("10.214.1.5"),
            "{hosts}"
        );
        assert!(!hosts.contains("ext."), "{hosts}");
    }
}
