//! A service's port and endpoint for `services/proxy`, as upstream picks them: a port number
//! becomes the service port's name, then a ready address of a subset that has a port of that
//! name, starting at a pseudo-random subset and address.

use std::net::IpAddr;

use k8slite_api::ApiError;
use serde_json::Value;

/// The service port's name for the requested port: a number is looked up among the service's
/// ports (503 when none has it), a name is taken as is.
pub(crate) fn service_port_name(svc: &Value, name: &str, port: &str) -> Result<String, ApiError> {
    let Ok(n) = port.parse::<i64>() else {
        return Ok(port.to_string());
    };
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|p| p.get("port").and_then(Value::as_i64) == Some(n))
        .map(|p| {
            p.get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        })
        .ok_or_else(|| {
            ApiError::new(
                503,
                "ServiceUnavailable",
                format!("no service port {n} found for service {name:?}"),
            )
        })
}

/// A chosen endpoint.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
    pub node: Option<String>,
    pub pod: Option<String>,
}

/// A ready address of the Endpoints object serving port `port_name`, starting at a subset and
/// an address chosen by `seed`; 503 "no endpoints available" as upstream words it (the service
/// name when there are no subsets, the request's name when no subset has the port).
pub(crate) fn pick_endpoint(
    endpoints: &Value,
    port_name: &str,
    seed: usize,
    svc_name: &str,
    id: &str,
) -> Result<Endpoint, ApiError> {
    let unavailable = |what: &str| {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!("no endpoints available for service {what:?}"),
        )
    };
    let subsets: &[Value] = endpoints
        .get("subsets")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if subsets.is_empty() {
        return Err(unavailable(svc_name));
    }
    for i in 0..subsets.len() {
        let ss = &subsets[(seed + i) % subsets.len()];
        let addrs: &[Value] = ss
            .get("addresses")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if addrs.is_empty() {
            continue;
        }
        let port = ss
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| p.get("name").and_then(Value::as_str).unwrap_or_default() == port_name)
            .and_then(|p| p.get("port").and_then(Value::as_u64))
            .and_then(|p| u16::try_from(p).ok());
        let Some(port) = port else { continue };
        for j in 0..addrs.len() {
            let a = &addrs[(seed / subsets.len() + j) % addrs.len()];
            let Some(ip) = a
                .get("ip")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
            else {
                continue;
            };
            let pod = a
                .get("targetRef")
                .filter(|r| r.get("kind").and_then(Value::as_str) == Some("Pod"))
                .and_then(|r| r.get("name").and_then(Value::as_str))
                .map(str::to_string);
            return Ok(Endpoint {
                ip,
                port,
                node: a
                    .get("nodeName")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                pod,
            });
        }
    }
    Err(unavailable(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn service_ports_by_number_or_name() {
        let svc = json!({"spec": {"ports": [{"name": "http", "port": 80}, {"port": 8443}]}});
        assert_eq!(service_port_name(&svc, "web", "80").expect("80"), "http");
        assert_eq!(service_port_name(&svc, "web", "8443").expect("unnamed"), "");
        assert_eq!(
            service_port_name(&svc, "web", "metrics").expect("name"),
            "metrics"
        );
        assert_eq!(service_port_name(&svc, "web", "").expect("none"), "");
        let e = service_port_name(&svc, "web", "81").expect_err("no such port");
        assert_eq!(
            (e.code, e.message.as_str()),
            (503, "no service port 81 found for service \"web\"")
        );
    }

    #[test]
    fn endpoints_are_chosen_by_port_name() {
        let eps = json!({"subsets": [
            {"addresses": [], "notReadyAddresses": [{"ip": "10.42.0.9"}], "ports": [{"name": "http", "port": 8080}]},
            {"addresses": [
                {"ip": "10.42.0.5", "nodeName": "n1", "targetRef": {"kind": "Pod", "name": "web-a"}},
                {"ip": "10.42.1.6", "targetRef": {"kind": "Pod", "name": "web-b"}}
             ], "ports": [{"name": "http", "port": 8080}, {"name": "admin", "port": 9000}]}
        ]});
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..8 {
            let ep = pick_endpoint(&eps, "http", seed, "web", "web:80").expect("endpoint");
            assert_eq!(ep.port, 8080, "not-ready addresses are never chosen");
            seen.insert((ep.ip.to_string(), ep.node, ep.pod));
        }
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            [
                (
                    "10.42.0.5".to_string(),
                    Some("n1".to_string()),
                    Some("web-a".to_string())
                ),
                ("10.42.1.6".to_string(), None, Some("web-b".to_string())),
            ],
            "every ready address gets picked for some seed"
        );
        assert_eq!(
            pick_endpoint(&eps, "admin", 0, "web", "web:admin")
                .expect("admin")
                .port,
            9000
        );
        let e = pick_endpoint(&eps, "metrics", 0, "web", "web:metrics").expect_err("no port");
        assert_eq!(
            (e.code, e.message.as_str()),
            (503, "no endpoints available for service \"web:metrics\"")
        );
        let e = pick_endpoint(&json!({"subsets": []}), "", 0, "web", "web:80").expect_err("none");
        assert_eq!(
            (e.code, e.reason.as_str(), e.message.as_str()),
            (
                503,
                "ServiceUnavailable",
                "no endpoints available for service \"web\""
            )
        );
    }
}
