//! E2E (issue 4): images come from the airgap images directory. A tarball dropped there while
//! the agent runs becomes usable; `imagePullPolicy: Always` for a locally present image runs
//! although no registry is reachable (the node netns has no route out).

use k8slite_tests::e2e::{E2eCluster, images};

#[test]
fn image_dropped_into_the_images_dir_becomes_usable() {
    let c = E2eCluster::start(0);
    let tag = format!("docker.io/library/dropped:{}", c.prefix());
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("dropped.tar");
    images::retag_archive(&images::test_images().join("busybox.tar"), &src, &tag)
        .expect("retag busybox");
    c.drop_image("server", &src, "dropped.tar");
    let node = c.node_name("server");
    c.wait_for(
        "the node to list the dropped image",
        std::time::Duration::from_secs(60),
        || {
            c.field(&["get", "node", &node], "{.status.images[*].names}")
                .contains(&tag)
                .then_some(())
        },
    );
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: dropped}}
spec:
  restartPolicy: Never
  containers:
  - {{name: c, image: "{tag}", imagePullPolicy: IfNotPresent, command: ["echo", "dropped-ok"]}}
"#
    ));
    c.wait_pod_phase("dropped", "Succeeded");
    assert_eq!(c.k(&["logs", "dropped"]), "dropped-ok\n");
}

#[test]
fn pull_policy_always_runs_the_local_image_offline() {
    let c = E2eCluster::start(0);
    // No registry is reachable from the node: its only route is the test bridge, which has
    // no way out.
    assert!(
        c.fetch_in("server", "http://registry-1.docker.io/v2/")
            .is_none(),
        "the node netns unexpectedly reaches a registry; the test would not prove the fallback"
    );
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: always}
spec:
  restartPolicy: Never
  containers:
  - {name: c, image: busybox, imagePullPolicy: Always, command: ["echo", "offline-ok"]}
"#,
    );
    c.wait_pod_phase("always", "Succeeded");
    assert_eq!(c.k(&["logs", "always"]), "offline-ok\n");
    // The agent records that it used the local image because the pull failed.
    let msgs = c.pod_event_messages("always");
    assert!(
        msgs.iter()
            .any(|m| m.contains("busybox") && m.to_lowercase().contains("local")),
        "no event about the offline fallback: {msgs:?}"
    );
}
