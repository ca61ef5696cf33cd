//! An agent restores its routes after a restart: agent1 is stopped, every route it programmed
//! (route protocol 117) is flushed from its node as a reboot would, and the restarted agent
//! programs a route to every other node's pod CIDR again (host-gw: via that node's address);
//! pod → pod traffic to and from agent1 flows again.

use k8slite_tests::e2e::WAIT;

use super::{Net, s};

/// `node`'s routes of protocol 117 (listed unfiltered: `ip route show proto 117` omits the
/// protocol from its lines).
fn routes(net: &Net, node: &str) -> String {
    let out = net.c.exec_in(node, &["ip", "-4", "route", "show"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(" proto 117"))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn pod_cidr(net: &Net, node: &str) -> String {
    net.c
        .field(&["get", "node", &net.c.node_name(node)], "{.spec.podCIDR}")
}

/// Whether the proto-117 routes of `node` lead to every other node's pod CIDR.
fn complete(net: &Net, node: &str, backend: &str) -> Option<String> {
    let r = routes(net, node);
    net.c
        .nodes()
        .iter()
        .filter(|n| n.name != node)
        .all(|n| {
            let cidr = pod_cidr(net, &n.name);
            r.lines().any(|l| {
                l.starts_with(&format!("{cidr} "))
                    && (backend != "host-gw" || l.contains(&format!("via {} ", n.ip)))
            })
        })
        .then_some(r)
}

pub(super) fn routes_after_agent_restart(net: &mut Net, backend: &str) {
    assert!(
        complete(net, "agent1", backend).is_some(),
        "agent1's routes before the restart: {}",
        routes(net, "agent1")
    );
    net.c
        .terminate_node_process("agent1", std::time::Duration::from_secs(30));
    let out = net
        .c
        .exec_in("agent1", &["ip", "route", "flush", "proto", "117"]);
    assert!(out.status.success(), "flushing agent1's routes: {out:?}");
    assert_eq!(routes(net, "agent1"), "", "routes left after the flush");
    net.c.spawn_agent("agent1");
    net.c.wait_node_ready("agent1", WAIT);
    let after = net.c.wait_for("agent1's routes restored", WAIT, || {
        complete(net, "agent1", backend)
    });
    assert!(!after.is_empty());
    // Pod → pod across nodes, to and from agent1, once more.
    let agent1 = net.c.node_name("agent1");
    let echo = net.echo_pods();
    let on = |mine: bool| -> Vec<String> {
        echo.iter()
            .filter(|p| (s(&p["spec"]["nodeName"]) == agent1) == mine)
            .map(|p| s(&p["status"]["podIP"]))
            .filter(|ip| !ip.is_empty())
            .collect()
    };
    let (local, remote) = (on(true), on(false));
    assert!(
        !local.is_empty() && !remote.is_empty(),
        "echo pods: {local:?} {remote:?}"
    );
    let (_, from_agent1) = &net.clients[1];
    let (_, from_server) = &net.clients[0];
    for (client, ips) in [(from_agent1, &remote), (from_server, &local)] {
        let my_ip = net.pod_ip(client);
        for ip in ips {
            let url = format!("http://{ip}:8080/cgi-bin/ip");
            let body = net.c.wait_for(
                &format!("{client} reaching {ip} after agent1's restart"),
                WAIT,
                || net.fetch(client, &url),
            );
            assert!(body.contains(&my_ip), "{url} from {client}: {body:?}");
        }
    }
}
