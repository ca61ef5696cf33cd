//! E2E (issue 11): exec, attach and port-forward over WebSocket as the non-kubectl clients
//! (Python, JavaScript, Java) speak them, driven by a WebSocket client of our own
//! (tokio-tungstenite over rustls with the admin certificate) against pods on real containerd:
//!
//! - exec with stdin open, stdin in text and in binary messages, `v5` and `v4`, with and
//!   without a TTY, the base64 variant, v5's close-stdin signal;
//! - attach to a container started with `stdin: true`;
//! - port-forward with the channel protocol (two channels per port, each opened by the port in
//!   2 little-endian bytes) for two ports at once, binary and base64, and without any
//!   subprotocol;
//! - exec into a container that has exited: 400 BadRequest, not a 5xx clients retry.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::{SinkExt, StreamExt};
use k8slite_tests::e2e::{E2eCluster, WAIT};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, ClientRequestBuilder, Message};

type Ws = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// How to reach the API server as the admin.
struct Api {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
}

/// A base64 field of the kubeconfig, decoded.
fn kubeconfig_field(cfg: &serde_json::Value, pointer: &str) -> String {
    let b64 = cfg
        .pointer(pointer)
        .and_then(serde_json::Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} missing in the kubeconfig"));
    let raw = STANDARD.decode(b64).expect("base64 in the kubeconfig");
    String::from_utf8(raw).expect("PEM text")
}

fn api(c: &E2eCluster) -> Api {
    let text = std::fs::read_to_string(c.kubeconfig()).expect("kubeconfig");
    let cfg: serde_json::Value = serde_saphyr::from_str(&text).expect("the kubeconfig parses");
    let admin = k8slite_pki::CertAndKey {
        cert_pem: kubeconfig_field(&cfg, "/users/0/user/client-certificate-data"),
        key_pem: kubeconfig_field(&cfg, "/users/0/user/client-key-data"),
    };
    let ca = kubeconfig_field(&cfg, "/clusters/0/cluster/certificate-authority-data");
    let tls = k8slite_pki::client_tls_config(&ca, Some(&admin)).expect("client TLS config");
    let addr = c
        .server_url()
        .trim_start_matches("https://")
        .parse()
        .expect("server address");
    Api { addr, tls }
}

/// Open a WebSocket on `path` offering `protocols`: the socket and the chosen subprotocol, or
/// the refusal's HTTP code and body.
async fn open(
    api: &Api,
    path: &str,
    protocols: &[&str],
) -> Result<(Ws, Option<String>), (u16, String)> {
    let tcp = TcpStream::connect(api.addr).await.expect("connect");
    let conn = tokio_rustls::TlsConnector::from(api.tls.clone())
        .connect(
            rustls::pki_types::ServerName::IpAddress(api.addr.ip().into()),
            tcp,
        )
        .await
        .expect("TLS to the API server");
    let url = format!("wss://{}{path}", api.addr);
    let mut req = ClientRequestBuilder::new(url.parse().expect("url"));
    for p in protocols {
        req = req.with_sub_protocol(*p);
    }
    match tokio_tungstenite::client_async(req, conn).await {
        Ok((ws, resp)) => {
            let chosen = resp
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            Ok((ws, chosen))
        }
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((resp.status().as_u16(), body))
        }
        Err(e) => panic!("WebSocket to {path}: {e}"),
    }
}

/// A channel message, binary or base64 (text: the channel digit, then base64).
fn frame(channel: u8, data: &[u8], base64: bool, text: bool) -> Message {
    if base64 {
        let mut s = char::from(b'0' + channel).to_string();
        STANDARD.encode_string(data, &mut s);
        return Message::Text(s.into());
    }
    let mut b = vec![channel];
    b.extend_from_slice(data);
    if text {
        Message::Text(String::from_utf8(b).expect("text data").into())
    } else {
        Message::Binary(b.into())
    }
}

/// Every message until the server closes (or `limit`): per channel, the bytes in order, and
/// how many messages each channel got.
async fn drain(ws: &mut Ws, base64: bool, limit: Duration) -> BTreeMap<u8, (Vec<u8>, usize)> {
    let mut got: BTreeMap<u8, (Vec<u8>, usize)> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let m = match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(_) => break,
            Err(_) => panic!("the session did not end within {limit:?}; so far {got:?}"),
        };
        let (channel, data) = match m {
            Message::Binary(b) if !b.is_empty() => (b[0], b[1..].to_vec()),
            Message::Text(t) if base64 && !t.is_empty() => {
                let t = t.as_str();
                let channel = t.as_bytes()[0] - b'0';
                (
                    channel,
                    STANDARD.decode(&t[1..]).expect("base64 from the server"),
                )
            }
            Message::Close(_) => break,
            _ => continue,
        };
        let e = got.entry(channel).or_default();
        e.0.extend_from_slice(&data);
        e.1 += 1;
    }
    got
}

fn text(got: &BTreeMap<u8, (Vec<u8>, usize)>, channel: u8) -> String {
    got.get(&channel)
        .map(|(b, _)| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

fn exec_path(pod: &str, script: &str, tty: bool) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for c in ["sh", "-c", script] {
        q.append_pair("command", c);
    }
    q.append_pair("stdin", "true");
    q.append_pair("stdout", "true");
    q.append_pair("stderr", if tty { "false" } else { "true" });
    q.append_pair("tty", if tty { "true" } else { "false" });
    format!("/api/v1/namespaces/default/pods/{pod}/exec?{}", q.finish())
}

async fn exec_cases(api: &Api) {
    let script = "read l; echo got:$l";
    for proto in ["v5.channel.k8s.io", "v4.channel.k8s.io"] {
        for text_frames in [true, false] {
            for tty in [false, true] {
                let case = format!("{proto} text={text_frames} tty={tty}");
                let (mut ws, chosen) = open(api, &exec_path("web", script, tty), &[proto])
                    .await
                    .unwrap_or_else(|e| panic!("{case}: refused {e:?}"));
                assert_eq!(chosen.as_deref(), Some(proto), "{case}");
                ws.send(frame(0, b"echo test string 1\n", false, text_frames))
                    .await
                    .expect("send stdin");
                let got = drain(&mut ws, false, Duration::from_secs(30)).await;
                assert!(
                    text(&got, 1).contains("got:echo test string 1"),
                    "{case}: stdout {got:?}"
                );
                assert!(text(&got, 3).contains("Success"), "{case}: status {got:?}");
            }
        }
    }
    // v5: closing stdin (channel 255) ends a reader, which then answers.
    let (mut ws, _) = open(
        api,
        &exec_path("web", "wc -c", false),
        &["v5.channel.k8s.io"],
    )
    .await
    .expect("v5 exec");
    ws.send(frame(0, b"abc\n", false, true))
        .await
        .expect("stdin");
    ws.send(Message::Binary(vec![255, 0].into()))
        .await
        .expect("close stdin");
    let got = drain(&mut ws, false, Duration::from_secs(30)).await;
    assert_eq!(text(&got, 1).trim(), "4", "{got:?}");
    // The base64 variants: text messages both ways.
    for proto in ["v5.base64.channel.k8s.io", "v4.base64.channel.k8s.io"] {
        let (mut ws, chosen) = open(api, &exec_path("web", script, false), &[proto])
            .await
            .unwrap_or_else(|e| panic!("{proto}: refused {e:?}"));
        assert_eq!(chosen.as_deref(), Some(proto));
        ws.send(frame(0, b"echo test string 1\n", true, true))
            .await
            .expect("send stdin");
        let got = drain(&mut ws, true, Duration::from_secs(30)).await;
        assert!(
            text(&got, 1).contains("got:echo test string 1"),
            "{proto}: {got:?}"
        );
        assert!(text(&got, 3).contains("Success"), "{proto}: {got:?}");
    }
}

async fn attach_case(api: &Api) {
    let path = "/api/v1/namespaces/default/pods/att/attach?container=att&stdin=true&stdout=true&stderr=true";
    let (mut ws, chosen) = open(api, path, &["v5.channel.k8s.io", "v4.channel.k8s.io"])
        .await
        .expect("attach");
    assert_eq!(chosen.as_deref(), Some("v5.channel.k8s.io"));
    ws.send(frame(0, b"hello\n", false, true))
        .await
        .expect("stdin");
    let mut out = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !out.contains("at:hello") {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) if b.first() == Some(&1) => {
                out.push_str(&String::from_utf8_lossy(&b[1..]));
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("attach ended before the echo ({out:?}): {other:?}"),
        }
    }
    let _ = ws.close(None).await;
}

/// Port-forward `ports` over `protocols`; returns per channel what arrived.
async fn forward(
    api: &Api,
    ports: &[u16],
    protocols: &[&str],
    base64: bool,
) -> (Option<String>, BTreeMap<u8, (Vec<u8>, usize)>, Vec<Vec<u8>>) {
    let q: Vec<String> = ports.iter().map(|p| format!("ports={p}")).collect();
    let path = format!(
        "/api/v1/namespaces/default/pods/web/portforward?{}",
        q.join("&")
    );
    let (mut ws, chosen) = open(api, &path, protocols)
        .await
        .unwrap_or_else(|e| panic!("port-forward {protocols:?} refused: {e:?}"));
    // Each channel opens with its port; read them all before sending.
    let mut firsts: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while firsts.len() < ports.len() * 2 {
        let m = match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(m))) => m,
            other => panic!("port-forward {protocols:?}: no port prefixes ({firsts:?}): {other:?}"),
        };
        let (ch, data) = match m {
            Message::Binary(b) if !b.is_empty() => (b[0], b[1..].to_vec()),
            Message::Text(t) if base64 => (
                t.as_bytes()[0] - b'0',
                STANDARD.decode(&t.as_str()[1..]).expect("base64"),
            ),
            _ => continue,
        };
        firsts.entry(ch).or_insert(data);
    }
    for i in 0..ports.len() {
        let ch = u8::try_from(i * 2).expect("channel");
        ws.send(frame(ch, b"GET / HTTP/1.0\r\n\r\n", base64, false))
            .await
            .expect("request");
    }
    let got = drain(&mut ws, base64, Duration::from_secs(30)).await;
    (chosen, got, firsts.into_values().collect())
}

async fn port_forward_cases(api: &Api) {
    // Two ports at once, binary.
    let (chosen, got, firsts) = forward(api, &[80, 8081], &["v4.channel.k8s.io"], false).await;
    assert_eq!(chosen.as_deref(), Some("v4.channel.k8s.io"));
    assert_eq!(
        firsts,
        [vec![80, 0], vec![80, 0], vec![0x91, 0x1f], vec![0x91, 0x1f]],
        "each channel starts with its port, little-endian"
    );
    for ch in [0u8, 2] {
        assert!(
            text(&got, ch).contains("<h1>Welcome to nginx!</h1>"),
            "data channel {ch}: {got:?}"
        );
    }
    // base64, as the JavaScript client can ask.
    for proto in ["v4.base64.channel.k8s.io", "base64.channel.k8s.io"] {
        let (chosen, got, firsts) = forward(api, &[80], &[proto], true).await;
        assert_eq!(chosen.as_deref(), Some(proto));
        assert_eq!(firsts, [vec![80, 0], vec![80, 0]], "{proto}");
        assert!(
            text(&got, 0).contains("Welcome to nginx!"),
            "{proto}: {got:?}"
        );
    }
    // portforward.k8s.io, and no subprotocol at all (none is echoed back).
    let (chosen, got, _) = forward(api, &[80], &["portforward.k8s.io"], false).await;
    assert_eq!(chosen.as_deref(), Some("portforward.k8s.io"));
    assert!(text(&got, 0).contains("Welcome to nginx!"), "{got:?}");
    let (chosen, got, _) = forward(api, &[80], &[], false).await;
    assert_eq!(chosen, None);
    assert!(text(&got, 0).contains("Welcome to nginx!"), "{got:?}");
    // A protocol nobody speaks: 400 naming the supported ones.
    let path = "/api/v1/namespaces/default/pods/web/portforward?ports=80";
    match open(api, path, &["v9.nothing.k8s.io"]).await {
        Err((400, body)) => assert!(body.contains("v4.channel.k8s.io"), "{body}"),
        other => panic!("unknown protocol: {:?}", other.map(|(_, p)| p)),
    }
}

async fn exited_container_case(api: &Api) {
    let path = "/api/v1/namespaces/default/pods/two/exec?container=done&command=true&stdout=true";
    match open(api, path, &["v5.channel.k8s.io"]).await {
        Err((code, body)) => {
            assert_eq!(code, 400, "{body}");
            let st: serde_json::Value = serde_json::from_str(&body).expect("a Status body");
            assert_eq!(st["reason"], "BadRequest", "{body}");
            assert_eq!(st["code"], 400, "{body}");
            assert!(
                st["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("\"done\"") && m.contains("is not running")),
                "{body}"
            );
        }
        Ok((_, p)) => panic!("exec into an exited container was accepted ({p:?})"),
    }
}

#[test]
fn websocket_clients_exec_attach_port_forward() {
    let c = E2eCluster::start(0);
    c.k(&["run", "web", "--image", "nginx", "--port", "80"]);
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: att\nspec:\n  containers:\n  - name: att\n    image: busybox\n    stdin: true\n    command: [\"sh\", \"-c\", \"while read l; do echo at:$l; done\"]\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata:\n  name: two\nspec:\n  restartPolicy: Never\n  containers:\n  - name: up\n    image: busybox\n    command: [\"sleep\", \"3600\"]\n  - name: done\n    image: busybox\n    command: [\"true\"]\n",
    );
    c.wait_pod_ready("web");
    c.wait_pod_ready("att");
    // A second web server in the same pod, for a two-port forward.
    c.k(&[
        "exec",
        "web",
        "--",
        "httpd",
        "-p",
        "8081",
        "-h",
        "/usr/share/nginx/html",
    ]);
    c.wait_for("container done of pod two exited", WAIT, || {
        c.container_status("two", "done")["state"]
            .get("terminated")
            .map(|_| ())
    });
    let api = api(&c);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        exec_cases(&api).await;
        attach_case(&api).await;
        port_forward_cases(&api).await;
        exited_container_case(&api).await;
    });
}
