//! Test hosts in network namespaces: each has its own non-loopback address on a veth pair to
//! this machine, for what the apiserver refuses to point at loopback (EndpointSlice addresses
//! may not be in 127.0.0.0/8). Traffic only ever crosses the test's own veth pairs. Needs root
//! and iproute2; the namespace and its links are deleted when the host drops.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::kubelet::net::NetError;
use crate::process::{Lifetime, ManagedProcess, ProcessError};

/// Errors creating a test host.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("`ip {args}` failed: {stderr}")]
    Ip { args: String, stderr: String },
    #[error("running ip: {0}")]
    Spawn(#[from] std::io::Error),
    #[error(transparent)]
    Process(#[from] ProcessError),
}

fn ip(args: &[&str]) -> Result<(), NetnsError> {
    crate::kubelet::net::ip(args).map_err(|e| match e {
        NetError::Ip { args, stderr } => NetnsError::Ip { args, stderr },
        other => NetnsError::Ip {
            args: args.join(" "),
            stderr: other.to_string(),
        },
    })
}

/// A network namespace with one address, reachable from this machine through a veth pair.
#[derive(Debug)]
pub struct TestHost {
    netns: String,
    host_link: String,
    /// The host's address inside its namespace.
    pub address: Ipv4Addr,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl TestHost {
    /// Creates a namespace `eg<pid>-<n>` with address 10.213.x.2/30; this side is 10.213.x.1.
    pub fn create() -> Result<Self, NetnsError> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // One /30 per host; the pid spreads concurrent test binaries over the range.
        let slot = (pid.wrapping_mul(7) + n) % 16384;
        let (third, fourth) = ((slot / 64) as u8, ((slot % 64) * 4) as u8);
        let here = Ipv4Addr::new(10, 213, third, fourth + 1);
        let there = Ipv4Addr::new(10, 213, third, fourth + 2);
        let netns = format!("eg{pid}-{n}");
        let host_link = format!("egh{}", slot);
        let peer = format!("egp{}", slot);
        let _ = ip(&["link", "del", &host_link]);
        ip(&["netns", "add", &netns])?;
        let host = Self {
            netns,
            host_link,
            address: there,
        };
        ip(&[
            "link",
            "add",
            &host.host_link,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ])?;
        ip(&["link", "set", &peer, "netns", &host.netns])?;
        ip(&["addr", "add", &format!("{here}/30"), "dev", &host.host_link])?;
        ip(&["link", "set", &host.host_link, "up"])?;
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", host.netns.as_str(), "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        in_ns(&["addr", "add", &format!("{there}/30"), "dev", &peer])?;
        in_ns(&["link", "set", &peer, "up"])?;
        in_ns(&["link", "set", "lo", "up"])?;
        Ok(host)
    }

    /// Starts `program args` inside the namespace, owned by the caller.
    pub fn spawn(
        &self,
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<ManagedProcess, NetnsError> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns])
            .arg(program)
            .args(args);
        Ok(ManagedProcess::spawn(name, cmd, log, Lifetime::Owned)?)
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        // Deleting the namespace removes the peer, and with it the host side of the pair.
        let _ = ip(&["netns", "del", &self.netns]);
        let _ = ip(&["link", "del", &self.host_link]);
    }
}

/// An `eg-echo` process answering on port 8080 of its own test host.
#[derive(Debug)]
pub struct EchoHost {
    // Field order: the process stops before its namespace goes away.
    _process: ManagedProcess,
    pub host: TestHost,
    _logs: tempfile::TempDir,
}

impl EchoHost {
    /// Starts `eg-echo NAME ADDR` (the binary at `echo_bin`) on a new test host and waits until
    /// it accepts connections.
    pub async fn start(name: &str, echo_bin: &Path) -> Result<Self, NetnsError> {
        Self::start_with(name, echo_bin, &[]).await
    }

    /// Like [`EchoHost::start`], with `eg-echo`'s mode arguments (`--tls CERT KEY`, `--stream`).
    pub async fn start_with(
        name: &str,
        echo_bin: &Path,
        mode: &[String],
    ) -> Result<Self, NetnsError> {
        let host = TestHost::create()?;
        let addr = std::net::SocketAddr::new(std::net::IpAddr::V4(host.address), 8080);
        let logs = tempfile::tempdir()?;
        let mut args = vec![name.to_owned(), addr.to_string()];
        args.extend_from_slice(mode);
        let process = host.spawn(name, echo_bin, &args, &logs.path().join("echo.log"))?;
        let start = std::time::Instant::now();
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if start.elapsed() > std::time::Duration::from_secs(10) {
                return Err(NetnsError::Ip {
                    args: format!("netns exec {} eg-echo", host.netns),
                    stderr: format!("{name} not listening on {addr} after 10 s"),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Ok(Self {
            _process: process,
            host,
            _logs: logs,
        })
    }

    pub fn address(&self) -> std::net::IpAddr {
        std::net::IpAddr::V4(self.host.address)
    }
}
