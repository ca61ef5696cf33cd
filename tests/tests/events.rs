//! Events as controllers record them (kube-runtime's `Recorder`, events.k8s.io/v1, repeats
//! aggregated into a series) read back the way users read them: `kubectl get events`,
//! `kubectl describe`, the core/v1 Event view.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent};
use k8slite_tests::Server;
use kube::Resource;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_events_aggregate_and_show_in_kubectl() {
    let s = Server::start();
    let kc = kube::config::Kubeconfig::read_from(s.kubeconfig()).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(cfg).expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut c = ConfigMap::default();
    c.metadata.name = Some("subject".into());
    c.data = Some(BTreeMap::from([("k".to_string(), "v".to_string())]));
    let cm = cms
        .create(&PostParams::default(), &c)
        .await
        .expect("create");

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "test-controller".into(),
            instance: None,
        },
    );
    let reference = cm.object_ref(&());
    let ev = Event {
        type_: EventType::Warning,
        reason: "SomethingFailed".into(),
        note: Some("0/3 nodes are available: 3 Insufficient cpu.".into()),
        action: "Testing".into(),
        secondary: None,
    };
    for _ in 0..3 {
        recorder.publish(&ev, &reference).await.expect("publish");
    }

    // One object for the three repeats, with the series count, in the core view too.
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let list = core
        .list(&ListParams::default().fields("involvedObject.name=subject"))
        .await
        .expect("list core events");
    assert_eq!(list.items.len(), 1, "repeats aggregated: {:?}", list.items);
    let e = &list.items[0];
    assert_eq!(e.reason.as_deref(), Some("SomethingFailed"));
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert_eq!(e.involved_object.kind.as_deref(), Some("ConfigMap"));
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(Some(3)));
    assert_eq!(e.reporting_component.as_deref(), Some("test-controller"));
    // The core view derives the legacy fields kubectl sorts and shows by.
    assert_eq!(e.count, Some(3), "{e:?}");
    assert!(
        e.first_timestamp.is_some() && e.last_timestamp.is_some(),
        "{e:?}"
    );
    let sorted = s.k(&["get", "events", "--sort-by=.lastTimestamp"]);
    assert!(
        sorted.contains("SomethingFailed"),
        "kubectl get events --sort-by=.lastTimestamp:\n{sorted}"
    );

    let out = s.k(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=subject",
    ]);
    assert!(
        out.contains("SomethingFailed")
            && out.contains("configmap/subject")
            && out.contains("0/3 nodes are available: 3 Insufficient cpu."),
        "kubectl get events:\n{out}"
    );
    let out = s.k(&["describe", "configmap", "subject"]);
    assert!(
        out.contains("Warning  SomethingFailed")
            && out.contains("test-controller")
            && out.contains("0/3 nodes are available: 3 Insufficient cpu."),
        "kubectl describe:\n{out}"
    );
}
