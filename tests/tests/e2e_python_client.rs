//! E2E (issue 11): the official Python client (`kubernetes` from PyPI, in the venv that
//! `tests/run.sh` creates) as a real client: interactive exec with stdin written as text and as
//! bytes, port-forward to the nginx stand-in, `create_from_yaml` twice (upstream's exact 409
//! body), server-side apply of created values twice (no conflict), a Service's status. The
//! checks are in `tests/clients/python_client.py`; this test starts the cluster and runs it.

use std::process::Command;

use k8slite_tests::e2e::E2eCluster;

#[test]
fn official_python_client() {
    let python = std::env::var("K8SLITE_PYTHON").unwrap_or_else(|_| {
        panic!(
            "prerequisite missing: K8SLITE_PYTHON (the venv with the official Python client; \
             tests/run.sh creates it and sets the variable)"
        )
    });
    let ok = Command::new(&python)
        .args(["-c", "import kubernetes"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "prerequisite missing: the kubernetes package in {python} (tests/run.sh installs it)"
    );
    let c = E2eCluster::start(0);
    c.k(&["run", "web", "--image", "nginx", "--port", "80"]);
    c.wait_pod_ready("web");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/python_client.py");
    let out = Command::new(&python)
        .arg(script)
        .env("KUBECONFIG", c.kubeconfig())
        .output()
        .expect("running the Python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "python client: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
}
