//! Restart on the same data dir, SIGTERM drain, and durability across SIGKILL.

use std::time::Duration;

use k8slite_tests::Server;

#[test]
fn restart_keeps_objects_certificates_token_and_revisions() {
    let mut s = Server::start();
    s.k(&["create", "configmap", "keep", "--from-literal=a=b"]);
    let rv1: i64 = s
        .k(&[
            "get",
            "cm",
            "keep",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .trim()
        .parse()
        .expect("rv");
    let token = std::fs::read_to_string(s.data_dir().join("server/token")).expect("token");
    assert!(
        token.starts_with("K10") && token.contains("::server:"),
        "{token}"
    );
    let ca = std::fs::read(s.data_dir().join("server/tls/server-ca.crt")).expect("server CA");
    let kubeconfig = std::fs::read_to_string(s.kubeconfig()).expect("kubeconfig");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.kubeconfig())
        .expect("kubeconfig meta")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "kubeconfig mode");
    assert!(
        s.terminate(Duration::from_secs(20)),
        "server did not stop cleanly on SIGTERM:\n{}",
        s.log()
    );
    s.spawn();
    assert_eq!(
        s.k(&["get", "cm", "keep", "-o", "jsonpath={.data.a}"])
            .trim(),
        "b"
    );
    assert_eq!(
        std::fs::read_to_string(s.data_dir().join("server/token")).expect("token"),
        token
    );
    assert_eq!(
        std::fs::read(s.data_dir().join("server/tls/server-ca.crt")).expect("CA"),
        ca
    );
    let kc2 = std::fs::read_to_string(s.kubeconfig()).expect("kubeconfig");
    assert_eq!(
        kc2.lines()
            .find(|l| l.contains("certificate-authority-data")),
        kubeconfig
            .lines()
            .find(|l| l.contains("certificate-authority-data"))
    );
    s.k(&["create", "configmap", "after"]);
    let rv2: i64 = s
        .k(&[
            "get",
            "cm",
            "after",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .trim()
        .parse()
        .expect("rv");
    assert!(
        rv2 > rv1,
        "resourceVersions must stay monotonic across restarts: {rv1} then {rv2}"
    );
}

#[test]
fn acknowledged_creates_survive_sigkill() {
    let mut s = Server::start();
    let kc = s.kubeconfig();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4 {
        let kc = kc.clone();
        let home = s.dir.path().to_path_buf();
        let stop = stop.clone();
        workers.push(std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("w{w}-{i}");
                let out = std::process::Command::new(k8slite_tests::kubectl_bin(None))
                    .args(["create", "configmap", &name, "--request-timeout=5s"])
                    .env("KUBECONFIG", &kc)
                    .env("HOME", &home)
                    .output()
                    .expect("kubectl");
                if out.status.success() {
                    acked.push(name);
                }
                i += 1;
            }
            acked
        }));
    }
    std::thread::sleep(Duration::from_millis(2500));
    s.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("worker"))
        .collect();
    assert!(
        acked.len() >= 4,
        "too few creates acknowledged before the kill: {}",
        acked.len()
    );
    s.spawn();
    let names = s.k(&["get", "cm", "-o", "jsonpath={.items[*].metadata.name}"]);
    let present: std::collections::HashSet<&str> = names.split_whitespace().collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|n| !present.contains(n.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged creates lost after SIGKILL: {lost:?}"
    );
}
