//! Stale UDP conntrack entries: a pod keeps sending datagrams to a UDP Service from one fixed
//! source port (so every datagram rides the same conntrack entry) while the Service's endpoint
//! pod is replaced. A new endpoint alone does not move the flow (the entry still points at the
//! old pod); once the old pod is gone, its node agent deletes the entry with the `conntrack`
//! tool and the next datagrams reach the new pod.
//!
//! busybox has no UDP client or server, so the sender and the receivers are Perl (core
//! `IO::Socket::INET`) run from the root mount namespace inside the pods' network namespaces
//! (pinned by containerd under the node's run dir); their command lines name the run's
//! directory, so the cluster's cleanup ends them even after a failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use k8slite_tests::e2e::{WAIT, sys};

use super::Net;

const PORT: u16 = 5140;
const SOURCE_PORT: u16 = 40404;

fn endpoint_pod(name: &str, node: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: udp}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    ports: [{{containerPort: {PORT}, protocol: UDP}}]
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
"#
    )
}

const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: udp}
spec:
  selector: {app: udp}
  ports: [{name: dgram, protocol: UDP, port: 5140, targetPort: 5140}]
"#;

/// The network namespace pin of the pod with address `ip` on logical node `node`.
fn pod_netns(net: &Net, node: &str, ip: &str) -> PathBuf {
    let run = net.c.node(node).run_dir();
    net.c
        .wait_for(&format!("the netns of pod {ip} on {node}"), WAIT, || {
            sys::mount_points()
                .into_iter()
                .filter(|m| m.starts_with(&run) && m.to_string_lossy().contains("netns"))
                .find(|m| {
                    let out = sys::nsenter_cmd(m, &["ip", "-4", "-o", "addr", "show"])
                        .stdin(Stdio::null())
                        .output();
                    out.is_ok_and(|o| {
                        String::from_utf8_lossy(&o.stdout).contains(&format!("inet {ip}/"))
                    })
                })
        })
}

fn perl(netns: &Path, script: &str, args: &[&str]) -> Child {
    let mut full = vec!["perl", "-MIO::Socket::INET", "-MSocket", "-e", script];
    full.extend_from_slice(args);
    sys::nsenter_cmd(netns, &full)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running perl under nsenter (package perl-base)")
}

/// A receiver on :PORT in `netns` appending `<source> <payload>` lines to `log`.
fn receiver(netns: &Path, log: &Path) -> Child {
    perl(
        netns,
        r#"my $s = IO::Socket::INET->new(LocalPort => $ARGV[1], Proto => "udp") or die "bind: $!";
open(my $f, ">>", $ARGV[0]) or die "open: $!"; $f->autoflush(1);
while (1) { my $from = $s->recv(my $buf, 1500); next unless defined $from;
  my ($port, $addr) = sockaddr_in($from); print $f inet_ntoa($addr) . ":$port $buf\n"; }"#,
        &[&log.to_string_lossy(), &PORT.to_string()],
    )
}

/// A sender from SOURCE_PORT to `dst`:PORT, one datagram every 100 ms until `stop` exists.
fn sender(netns: &Path, dst: &str, stop: &Path) -> Child {
    perl(
        netns,
        r#"my $s = IO::Socket::INET->new(LocalPort => $ARGV[2], PeerAddr => $ARGV[0],
  PeerPort => $ARGV[3], Proto => "udp", ReuseAddr => 1) or die "socket: $!";
my $i = 0; while (!-e $ARGV[1]) { $i++; $s->send("seq $i"); select(undef, undef, undef, 0.1); }"#,
        &[
            dst,
            &stop.to_string_lossy(),
            &SOURCE_PORT.to_string(),
            &PORT.to_string(),
        ],
    )
}

fn lines(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn stop(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

/// Everything `conntrack -L` knows about the sender's flow in node `node`'s netns.
fn flow(net: &Net, node: &str) -> String {
    let out = net.c.exec_in(
        node,
        &[
            "conntrack",
            "-L",
            "-p",
            "udp",
            "--sport",
            &SOURCE_PORT.to_string(),
        ],
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(super) fn stale_udp_conntrack(net: &Net) {
    assert!(
        k8slite_tests::e2e::prereq::which("perl").is_some(),
        "prerequisite missing: perl (package perl-base)"
    );
    // Client on agent1, the old endpoint on the server, the new one on agent2: the DNAT (and
    // the conntrack entry to delete) is on agent1.
    let (client_node, client) = net.clients[1].clone();
    net.c.apply(SERVICE);
    net.c
        .apply(&endpoint_pod("udp-a", &net.c.node_name("server")));
    let ip_a = net.c.wait_pod_ready("udp-a");
    let vip = net.c.field(&["get", "svc", "udp"], "{.spec.clusterIP}");
    let dir = net.c.base.join("udp");
    std::fs::create_dir_all(&dir).expect("udp test dir");
    let (log_a, log_b, stop_file) = (dir.join("a.log"), dir.join("b.log"), dir.join("stop"));
    let rx_a = receiver(&pod_netns(net, "server", &ip_a), &log_a);
    let client_ip = net.pod_ip(&client);
    let tx = sender(&pod_netns(net, &client_node, &client_ip), &vip, &stop_file);
    net.c
        .wait_for("udp-a receiving the client's datagrams", WAIT, || {
            (lines(&log_a) > 5).then_some(())
        });
    let first = std::fs::read_to_string(&log_a).unwrap_or_default();
    assert!(
        first.contains(&format!("{client_ip}:{SOURCE_PORT} seq")),
        "udp-a saw another source than {client_ip}:{SOURCE_PORT}: {first}"
    );

    // A second endpoint: the flow stays on udp-a (its conntrack entry still points there).
    net.c
        .apply(&endpoint_pod("udp-b", &net.c.node_name("agent2")));
    let ip_b = net.c.wait_pod_ready("udp-b");
    let rx_b = receiver(&pod_netns(net, "agent2", &ip_b), &log_b);
    net.c.wait_for("udp-b in the udp EndpointSlice", WAIT, || {
        net.c
            .field(
                &[
                    "get",
                    "endpointslices",
                    "-l",
                    "kubernetes.io/service-name=udp",
                ],
                "{.items[*].endpoints[*].addresses[*]}",
            )
            .contains(&ip_b)
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        lines(&log_b),
        0,
        "udp-b got datagrams while udp-a was still an endpoint (the flow should stick to udp-a): {}",
        flow(net, &client_node)
    );

    // Replace udp-a: its entry is deleted and the same flow now reaches udp-b.
    net.c.k(&["delete", "pod", "udp-a", "--wait=false"]);
    net.c.wait_for(
        "udp-b receiving the flow after udp-a went away",
        WAIT,
        || (lines(&log_b) > 5).then_some(()),
    );
    let got = std::fs::read_to_string(&log_b).unwrap_or_default();
    assert!(
        got.contains(&format!("{client_ip}:{SOURCE_PORT} seq")),
        "udp-b saw another source than {client_ip}:{SOURCE_PORT}: {got}"
    );
    let entries = flow(net, &client_node);
    assert!(
        entries.contains(&format!("src={ip_b} ")) && !entries.contains(&format!("src={ip_a} ")),
        "conntrack on {client_node} for sport {SOURCE_PORT}: {entries}"
    );
    std::fs::write(&stop_file, b"").expect("stop file");
    stop(tx);
    stop(rx_a);
    stop(rx_b);
    net.c.k(&["delete", "pod", "udp-b", "--wait=false"]);
}
