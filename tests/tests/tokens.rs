//! Service-account tokens through the real binary and kubectl: `kubectl create token`,
//! TokenReview, the token as a bearer token (authenticated: 403 not 401), expired, forged and
//! invalidated tokens (401).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use k8slite_tests::Server;
use serde_json::Value;

fn ca_file(s: &Server) -> PathBuf {
    let b64 = s.k(&[
        "config",
        "view",
        "--raw",
        "-o",
        "jsonpath={.clusters[0].cluster.certificate-authority-data}",
    ]);
    let pem = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .expect("CA data in the kubeconfig is base64");
    let path = s.dir.path().join("ca.crt");
    std::fs::write(&path, pem).expect("write CA file");
    path
}

/// kubectl with only a bearer token (no client certificate).
fn with_token(s: &Server, ca: &Path, token: &str, args: &[&str]) -> std::process::Output {
    let server = format!("--server=https://127.0.0.1:{}", s.port);
    let ca = format!("--certificate-authority={}", ca.display());
    let tok = format!("--token={token}");
    let mut all = vec![
        "--kubeconfig=/dev/null",
        server.as_str(),
        ca.as_str(),
        tok.as_str(),
    ];
    all.extend_from_slice(args);
    s.kubectl(&all)
}

fn review(s: &Server, token: &str, audiences: Option<&str>) -> Value {
    let aud = audiences
        .map(|a| format!(r#","audiences":["{a}"]"#))
        .unwrap_or_default();
    let body = format!(
        r#"{{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{{"token":"{token}"{aud}}}}}"#
    );
    let out = s.k_stdin(&["create", "-f", "-", "-o", "json"], Some(&body));
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("TokenReview answer is not JSON ({e}): {out}"))
}

fn ensure_default_sa(s: &Server) {
    // The ServiceAccount controller creates it when it runs; create it here otherwise.
    if !s.kubectl(&["get", "sa", "default"]).status.success() {
        let out = s.kubectl(&["create", "sa", "default"]);
        assert!(
            out.status.success() || String::from_utf8_lossy(&out.stderr).contains("AlreadyExists"),
            "creating the default service account: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn create_token_review_and_bearer() {
    let s = Server::start();
    ensure_default_sa(&s);
    let token = s.k(&["create", "token", "default"]).trim().to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    let r = review(&s, &token, None);
    let st = &r["status"];
    assert_eq!(st["authenticated"], true, "{r}");
    assert_eq!(
        st["user"]["username"],
        "system:serviceaccount:default:default"
    );
    let uid = s.k(&["get", "sa", "default", "-o", "jsonpath={.metadata.uid}"]);
    assert_eq!(st["user"]["uid"], uid.as_str());
    assert_eq!(
        st["user"]["groups"],
        serde_json::json!([
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated"
        ])
    );
    assert_eq!(
        st["audiences"],
        serde_json::json!(["https://kubernetes.default.svc.cluster.local"])
    );
    // a token for another audience is not for the API server
    let other = s
        .k(&["create", "token", "default", "--audience=vault"])
        .trim()
        .to_string();
    assert_ne!(review(&s, &other, None)["status"]["authenticated"], true);
    assert_eq!(
        review(&s, &other, Some("vault"))["status"]["authenticated"],
        true
    );

    // as a bearer token: authenticated, then refused by authorization (403, not 401)
    let ca = ca_file(&s);
    let out = with_token(&s, &ca, &token, &["get", "pods"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("Forbidden") && err.contains("system:serviceaccount:default:default"),
        "expected 403 for the service account: {err}"
    );
    // forged: signature of another token, garbage, foreign audience → 401
    let mut parts: Vec<&str> = token.split('.').collect();
    let other_sig = other.split('.').nth(2).expect("signature");
    parts[2] = other_sig;
    for bad in [parts.join("."), "not-a-token".to_string(), other.clone()] {
        let out = with_token(&s, &ca, &bad, &["get", "pods"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("Unauthorized"),
            "expected 401 for {bad}: {err}"
        );
        assert_ne!(review(&s, &bad, None)["status"]["authenticated"], true);
    }
}

#[test]
fn bound_tokens_die_with_their_pod_and_expired_tokens_fail() {
    let s = Server::start();
    ensure_default_sa(&s);
    s.k(&["run", "web", "--image=nginx"]);
    let token = s
        .k(&[
            "create",
            "token",
            "default",
            "--bound-object-kind=Pod",
            "--bound-object-name=web",
        ])
        .trim()
        .to_string();
    let r = review(&s, &token, None);
    assert_eq!(r["status"]["authenticated"], true, "{r}");
    assert_eq!(
        r["status"]["user"]["extra"]["authentication.kubernetes.io/pod-name"],
        serde_json::json!(["web"])
    );
    let err = s.k_err(
        &[
            "create",
            "token",
            "default",
            "--bound-object-kind=Pod",
            "--bound-object-name=web",
            "--bound-object-uid=00000000-0000-0000-0000-000000000000",
        ],
        None,
    );
    assert!(err.contains("does not match the UID in record"), "{err}");
    let err = s.k_err(&["create", "token", "default", "--duration=5m"], None);
    assert!(
        err.contains("may not specify a duration less than 10 minutes"),
        "{err}"
    );

    // unscheduled, so deleted at once
    s.k(&["delete", "pod", "web"]);
    let r = review(&s, &token, None);
    assert_ne!(
        r["status"]["authenticated"], true,
        "token of a deleted pod: {r}"
    );
    let ca = ca_file(&s);
    let out = with_token(&s, &ca, &token, &["get", "pods"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthorized"));

    // an expired token signed with the server's own key
    let key = k8slite_pki::ServiceAccountKey::load_or_create(
        &s.data_dir()
            .join("server/tls")
            .join(k8slite_pki::SERVICE_ACCOUNT_KEY_FILE),
    )
    .expect("the server's service-account key");
    let signer =
        k8slite_apiserver::TokenSigner::new(&key, "https://kubernetes.default.svc.cluster.local");
    let valid = signer
        .verify(
            s.k(&["create", "token", "default"]).trim(),
            signer.audiences(),
        )
        .expect("the key on disk is the one the server signs with");
    let mut expired = valid.clone();
    expired.iat -= 7200;
    expired.nbf -= 7200;
    expired.exp = expired.iat + 600;
    let expired = signer.issue(&expired).expect("signed");
    let out = with_token(&s, &ca, &expired, &["get", "pods"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthorized"),
        "expired token accepted"
    );
    let r = review(&s, &expired, None);
    assert_ne!(r["status"]["authenticated"], true);
    assert!(
        r["status"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("xpired")),
        "{r}"
    );
    // the fresh token signed the same way is accepted: the key survives as the server's
    let fresh = signer.issue(&valid).expect("signed");
    assert_eq!(review(&s, &fresh, None)["status"]["authenticated"], true);
}
