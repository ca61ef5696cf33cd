//! Bad input gets a 4xx `Status`, never a panic or a hang, and nothing stored is lost.

use std::time::Duration;

use base64::Engine;
use k8slite_tests::Server;
use serde_json::Value;

/// An HTTPS client with the admin identity of the server's kubeconfig.
fn client(s: &Server) -> (reqwest::Client, String) {
    let kc: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(s.kubeconfig()).expect("kubeconfig"))
            .expect("kubeconfig yaml");
    let b64 = |v: &Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 field"))
            .expect("base64")
    };
    let ca = b64(&kc["clusters"][0]["cluster"]["certificate-authority-data"]);
    let mut ident = b64(&kc["users"][0]["user"]["client-certificate-data"]);
    ident.extend(b64(&kc["users"][0]["user"]["client-key-data"]));
    let server = kc["clusters"][0]["cluster"]["server"]
        .as_str()
        .expect("server")
        .to_string();
    let c = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("ca"))
        .identity(reqwest::Identity::from_pem(&ident).expect("identity"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    (c, server)
}

async fn status_of(resp: reqwest::Response) -> (u16, Value) {
    let code = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (code, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_status_errors() {
    let s = Server::start();
    s.k(&["create", "configmap", "precious", "--from-literal=a=b"]);
    let (c, base) = client(&s);
    let cms = format!("{base}/api/v1/namespaces/default/configmaps");
    let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        ("malformed json", c.post(&cms).header("content-type", "application/json").body("{\"metadata\": "), 400),
        ("malformed yaml", c.post(&cms).header("content-type", "application/yaml").body("a: [b\n  c: :"), 400),
        ("not an object", c.post(&cms).header("content-type", "application/json").body("[1,2,3]"), 400),
        ("kind mismatch", c.post(&cms).header("content-type", "application/json").body(r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#), 400),
        ("wrong type", c.post(&cms).header("content-type", "application/json").body(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":["a"]}"#), 400),
        ("deep nesting", c.post(&cms).header("content-type", "application/json").body("[".repeat(200_000)), 400),
        ("deep yaml", c.post(&cms).header("content-type", "application/yaml").body("a:\n".to_string() + &"- ".repeat(50_000) + "x\n"), 400),
        ("too large", c.post(&cms).header("content-type", "application/json").body(vec![b' '; 3 * 1024 * 1024 + 10]), 413),
        ("protobuf garbage", c.post(&cms).header("content-type", "application/vnd.kubernetes.protobuf").body("\x00\x01"), 400),
        ("truncated protobuf", c.post(&cms).header("content-type", "application/vnd.kubernetes.protobuf").body(b"k8s\x00\x0a\x7f\x0a".to_vec()), 400),
        ("unknown body type", c.post(&cms).header("content-type", "text/csv").body("a,b"), 415),
        ("garbage path", c.get(format!("{base}/api/v1/namespaces/default/configmaps/a/b/c/d")), 404),
        ("unknown resource", c.get(format!("{base}/apis/nope.example.com/v1/things")), 404),
        (
            "encoded slash in a name",
            c.get(format!("{base}/api/v1/namespaces/a%2Fb/configmaps")),
            404,
        ),
        ("bad limit", c.get(format!("{cms}?limit=abc")), 400),
        ("bad selector", c.get(format!("{cms}?labelSelector=a%20b%3Dc")), 400),
        ("bad continue", c.get(format!("{cms}?limit=1&continue=%%%")), 400),
        ("bad accept", c.get(&cms).header("accept", "application/vnd.kubernetes.protobuf"), 406),
        ("bad patch type", c.patch(format!("{cms}/precious")).header("content-type", "text/plain").body("x"), 415),
        ("bad json patch", c.patch(format!("{cms}/precious")).header("content-type", "application/json-patch+json").body("{}"), 400),
        ("name mismatch", c.put(format!("{cms}/precious")).header("content-type", "application/json").body(r#"{"metadata":{"name":"other"}}"#), 400),
        ("bad dry run", c.post(format!("{cms}?dryRun=Maybe")).header("content-type", "application/json").body(r#"{"metadata":{"name":"x"}}"#), 400),
        ("bad rv", c.get(format!("{cms}?resourceVersion=banana&resourceVersionMatch=Exact")), 400),
    ];
    for (what, req, want) in cases {
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: request failed: {e}"));
        let (code, body) = status_of(resp).await;
        assert_eq!(code, want, "{what}: {body}");
        assert_eq!(body["kind"], "Status", "{what}: {body}");
        assert_eq!(body["code"], want, "{what}: {body}");
    }
    // a header over hyper's limit is refused by the HTTP layer, not a panic
    let resp = c
        .get(&cms)
        .header("x-junk", "a".repeat(200_000))
        .send()
        .await;
    if let Ok(r) = resp {
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    // still alive, nothing lost
    assert_eq!(
        s.k(&["get", "cm", "precious", "-o", "jsonpath={.data.a}"])
            .trim(),
        "b"
    );
}
