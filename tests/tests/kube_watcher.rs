//! kube-rs: a `kube_runtime::watcher` keeps an exact mirror of a resource across a compaction
//! (it gets 410, re-lists, and sees every change once, in order).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8slite_tests::Server;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_mirror_survives_compaction() {
    let s = Server::start_with(&["--compact-interval=1", "--compact-retention=5"]);
    let kc = kube::config::Kubeconfig::read_from(s.kubeconfig()).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(cfg).expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let mut c = ConfigMap::default();
    c.metadata.name = Some("counter".into());
    c.data = Some(BTreeMap::from([("n".to_string(), "0".to_string())]));
    cms.create(&PostParams::default(), &c)
        .await
        .expect("create counter");

    let mirror: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let seen: Arc<Mutex<Vec<u32>>> = Arc::default();
    let inits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (m2, s2, i2) = (mirror.clone(), seen.clone(), inits.clone());
    // Short server-side timeouts: the watcher reconnects from its last resourceVersion often.
    let stream = watcher::watcher(cms.clone(), watcher::Config::default().timeout(1));
    let task = tokio::spawn(async move {
        let mut stream = stream.boxed();
        let mut staging: Option<BTreeMap<String, String>> = None;
        while let Some(ev) = stream.next().await {
            let Ok(ev) = ev else { continue };
            let note = |cm: &ConfigMap| {
                if cm.metadata.name.as_deref() == Some("counter")
                    && let Some(n) = cm
                        .data
                        .as_ref()
                        .and_then(|d| d.get("n"))
                        .and_then(|n| n.parse::<u32>().ok())
                {
                    let mut v = s2.lock().expect("seen");
                    if v.last() != Some(&n) {
                        v.push(n);
                    }
                }
            };
            match ev {
                Event::Init => {
                    i2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    staging = Some(BTreeMap::new());
                }
                Event::InitApply(cm) => {
                    note(&cm);
                    if let Some(st) = staging.as_mut() {
                        st.insert(
                            cm.metadata.name.clone().unwrap_or_default(),
                            cm.metadata.resource_version.clone().unwrap_or_default(),
                        );
                    }
                }
                Event::InitDone => {
                    if let Some(st) = staging.take() {
                        *m2.lock().expect("mirror") = st;
                    }
                }
                Event::Apply(cm) => {
                    note(&cm);
                    m2.lock().expect("mirror").insert(
                        cm.metadata.name.clone().unwrap_or_default(),
                        cm.metadata.resource_version.clone().unwrap_or_default(),
                    );
                }
                Event::Delete(cm) => {
                    m2.lock()
                        .expect("mirror")
                        .remove(&cm.metadata.name.clone().unwrap_or_default());
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 1..=20u32 {
        let p = serde_json::json!({"data": {"n": i.to_string()}});
        cms.patch("counter", &PatchParams::default(), &Patch::Merge(&p))
            .await
            .expect("patch counter");
        if i % 5 == 0 {
            // Advance the global revision past the retention window with writes elsewhere,
            // then let compaction run while the watcher reconnects.
            for j in 0..12 {
                let mut sec = Secret::default();
                sec.metadata.name = Some(format!("filler-{i}-{j}"));
                secrets
                    .create(&PostParams::default(), &sec)
                    .await
                    .expect("filler");
            }
            tokio::time::sleep(Duration::from_millis(2500)).await;
        }
        if i % 7 == 0 {
            let mut extra = ConfigMap::default();
            extra.metadata.name = Some(format!("extra-{i}"));
            cms.create(&PostParams::default(), &extra)
                .await
                .expect("extra");
        }
        if i == 15 {
            cms.delete("extra-7", &Default::default())
                .await
                .expect("delete extra-7");
        }
    }
    // The mirror converges to exactly what the server lists.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let list = cms.list(&ListParams::default()).await.expect("list");
        let truth: BTreeMap<String, String> = list
            .items
            .iter()
            .map(|cm| {
                (
                    cm.metadata.name.clone().unwrap_or_default(),
                    cm.metadata.resource_version.clone().unwrap_or_default(),
                )
            })
            .collect();
        if *mirror.lock().expect("mirror") == truth {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mirror {:?} != server {:?}",
            mirror.lock().expect("mirror"),
            truth
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    task.abort();
    let seen = seen.lock().expect("seen").clone();
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "counter values out of order or repeated: {seen:?}"
    );
    assert_eq!(seen.last(), Some(&20), "{seen:?}");
    assert!(
        inits.load(std::sync::atomic::Ordering::Relaxed) >= 2,
        "the watcher never had to re-list (no 410 seen); log:\n{}",
        k8slite_tests::tail(&s.log(), 40)
    );
}
