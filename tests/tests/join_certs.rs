//! Joining with node certificates: the agent pins the server CA by the token's hash, trades the
//! token and two CSRs for its client certificate (`system:node:<name>`, `system:nodes`) and
//! kubelet serving certificate, stores them, talks to the API with the client certificate and
//! reuses the files after a restart. The real server binary; the agent library in-process (fake
//! runtime); the identity checked with the real `kubectl auth whoami`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use k8slite_agent::certs::{self, NodeCertSpec};
use k8slite_agent::connect::{JoinOptions, join_with_retry};
use k8slite_tests::{Server, eventually};
use tokio_util::sync::CancellationToken;

fn token(s: &Server) -> String {
    std::fs::read_to_string(s.data_dir().join("server/token"))
        .expect("join token")
        .trim()
        .to_string()
}

fn opts(s: &Server, token: String, data: &Path, name: &str) -> JoinOptions {
    JoinOptions {
        server: format!("https://127.0.0.1:{}", s.port),
        token,
        spec: NodeCertSpec {
            node_name: name.into(),
            addresses: vec!["10.0.0.7".into()],
        },
        certs_dir: certs::certs_dir(data),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn subject(pem: &str) -> (String, Vec<String>) {
    let der = k8slite_pki::first_cert_der(pem).expect("certificate");
    let id = k8slite_pki::identity_from_cert(&der).expect("identity");
    (id.user, id.groups)
}

/// `kubectl auth whoami` with a kubeconfig holding the node's client certificate.
fn whoami(s: &Server, dir: &Path, c: &certs::NodeCerts) -> String {
    let kc = dir.join("node-kubeconfig.yaml");
    k8slite_pki::write_kubeconfig(
        &kc,
        0o600,
        &format!("https://127.0.0.1:{}", s.port),
        &c.server_ca_pem,
        &c.client_cert_pem,
        &c.client_key_pem,
    )
    .expect("node kubeconfig");
    let out = std::process::Command::new(k8slite_tests::kubectl_bin(None))
        .arg("--kubeconfig")
        .arg(&kc)
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
        ])
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl auth whoami as the node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn agent_joins_with_node_certificates_and_reuses_them() {
    let s = Server::start();
    let data = tempfile::tempdir().expect("agent data dir");
    let o = opts(&s, token(&s), data.path(), "joiner");
    let rt = runtime();
    let shutdown = CancellationToken::new();

    let joined = rt
        .block_on(join_with_retry(&o, &shutdown))
        .expect("join")
        .expect("not cancelled");
    assert!(joined.certs.fresh, "first join issues certificates");
    let dir = certs::certs_dir(data.path());
    for (f, mode) in [
        (certs::CLIENT_CERT, 0o644),
        (certs::CLIENT_KEY, 0o600),
        (certs::SERVING_CERT, 0o644),
        (certs::SERVING_KEY, 0o600),
        (certs::SERVER_CA, 0o644),
        (certs::CLIENT_CA, 0o644),
    ] {
        let m = std::fs::metadata(dir.join(f))
            .unwrap_or_else(|e| panic!("{f}: {e}"))
            .permissions()
            .mode();
        assert_eq!(m & 0o777, mode, "{f}");
    }
    let client_pem = std::fs::read_to_string(dir.join(certs::CLIENT_CERT)).expect("client cert");
    assert_eq!(
        subject(&client_pem),
        (
            "system:node:joiner".to_string(),
            vec!["system:nodes".into()]
        )
    );
    // The CAs are the server's own.
    let tls = s.data_dir().join("server/tls");
    for (mine, theirs) in [
        (certs::SERVER_CA, "server-ca.crt"),
        (certs::CLIENT_CA, "client-ca.crt"),
    ] {
        assert_eq!(
            std::fs::read(dir.join(mine)).expect(mine),
            std::fs::read(tls.join(theirs)).expect(theirs),
            "{mine}"
        );
    }
    let serving = k8slite_pki::inspect_leaf(
        &joined.certs.serving_cert_pem,
        &joined.certs.serving_key_pem,
        &joined.certs.server_ca_pem,
    )
    .expect("serving cert from the server CA");
    for san in ["joiner", "localhost", "127.0.0.1", "10.0.0.7"] {
        assert!(
            serving.sans.iter().any(|x| x == san),
            "{san} in {:?}",
            serving.sans
        );
    }

    // The API server authenticates the client certificate as the node.
    assert_eq!(
        whoami(&s, data.path(), &joined.certs),
        "system:node:joiner [\"system:nodes\",\"system:authenticated\"]"
    );

    // The agent registers its node with that client and the node becomes Ready.
    let mut cfg = k8slite_agent::AgentConfig::new("joiner");
    cfg.node_ip = "10.0.0.7".parse().expect("ip");
    cfg.lease_renew_interval = Duration::from_secs(2);
    cfg.node_status_update_frequency = Duration::from_secs(2);
    let agent = rt.spawn(k8slite_agent::run_fake_node(
        joined.client.clone(),
        cfg,
        shutdown.clone(),
    ));
    let ready = eventually(Duration::from_secs(30), || {
        let out = s.kubectl(&[
            "get",
            "node",
            "joiner",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        (String::from_utf8_lossy(&out.stdout).trim() == "True").then_some(())
    });
    assert!(ready.is_some(), "node joiner never became Ready");
    shutdown.cancel();
    rt.block_on(agent)
        .expect("agent task")
        .expect("agent stopped cleanly");

    // Restart: the same files are reused (same serials), and still accepted.
    let before: Vec<Vec<u8>> = [certs::CLIENT_CERT, certs::SERVING_CERT]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).expect("cert"))
        .collect();
    let again = rt
        .block_on(join_with_retry(&o, &CancellationToken::new()))
        .expect("rejoin")
        .expect("not cancelled");
    assert!(!again.certs.fresh, "restart reuses the stored certificates");
    assert_eq!(again.certs.client_serial, joined.certs.client_serial);
    assert_eq!(again.certs.serving_serial, joined.certs.serving_serial);
    let after: Vec<Vec<u8>> = [certs::CLIENT_CERT, certs::SERVING_CERT]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).expect("cert"))
        .collect();
    assert_eq!(before, after, "files untouched");
    let v = rt
        .block_on(again.client.apiserver_version())
        .expect("API as the node");
    assert!(!v.git_version.is_empty());

    // Another node name on the same data dir gets new certificates.
    let other = opts(&s, token(&s), data.path(), "renamed");
    let renamed = rt
        .block_on(join_with_retry(&other, &CancellationToken::new()))
        .expect("join as another name")
        .expect("not cancelled");
    assert!(renamed.certs.fresh);
    assert_ne!(renamed.certs.client_serial, joined.certs.client_serial);
    assert_eq!(
        subject(&renamed.certs.client_cert_pem).0,
        "system:node:renamed"
    );
}

#[test]
fn wrong_tokens_are_refused_and_nothing_is_stored() {
    let s = Server::start();
    let good = k8slite_pki::JoinToken::parse(&token(&s)).expect("token");
    let rt = runtime();

    // The right secret behind another CA hash: refused when the CA is checked, before the
    // secret is sent (the server never sees a certificate request).
    let data = tempfile::tempdir().expect("agent data dir");
    let mut wrong_ca = good.clone();
    wrong_ca.ca_hash = Some("ab".repeat(32));
    let err = rt
        .block_on(join_with_retry(
            &opts(&s, wrong_ca.to_string(), data.path(), "n1"),
            &CancellationToken::new(),
        ))
        .expect_err("CA mismatch");
    assert!(matches!(err, k8slite_agent::Error::CaMismatch(_)), "{err}");
    assert!(
        !s.log().contains("node certificate request"),
        "the server saw a certificate request: {}",
        s.log()
    );
    assert!(
        !certs::certs_dir(data.path())
            .join(certs::CLIENT_CERT)
            .exists()
    );

    // The right CA hash with a wrong secret: the server refuses (401) and nothing is stored.
    let mut wrong_secret = good.clone();
    wrong_secret.password = "not-the-secret".into();
    let err = rt
        .block_on(join_with_retry(
            &opts(&s, wrong_secret.to_string(), data.path(), "n1"),
            &CancellationToken::new(),
        ))
        .expect_err("wrong secret");
    let msg = err.to_string();
    assert!(
        matches!(&err, k8slite_agent::Error::Kube { source: kube::Error::Api(st), .. } if st.code == 401),
        "{msg}"
    );
    assert!(msg.contains("node-certs"), "{msg}");
    let dir = certs::certs_dir(data.path());
    for f in [certs::CLIENT_CERT, certs::CLIENT_KEY, certs::SERVING_CERT] {
        assert!(!dir.join(f).exists(), "{f} stored after a refused join");
    }
    let refused = eventually(Duration::from_secs(5), || {
        s.log()
            .contains("node certificate request without a valid join token refused")
            .then_some(())
    });
    assert!(refused.is_some(), "server log: {}", s.log());
}
