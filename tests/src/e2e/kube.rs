//! kubectl conveniences for the e2e tests: applying manifests, reading container statuses and
//! events, and reading a long-running kubectl's output (`logs -f`, `attach`, `port-forward`)
//! line by line with a timeout.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::E2eCluster;

impl E2eCluster {
    /// `kubectl apply -f -` with `yaml`.
    pub fn apply(&self, yaml: &str) -> String {
        self.k_stdin(&["apply", "-f", "-"], Some(yaml))
    }

    /// Status of container `container` of pod `pod` (`Null` when absent), init containers
    /// included.
    pub fn container_status(&self, pod: &str, container: &str) -> Value {
        let p = self.json(&["get", "pod", pod]);
        for key in ["containerStatuses", "initContainerStatuses"] {
            if let Some(list) = p["status"][key].as_array()
                && let Some(s) = list.iter().find(|s| s["name"] == container)
            {
                return s.clone();
            }
        }
        Value::Null
    }

    /// restartCount of a container (0 when absent).
    pub fn restart_count(&self, pod: &str, container: &str) -> i64 {
        self.container_status(pod, container)["restartCount"]
            .as_i64()
            .unwrap_or(0)
    }

    /// `reason` of the events about pod `pod` (in order).
    pub fn pod_event_reasons(&self, pod: &str) -> Vec<String> {
        let sel = format!("involvedObject.name={pod}");
        let ev = self.json(&["get", "events", "--field-selector", &sel]);
        ev["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|e| e["reason"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Messages of the events about pod `pod`.
    pub fn pod_event_messages(&self, pod: &str) -> Vec<String> {
        let sel = format!("involvedObject.name={pod}");
        let ev = self.json(&["get", "events", "--field-selector", &sel]);
        ev["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|e| e["message"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Names of the pods matching `selector` (default namespace).
    pub fn pods(&self, selector: &str) -> Vec<Value> {
        self.json(&["get", "pods", "-l", selector])["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Spawn kubectl with stdout (and stdin when `stdin`) piped; its output arrives line by line.
    pub fn stream(&self, args: &[&str], stdin: bool) -> Stream {
        let mut cmd = self.kubectl_cmd(args);
        cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn kubectl");
        let (tx, rx) = channel();
        let out = child.stdout.take().expect("stdout");
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx2.send(format!("stderr: {line}")).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Stream {
            child,
            stdin,
            lines: rx,
            seen: Vec::new(),
        }
    }
}

/// A running kubectl whose output is read line by line (stderr lines prefixed `stderr: `).
/// Killed on drop.
pub struct Stream {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl Stream {
    /// Read lines until one satisfies `pred`; panics after `timeout` with what was seen.
    pub fn wait_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "no matching line from kubectl within {timeout:?}; saw: {:?}",
                        self.seen
                    )
                }
            }
        }
    }

    /// Write to kubectl's stdin.
    pub fn send(&mut self, text: &str) {
        let si = self.stdin.as_mut().expect("stream has no stdin");
        si.write_all(text.as_bytes()).expect("write kubectl stdin");
        si.flush().expect("flush kubectl stdin");
    }

    /// Close stdin.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Whether kubectl has exited.
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
