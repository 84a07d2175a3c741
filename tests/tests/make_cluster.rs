//! `make cluster` / `make cluster-stop`: the detached developer cluster starts, answers kubectl,
//! tolerates a second `up`, and `down` leaves no process and no state behind.

use std::path::Path;
use std::process::Command;

use eg_e2e::process::is_alive;

fn testcluster(state_dir: &Path, verb: &str) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_eg-testcluster"))
        .arg("--state-dir")
        .arg(state_dir)
        .arg(verb)
        .output()
        .expect("run eg-testcluster");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cluster_up_is_idempotent_and_down_leaves_nothing_behind() {
    let parent = tempfile::tempdir().expect("tempdir");
    let state = parent.path().join("cluster");

    let (ok, stdout, stderr) = testcluster(&state, "up");
    assert!(ok, "up failed: {stderr}");
    let kubeconfig = state.join("kubeconfig");
    assert_eq!(
        stdout.trim(),
        format!("export KUBECONFIG={}", kubeconfig.display())
    );
    let pids: Vec<u32> = std::fs::read_to_string(state.join("pids"))
        .expect("pids file")
        .split_whitespace()
        .map(|p| p.parse().expect("pid"))
        .collect();
    assert_eq!(pids.len(), 3, "etcd, apiserver, controller-manager");

    // The machine's kubectl works against it, and the project's CRDs are there. The machine image
    // ships kubectl; where one does not, this check is skipped and says so.
    match Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "get",
            "crd",
            "envoygateways.operator.gateway.envoyproxy.io",
            "-o",
            "name",
        ])
        .output()
    {
        Ok(kubectl) => assert!(
            kubectl.status.success(),
            "kubectl against the cluster: {}",
            String::from_utf8_lossy(&kubectl.stderr)
        ),
        Err(e) => eprintln!("kubectl not runnable ({e}); skipped the kubectl check"),
    }

    let (ok, stdout_again, stderr) = testcluster(&state, "up");
    assert!(ok, "second up failed: {stderr}");
    assert_eq!(stdout_again, stdout);
    assert!(stderr.contains("already running"), "{stderr}");
    let pids_again = std::fs::read_to_string(state.join("pids")).expect("pids file");
    assert_eq!(pids_again.split_whitespace().count(), 3);
    assert!(
        pids.iter().all(|p| is_alive(*p)),
        "second up must not restart the cluster"
    );

    let (ok, _, stderr) = testcluster(&state, "down");
    assert!(ok, "down failed: {stderr}");
    assert!(!state.exists(), "state directory left behind");
    for pid in pids {
        assert!(!is_alive(pid), "process {pid} survived down");
    }
}
