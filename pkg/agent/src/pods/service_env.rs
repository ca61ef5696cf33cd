//! Service environment variables, as the kubelet sets them (`getServiceEnvVarMap` and
//! `pkg/kubelet/envvars`): for every Service a pod sees, `<SVC>_SERVICE_HOST`,
//! `<SVC>_SERVICE_PORT`, `<SVC>_SERVICE_PORT_<PORTNAME>` and the docker-link variables
//! `<SVC>_PORT`, `<SVC>_PORT_<port>_<PROTO>{,_PROTO,_PORT,_ADDR}`.
//!
//! A pod sees the master service `kubernetes` of `default` always, and every Service of its own
//! namespace unless `enableServiceLinks: false`; a Service of the pod's namespace named like a
//! master service replaces it. Services without a ClusterIP (headless, ExternalName) give no
//! variables.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;

/// Services whose variables every pod gets (from the `default` namespace).
pub const MASTER_SERVICES: &[&str] = &["kubernetes"];

/// The namespace of the master services.
pub const MASTER_NAMESPACE: &str = "default";

/// A Service or port name as an environment variable name: upper case, `-` → `_`.
pub fn env_name(s: &str) -> String {
    s.replace('-', "_").to_uppercase()
}

/// The ClusterIP of `svc` when it has one (not empty, not `None`).
fn cluster_ip(svc: &Service) -> Option<&str> {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .filter(|ip| !ip.is_empty() && *ip != "None")
}

/// `ip:port`, bracketing IPv6 addresses.
fn host_port(ip: &str, port: i32) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// The variables of one Service, in the kubelet's order (none without a ClusterIP or ports).
pub fn service_vars(svc: &Service) -> Vec<(String, String)> {
    let Some(ip) = cluster_ip(svc) else {
        return Vec::new();
    };
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default();
    let Some(first) = ports.first() else {
        return Vec::new();
    };
    let prefix = env_name(svc.metadata.name.as_deref().unwrap_or_default());
    let mut out = vec![
        (format!("{prefix}_SERVICE_HOST"), ip.to_string()),
        (format!("{prefix}_SERVICE_PORT"), first.port.to_string()),
    ];
    for p in ports {
        if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
            out.push((
                format!("{prefix}_SERVICE_PORT_{}", env_name(n)),
                p.port.to_string(),
            ));
        }
    }
    for (i, p) in ports.iter().enumerate() {
        let proto = p
            .protocol
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or("TCP");
        let lower = proto.to_lowercase();
        let url = format!("{lower}://{}", host_port(ip, p.port));
        if i == 0 {
            out.push((format!("{prefix}_PORT"), url.clone()));
        }
        let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
        out.push((pp.clone(), url));
        out.push((format!("{pp}_PROTO"), lower));
        out.push((format!("{pp}_PORT"), p.port.to_string()));
        out.push((format!("{pp}_ADDR"), ip.to_string()));
    }
    out
}

/// The Services a pod of namespace `ns` sees, by name: the master services from
/// `master_ns_services` (the Services of [`MASTER_NAMESPACE`]) and, with `links`, every Service
/// of `ns_services` (the pod's namespace; these win over a master service of the same name).
pub fn visible<'a>(
    ns: &str,
    links: bool,
    master_ns_services: &'a [Service],
    ns_services: &'a [Service],
) -> BTreeMap<String, &'a Service> {
    let mut out: BTreeMap<String, &Service> = BTreeMap::new();
    for s in master_ns_services {
        let name = s.metadata.name.clone().unwrap_or_default();
        if MASTER_SERVICES.contains(&name.as_str()) && cluster_ip(s).is_some() {
            out.insert(name, s);
        }
    }
    if links {
        for s in ns_services {
            let same_ns = s.metadata.namespace.as_deref().is_none_or(|n| n == ns);
            if same_ns && cluster_ip(s).is_some() {
                out.insert(s.metadata.name.clone().unwrap_or_default(), s);
            }
        }
    }
    out
}

/// The service variables of a pod of namespace `ns` (see [`visible`]); when two Services give
/// the same variable name, the one later by name wins.
pub fn service_env(
    ns: &str,
    links: bool,
    master_ns_services: &[Service],
    ns_services: &[Service],
) -> BTreeMap<String, String> {
    visible(ns, links, master_ns_services, ns_services)
        .values()
        .flat_map(|s| service_vars(s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": ports}
        }))
        .expect("service")
    }

    fn kubernetes() -> Service {
        svc(
            "default",
            "kubernetes",
            "10.43.0.1",
            json!([{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]),
        )
    }

    #[test]
    fn master_service_variables_as_the_kubelet_sets_them() {
        let env = service_env("ns", false, &[kubernetes()], &[]);
        let want: BTreeMap<String, String> = [
            ("KUBERNETES_SERVICE_HOST", "10.43.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
            ("KUBERNETES_PORT", "tcp://10.43.0.1:443"),
            ("KUBERNETES_PORT_443_TCP", "tcp://10.43.0.1:443"),
            ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
            ("KUBERNETES_PORT_443_TCP_PORT", "443"),
            ("KUBERNETES_PORT_443_TCP_ADDR", "10.43.0.1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(env, want);
    }

    #[test]
    fn namespace_services_with_named_ports_udp_and_mangled_names() {
        let web = svc(
            "ns",
            "my-web",
            "10.43.7.8",
            json!([{"port": 80}, {"name": "dns-udp", "port": 53, "protocol": "UDP"}]),
        );
        let env = service_env("ns", true, &[kubernetes()], &[web]);
        assert_eq!(env["MY_WEB_SERVICE_HOST"], "10.43.7.8");
        assert_eq!(env["MY_WEB_SERVICE_PORT"], "80");
        assert_eq!(env["MY_WEB_SERVICE_PORT_DNS_UDP"], "53");
        assert_eq!(env["MY_WEB_PORT"], "tcp://10.43.7.8:80");
        assert_eq!(env["MY_WEB_PORT_80_TCP"], "tcp://10.43.7.8:80");
        assert_eq!(env["MY_WEB_PORT_53_UDP"], "udp://10.43.7.8:53");
        assert_eq!(env["MY_WEB_PORT_53_UDP_PROTO"], "udp");
        assert_eq!(env["MY_WEB_PORT_53_UDP_PORT"], "53");
        assert_eq!(env["MY_WEB_PORT_53_UDP_ADDR"], "10.43.7.8");
        // the unnamed first port has no _SERVICE_PORT_<NAME> variable
        assert_eq!(
            env.keys()
                .filter(|k| k.starts_with("MY_WEB_SERVICE_PORT_"))
                .count(),
            1
        );
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.43.0.1");
        assert_eq!(env.len(), 8 + 2 + 1 + 1 + 8);
    }

    #[test]
    fn links_off_headless_external_name_and_other_namespaces_give_nothing() {
        let web = svc("ns", "web", "10.43.7.8", json!([{"port": 80}]));
        let env = service_env("ns", false, &[kubernetes()], std::slice::from_ref(&web));
        assert!(env.keys().all(|k| k.starts_with("KUBERNETES_")), "{env:?}");
        let headless = svc("ns", "db", "None", json!([{"port": 5432}]));
        let ext: Service = serde_json::from_value(json!({
            "metadata": {"name": "ext", "namespace": "ns"},
            "spec": {"type": "ExternalName", "externalName": "example.org"}
        }))
        .expect("svc");
        let elsewhere = svc("other", "web2", "10.43.7.9", json!([{"port": 80}]));
        let env = service_env("ns", true, &[kubernetes()], &[headless, ext, elsewhere]);
        assert!(env.keys().all(|k| k.starts_with("KUBERNETES_")), "{env:?}");
        // only `kubernetes` of default is a master service
        let other_default = svc("default", "other", "10.43.0.5", json!([{"port": 1}]));
        let env = service_env("ns", true, &[kubernetes(), other_default], &[]);
        assert!(!env.contains_key("OTHER_SERVICE_HOST"));
    }

    #[test]
    fn a_namespace_service_named_kubernetes_wins_over_the_master_one() {
        let mine = svc("ns", "kubernetes", "10.43.9.9", json!([{"port": 8443}]));
        let env = service_env("ns", true, &[kubernetes()], std::slice::from_ref(&mine));
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.43.9.9");
        assert_eq!(env["KUBERNETES_SERVICE_PORT"], "8443");
        assert!(!env.contains_key("KUBERNETES_SERVICE_PORT_HTTPS"));
        let env = service_env("ns", false, &[kubernetes()], &[mine]);
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.43.0.1");
    }

    #[test]
    fn ipv6_cluster_ips_are_bracketed_in_urls() {
        let v6 = svc("ns", "v6", "fd00::10", json!([{"port": 80}]));
        let env = service_env("ns", true, &[], &[v6]);
        assert_eq!(env["V6_PORT"], "tcp://[fd00::10]:80");
        assert_eq!(env["V6_PORT_80_TCP_ADDR"], "fd00::10");
    }
}
