//! Job and TTL-after-finished controllers against the real binary and kubectl: completions with
//! parallelism → Complete, backoffLimit → Failed, Indexed completion mode, suspend, and
//! deletion after `ttlSecondsAfterFinished`.
//!
//! The pods run on simulated nodes (`Cluster`: fake-runtime agents): `sh -c 'sleep 1; exit 0'`
//! succeeds after a second, `exit 1` fails.

use std::time::Duration;

use k8slite_tests::cluster::Cluster;
use k8slite_tests::objects::json;
use k8slite_tests::{Server, eventually};
use serde_json::Value;

fn job_yaml(name: &str, extra_spec: &str, script: &str) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
{extra_spec}
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox
        command: ["sh", "-c", "{script}"]
"#
    )
}

/// Pods of the Job that are neither terminal nor being deleted.
fn active_pods(s: &Server, job: &str) -> Vec<Value> {
    let v = json(
        s,
        &[
            "get",
            "pods",
            "-l",
            &format!("batch.kubernetes.io/job-name={job}"),
            "-o",
            "json",
        ],
    );
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["metadata"]["deletionTimestamp"].is_null()
                && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
        })
        .cloned()
        .collect()
}

fn all_pods(s: &Server, job: &str) -> Vec<Value> {
    let v = json(
        s,
        &[
            "get",
            "pods",
            "-l",
            &format!("batch.kubernetes.io/job-name={job}"),
            "-o",
            "json",
        ],
    );
    v["items"].as_array().cloned().unwrap_or_default()
}

fn condition(job: &Value, type_: &str) -> Option<Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
        .cloned()
}

fn events_for(s: &Server, name: &str) -> Vec<(String, String)> {
    let v = json(s, &["get", "events.v1.events.k8s.io", "-o", "json"]);
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["name"] == name)
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or_default().to_string(),
                e["note"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn job_completions_with_parallelism_completes() {
    let c = Cluster::start(2);
    let s = &c.server;
    s.k_stdin(
        &["apply", "-f", "-"],
        Some(&job_yaml(
            "pi",
            "  completions: 5\n  parallelism: 2",
            "sleep 2; exit 0",
        )),
    );
    // Never more than 2 pods at once; 2 are seen at once; it completes.
    let mut max_active = 0;
    let job = eventually(Duration::from_secs(120), || {
        let active = active_pods(s, "pi");
        max_active = max_active.max(active.len());
        assert!(
            active.len() <= 2,
            "parallelism 2 exceeded: {}",
            active.len()
        );
        if let Some(p) = active.first()
            && p["metadata"]["deletionTimestamp"].is_null()
        {
            for l in [
                "batch.kubernetes.io/controller-uid",
                "batch.kubernetes.io/job-name",
                "controller-uid",
                "job-name",
            ] {
                assert!(p["metadata"]["labels"][l].is_string(), "label {l}: {p}");
            }
        }
        let j = json(s, &["get", "job", "pi", "-o", "json"]);
        condition(&j, "Complete").is_some().then_some(j)
    })
    .unwrap_or_else(|| {
        panic!(
            "no Complete condition: {}; log:\n{}",
            json(s, &["get", "job", "pi", "-o", "json"])["status"],
            k8slite_tests::tail(&s.log(), 40)
        )
    });
    assert_eq!(max_active, 2, "two pods ran at once");
    assert_eq!(job["status"]["succeeded"], 5, "{}", job["status"]);
    assert!(job["status"]["completionTime"].is_string());
    assert!(condition(&job, "SuccessCriteriaMet").is_some());
    assert_eq!(
        condition(&job, "Complete").expect("complete")["reason"],
        "CompletionsReached"
    );
    // Every pod ran on a node, was counted and released.
    let pods = all_pods(s, "pi");
    assert_eq!(pods.len(), 5);
    for p in &pods {
        assert_eq!(p["status"]["phase"], "Succeeded", "{p}");
        assert!(p["spec"]["nodeName"].is_string());
        assert!(
            p["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty()),
            "tracking finalizer removed: {p}"
        );
    }
    let evs = events_for(s, "pi");
    assert!(
        evs.iter()
            .any(|(r, n)| r == "Completed" && n == "Job completed"),
        "{evs:?}"
    );
    assert_eq!(
        evs.iter().filter(|(r, _)| r == "SuccessfulCreate").count(),
        5,
        "{evs:?}"
    );
    let out = s.k(&["get", "jobs"]);
    assert!(out.contains("5/5"), "{out}");
}

#[test]
fn failing_job_hits_backoff_limit() {
    let c = Cluster::start(1);
    let s = &c.server;
    s.k_stdin(
        &["apply", "-f", "-"],
        Some(&job_yaml("fail", "  backoffLimit: 1", "exit 1")),
    );
    // Two failures exceed backoffLimit 1 (the second pod comes after a 10 s back-off).
    let job = eventually(Duration::from_secs(90), || {
        let j = json(s, &["get", "job", "fail", "-o", "json"]);
        condition(&j, "Failed").is_some().then_some(j)
    })
    .unwrap_or_else(|| {
        panic!(
            "no Failed condition: {}; log:\n{}",
            json(s, &["get", "job", "fail", "-o", "json"])["status"],
            k8slite_tests::tail(&s.log(), 40)
        )
    });
    let c = condition(&job, "Failed").expect("failed");
    assert_eq!(c["reason"], "BackoffLimitExceeded");
    assert_eq!(c["message"], "Job has reached the specified backoff limit");
    assert!(condition(&job, "FailureTarget").is_some());
    assert_eq!(job["status"]["failed"], 2);
    assert_eq!(all_pods(s, "fail").len(), 2);
    assert!(active_pods(s, "fail").is_empty());
    let evs = events_for(s, "fail");
    assert!(
        evs.iter().any(|(r, _)| r == "BackoffLimitExceeded"),
        "{evs:?}"
    );
}

#[test]
fn indexed_job_gets_indexes_and_ttl_deletes_it() {
    let c = Cluster::start(1);
    let s = &c.server;
    s.k_stdin(
        &["apply", "-f", "-"],
        Some(&job_yaml(
            "idx",
            "  completions: 3\n  parallelism: 3\n  completionMode: Indexed\n  ttlSecondsAfterFinished: 5",
            "sleep 1; exit 0",
        )),
    );
    let pods = eventually(Duration::from_secs(30), || {
        let a = all_pods(s, "idx");
        (a.len() == 3).then_some(a)
    })
    .expect("three pods");
    let mut indexes: Vec<String> = pods
        .iter()
        .map(|p| {
            let a = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
                .as_str()
                .expect("index annotation")
                .to_string();
            assert_eq!(
                p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"],
                a.as_str()
            );
            assert_eq!(p["spec"]["hostname"], format!("idx-{a}").as_str());
            assert!(
                p["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(&format!("idx-{a}-"))),
                "{}",
                p["metadata"]["name"]
            );
            a
        })
        .collect();
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"]);
    let job = eventually(Duration::from_secs(60), || {
        let j = json(
            s,
            &["get", "job", "idx", "-o", "json", "--ignore-not-found"],
        );
        condition(&j, "Complete").is_some().then_some(j)
    })
    .expect("Complete condition");
    assert_eq!(job["status"]["completedIndexes"], "0-2");
    assert_eq!(job["status"]["succeeded"], 3);
    // TTL: gone about 5 s after it finished.
    let gone = eventually(Duration::from_secs(30), || {
        s.k(&["get", "job", "idx", "--ignore-not-found", "-o", "name"])
            .trim()
            .is_empty()
            .then_some(())
    });
    assert!(gone.is_some(), "job still there after its TTL");
}

#[test]
fn suspended_job_runs_nothing_until_resumed() {
    let c = Cluster::start(1);
    let s = &c.server;
    s.k_stdin(
        &["apply", "-f", "-"],
        Some(&job_yaml(
            "later",
            "  suspend: true\n  completions: 1",
            "sleep 1; exit 0",
        )),
    );
    let job = eventually(Duration::from_secs(20), || {
        let j = json(s, &["get", "job", "later", "-o", "json"]);
        condition(&j, "Suspended").is_some().then_some(j)
    })
    .expect("Suspended condition");
    assert_eq!(
        condition(&job, "Suspended").expect("c")["reason"],
        "JobSuspended"
    );
    assert!(all_pods(s, "later").is_empty());
    s.k(&[
        "patch",
        "job",
        "later",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ]);
    let done = eventually(Duration::from_secs(60), || {
        let j = json(s, &["get", "job", "later", "-o", "json"]);
        condition(&j, "Complete").is_some().then_some(j)
    })
    .expect("Complete after resume");
    let resumed = done["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Suspended")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(resumed["status"], "False");
    assert_eq!(resumed["reason"], "JobResumed");
}
