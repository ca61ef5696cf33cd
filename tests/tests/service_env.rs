//! Service environment variables in containers: a simulated node's pod worker (the agent
//! library in-process over a `FakeRuntime`) reads the Services from the real server with the
//! agent's API client; the environment the runtime was asked to create the container with has
//! `KUBERNETES_SERVICE_HOST` and friends always, the namespace's Services' variables unless
//! `enableServiceLinks: false`, and explicit `env` entries win.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8slite_agent::pods::{KubeObjects, PodConfig, RecordingPodApi, Worker};
use k8slite_runtime::FakeRuntime;
use k8slite_tests::Server;
use kube::api::Api;

const SERVICES: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: apps}
---
apiVersion: v1
kind: Service
metadata: {name: web-api, namespace: apps}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 8080, targetPort: 80}
  - {name: metrics, port: 9100, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: apps}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: elsewhere, namespace: default}
spec:
  ports: [{port: 80}]
";

fn pod_yaml(name: &str, links: bool) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n  nodeName: sim\n  enableServiceLinks: {links}\n  containers:\n  - name: c\n    image: busybox\n    env:\n    - {{name: API, value: \"$(KUBERNETES_SERVICE_HOST):$(WEB_API_SERVICE_PORT_HTTP)\"}}\n    - {{name: WEB_API_SERVICE_HOST, value: mine}}\n"
    )
}

/// Run `pod` on an in-process simulated node until its container exists; its environment.
async fn container_env(client: &kube::Client, name: &str) -> BTreeMap<String, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "apps");
    let pod = pods.get(name).await.expect("pod from the server");
    let rt = FakeRuntime::recording();
    let cfg = PodConfig {
        runtime_scheme: "fake".into(),
        ..PodConfig::default()
    };
    let mut worker = Worker::new(
        Arc::new(rt.clone()),
        Arc::new(RecordingPodApi::default()),
        Arc::new(cfg),
        "10.0.0.1".into(),
    )
    .with_objects(Arc::new(KubeObjects::new(client.clone())));
    for _ in 0..50 {
        worker.sync(&pod).await;
        if let Some(id) = rt.find_container("apps", name, "c") {
            let env = rt.container_env(&id).expect("container env");
            let map: BTreeMap<String, String> = env.iter().cloned().collect();
            assert_eq!(map.len(), env.len(), "duplicate names in {env:?}");
            return map;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the worker never created container c of {name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_get_the_service_variables_of_their_namespace() {
    let s = Server::start();
    s.k_stdin(&["apply", "-f", "-"], Some(SERVICES));
    s.k_stdin(&["create", "-f", "-"], Some(&pod_yaml("linked", true)));
    s.k_stdin(&["create", "-f", "-"], Some(&pod_yaml("unlinked", false)));
    let ip = |ns: &str, name: &str| {
        s.k(&[
            "get",
            "svc",
            "-n",
            ns,
            name,
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
    };
    let (kubernetes, web) = (ip("default", "kubernetes"), ip("apps", "web-api"));
    assert!(!kubernetes.is_empty() && !web.is_empty());

    let kc = kube::config::Kubeconfig::read_from(s.kubeconfig()).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(cfg).expect("client");

    let env = container_env(&client, "linked").await;
    let want = [
        ("KUBERNETES_SERVICE_HOST", kubernetes.as_str()),
        ("KUBERNETES_SERVICE_PORT", "443"),
        ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
        ("KUBERNETES_PORT", &format!("tcp://{kubernetes}:443")),
        (
            "KUBERNETES_PORT_443_TCP",
            &format!("tcp://{kubernetes}:443"),
        ),
        ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
        ("KUBERNETES_PORT_443_TCP_PORT", "443"),
        ("KUBERNETES_PORT_443_TCP_ADDR", kubernetes.as_str()),
        ("WEB_API_SERVICE_PORT", "8080"),
        ("WEB_API_SERVICE_PORT_HTTP", "8080"),
        ("WEB_API_SERVICE_PORT_METRICS", "9100"),
        ("WEB_API_PORT", &format!("tcp://{web}:8080")),
        ("WEB_API_PORT_8080_TCP", &format!("tcp://{web}:8080")),
        ("WEB_API_PORT_8080_TCP_ADDR", web.as_str()),
        ("WEB_API_PORT_9100_UDP", &format!("udp://{web}:9100")),
        ("WEB_API_PORT_9100_UDP_PROTO", "udp"),
        // explicit env wins; $(VAR) expands Service variables
        ("WEB_API_SERVICE_HOST", "mine"),
        ("API", &format!("{kubernetes}:8080")),
    ];
    for (k, v) in want {
        assert_eq!(env.get(k).map(String::as_str), Some(v), "{k} in {env:#?}");
    }
    for absent in ["HEADLESS_SERVICE_HOST", "ELSEWHERE_SERVICE_HOST"] {
        assert!(!env.contains_key(absent), "{absent} in {env:#?}");
    }

    let env = container_env(&client, "unlinked").await;
    assert_eq!(
        env.get("KUBERNETES_SERVICE_HOST"),
        Some(&kubernetes),
        "{env:#?}"
    );
    assert_eq!(
        env.get("KUBERNETES_PORT_443_TCP_ADDR"),
        Some(&kubernetes),
        "{env:#?}"
    );
    let links: Vec<&String> = env.keys().filter(|k| k.starts_with("WEB_API_")).collect();
    assert_eq!(
        links,
        ["WEB_API_SERVICE_HOST"],
        "only the explicit one: {env:#?}"
    );
    // without links `$(WEB_API_SERVICE_PORT_HTTP)` stays as written, as upstream
    assert_eq!(
        env["API"],
        format!("{kubernetes}:$(WEB_API_SERVICE_PORT_HTTP)")
    );
}
