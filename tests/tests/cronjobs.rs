//! CronJob controller against the real binary and kubectl, on one real schedule
//! (`*/1 * * * *`, so this test takes up to about two minutes): a Job named
//! `<cronjob>-<minutes since the epoch>` with the scheduled-timestamp annotation appears at the
//! minute, the CronJob's status follows it, and with `successfulJobsHistoryLimit: 0` the finished
//! Job is trimmed. Schedule arithmetic itself is unit-tested in pkg/controllers (pure functions
//! over "now").
//!
//! The Job's pod runs on a simulated node (`Cluster`: a fake-runtime agent) and exits 0.

use std::time::Duration;

use k8slite_tests::cluster::Cluster;
use k8slite_tests::eventually;
use k8slite_tests::objects::json;

const CJ: &str = r#"
apiVersion: batch/v1
kind: CronJob
metadata:
  name: hello
spec:
  schedule: "*/1 * * * *"
  successfulJobsHistoryLimit: 0
  jobTemplate:
    metadata:
      labels:
        app: hello
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: hello
            image: busybox
            command: ["sh", "-c", "sleep 1; exit 0"]
"#;

#[test]
fn cronjob_creates_jobs_on_schedule_and_trims_history() {
    let c = Cluster::start(1);
    let s = &c.server;
    s.k_stdin(&["apply", "-f", "-"], Some(CJ));
    // The first minute boundary after creation: at most ~60 s away.
    let job = eventually(Duration::from_secs(90), || {
        let v = json(s, &["get", "jobs", "-l", "app=hello", "-o", "json"]);
        v["items"].as_array()?.first().cloned()
    })
    .unwrap_or_else(|| {
        panic!(
            "no job within 90 s; log:\n{}",
            k8slite_tests::tail(&s.log(), 40)
        )
    });
    let name = job["metadata"]["name"].as_str().expect("name").to_string();
    let stamp = job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        .as_str()
        .expect("scheduled-timestamp annotation")
        .to_string();
    let t: k8s_openapi::jiff::Timestamp = stamp.parse().expect("RFC 3339 timestamp");
    assert_eq!(t.as_second() % 60, 0, "scheduled on the minute: {stamp}");
    assert_eq!(name, format!("hello-{}", t.as_second() / 60));
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");

    let cj = eventually(Duration::from_secs(20), || {
        let v = json(s, &["get", "cronjob", "hello", "-o", "json"]);
        (v["status"]["active"][0]["name"] == name.as_str()).then_some(v)
    })
    .expect("status.active names the job");
    let last: k8s_openapi::jiff::Timestamp = cj["status"]["lastScheduleTime"]
        .as_str()
        .expect("lastScheduleTime")
        .parse()
        .expect("time");
    assert_eq!(last, t);

    // The pod exits 0: the Job completes, the CronJob sees it and trims it (limit 0).
    let gone = eventually(Duration::from_secs(30), || {
        s.k(&["get", "job", &name, "--ignore-not-found", "-o", "name"])
            .trim()
            .is_empty()
            .then_some(())
    });
    assert!(
        gone.is_some(),
        "completed job not trimmed; log:\n{}",
        k8slite_tests::tail(&s.log(), 40)
    );
    let cj = eventually(Duration::from_secs(20), || {
        let v = json(s, &["get", "cronjob", "hello", "-o", "json"]);
        (v["status"]["lastSuccessfulTime"].is_string() && v["status"]["active"].is_null())
            .then_some(v)
    });
    assert!(cj.is_some(), "lastSuccessfulTime set and active emptied");
    let events = json(s, &["get", "events.v1.events.k8s.io", "-o", "json"]);
    let got: Vec<(String, String)> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["name"] == "hello")
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or_default().to_string(),
                e["note"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for (reason, note) in [
        ("SuccessfulCreate", format!("Created job {name}")),
        (
            "SawCompletedJob",
            format!("Saw completed job: {name}, condition: Complete"),
        ),
        ("SuccessfulDelete", format!("Deleted job {name}")),
    ] {
        assert!(
            got.iter().any(|(r, n)| r == reason && *n == note),
            "{reason} {note:?} in {got:?}"
        );
    }
}
