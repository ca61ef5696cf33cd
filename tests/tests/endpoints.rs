//! Endpoints and EndpointSlices follow pod readiness (pod status set with kubectl through the
//! status subresource, no agent needed): named target ports, not-ready addresses, headless
//! services with hostnames, services without selectors left alone.

use std::time::Duration;

use k8slite_tests::{Server, eventually};

const WAIT: Duration = Duration::from_secs(30);

fn create_pod(s: &Server, name: &str, port: u16) {
    let yaml = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{{"app":"web"}}}},
"spec":{{"hostname":"{name}","subdomain":"web-headless","containers":[{{"name":"c","image":"nginx","ports":[{{"name":"http","containerPort":{port}}}]}}]}}}}"#
    );
    s.k_stdin(&["create", "-f", "-"], Some(&yaml));
}

fn set_status(s: &Server, name: &str, ip: &str, ready: bool) {
    let patch = format!(
        r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}],"conditions":[{{"type":"Ready","status":"{}"}}]}}}}"#,
        if ready { "True" } else { "False" }
    );
    s.k(&[
        "patch",
        "pod",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ]);
}

fn jp(s: &Server, args: &[&str], path: &str) -> String {
    let mut a: Vec<&str> = args.to_vec();
    let p = format!("jsonpath={path}");
    a.extend(["-o", p.as_str()]);
    let out = s.kubectl(&a);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn endpoints_and_slices_follow_readiness() {
    let s = Server::start();
    create_pod(&s, "a", 8080);
    create_pod(&s, "b", 8080);
    set_status(&s, "a", "10.42.0.5", true);
    set_status(&s, "b", "10.42.0.6", false);
    s.k_stdin(
        &["create", "-f", "-"],
        Some(
            r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"web"},
"spec":{"selector":{"app":"web"},"ports":[{"name":"http","port":80,"targetPort":"http"}]}}"#,
        ),
    );
    eventually(WAIT, || {
        let ready = jp(
            &s,
            &["get", "endpoints", "web"],
            "{.subsets[0].addresses[*].ip}",
        );
        let not_ready = jp(
            &s,
            &["get", "endpoints", "web"],
            "{.subsets[0].notReadyAddresses[*].ip}",
        );
        (ready == "10.42.0.5" && not_ready == "10.42.0.6").then_some(())
    })
    .expect("endpoints with a ready and a not-ready address");
    assert_eq!(
        jp(
            &s,
            &["get", "endpoints", "web"],
            "{.subsets[0].ports[0].port}"
        ),
        "8080"
    );
    assert_eq!(
        jp(
            &s,
            &["get", "endpoints", "web"],
            "{.subsets[0].addresses[0].targetRef.name}"
        ),
        "a"
    );
    let sel = [
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
    ];
    let slice = |path: &str| jp(&s, &sel, path);
    eventually(WAIT, || {
        (slice("{.items[0].endpoints[*].conditions.ready}") == "true false").then_some(())
    })
    .expect("one slice with a ready and a not-ready endpoint");
    assert_eq!(slice("{.items[*].addressType}"), "IPv4");
    assert!(slice("{.items[0].metadata.name}").starts_with("web-"));
    assert_eq!(
        slice("{.items[0].metadata.labels.endpointslice\\.kubernetes\\.io/managed-by}"),
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(
        slice("{.items[0].metadata.ownerReferences[0].kind}"),
        "Service"
    );
    assert_eq!(slice("{.items[0].ports[0].port}"), "8080");

    // b becomes ready, a does not any more
    set_status(&s, "b", "10.42.0.6", true);
    set_status(&s, "a", "10.42.0.5", false);
    eventually(WAIT, || {
        let ready = jp(
            &s,
            &["get", "endpoints", "web"],
            "{.subsets[0].addresses[*].ip}",
        );
        let not_ready = jp(
            &s,
            &["get", "endpoints", "web"],
            "{.subsets[0].notReadyAddresses[*].ip}",
        );
        (ready == "10.42.0.6" && not_ready == "10.42.0.5").then_some(())
    })
    .expect("endpoints follow readiness");
    eventually(WAIT, || {
        (slice("{.items[0].endpoints[*].conditions.ready}") == "false true").then_some(())
    })
    .expect("slice follows readiness");

    // a pod being deleted leaves the Endpoints; the slice marks it terminating
    s.k(&[
        "patch",
        "pod",
        "b",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ]);
    s.k(&["delete", "pod", "b", "--wait=false"]);
    eventually(WAIT, || {
        let all = jp(
            &s,
            &["get", "endpoints", "web"],
            "{.subsets[*].addresses[*].ip} {.subsets[*].notReadyAddresses[*].ip}",
        );
        (all.trim() == "10.42.0.5"
            && slice(
                "{.items[0].endpoints[?(@.addresses[0]==\"10.42.0.6\")].conditions.terminating}",
            ) == "true")
            .then_some(())
    })
    .expect("terminating pod out of Endpoints, terminating in the slice");
    s.k(&[
        "patch",
        "pod",
        "b",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);

    // deleting the service removes its Endpoints and (through the GC) its slices
    s.k(&["delete", "service", "web"]);
    eventually(WAIT, || {
        let ep = s.kubectl(&["get", "endpoints", "web"]);
        (!ep.status.success() && slice("{.items[*].metadata.name}").is_empty()).then_some(())
    })
    .expect("endpoints and slices gone with the service");
}

#[test]
fn headless_publish_not_ready_and_selectorless_services() {
    let s = Server::start();
    create_pod(&s, "a", 80);
    set_status(&s, "a", "10.42.1.5", false);
    s.k_stdin(
        &["create", "-f", "-"],
        Some(r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"web-headless"},
"spec":{"clusterIP":"None","publishNotReadyAddresses":true,"selector":{"app":"web"},"ports":[{"port":80}]}}"#),
    );
    eventually(WAIT, || {
        let ip = jp(
            &s,
            &["get", "endpoints", "web-headless"],
            "{.subsets[0].addresses[0].ip}",
        );
        let host = jp(
            &s,
            &["get", "endpoints", "web-headless"],
            "{.subsets[0].addresses[0].hostname}",
        );
        (ip == "10.42.1.5" && host == "a").then_some(())
    })
    .expect("not-ready pod published with its hostname");
    let labels = jp(
        &s,
        &["get", "endpoints", "web-headless"],
        "{.metadata.labels}",
    );
    assert!(
        labels.contains("service.kubernetes.io/headless"),
        "labels: {labels}"
    );

    // a service without selector: its hand-made Endpoints are not touched
    s.k_stdin(
        &["create", "-f", "-"],
        Some(r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"ext"},"spec":{"ports":[{"port":80}]}}"#),
    );
    s.k_stdin(
        &["create", "-f", "-"],
        Some(r#"{"apiVersion":"v1","kind":"Endpoints","metadata":{"name":"ext"},"subsets":[{"addresses":[{"ip":"192.0.2.1"}],"ports":[{"port":80}]}]}"#),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        jp(
            &s,
            &["get", "endpoints", "ext"],
            "{.subsets[0].addresses[0].ip}"
        ),
        "192.0.2.1"
    );
    // the API server's own kubernetes endpoints stay as the bootstrap made them
    assert_eq!(
        jp(
            &s,
            &["get", "endpoints", "kubernetes"],
            "{.subsets[0].addresses[0].ip}"
        ),
        "127.0.0.1"
    );
}
