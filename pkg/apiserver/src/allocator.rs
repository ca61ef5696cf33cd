//! ClusterIP and NodePort allocation. The set of used values is derived from the stored
//! Services (no separate bitmap to get out of sync); a mutex serialises allocations.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use k8slite_api::ApiError;
use serde_json::Value;

/// Allocation state shared by requests.
#[derive(Debug, Default)]
pub struct Allocators {
    /// Held while a Service is being allocated for and stored.
    pub lock: tokio::sync::Mutex<()>,
}

/// ClusterIPs and NodePorts used by the given Services.
pub fn used(services: &[Value]) -> (HashSet<IpAddr>, HashSet<u16>) {
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    for s in services {
        let spec = s.get("spec").unwrap_or(&Value::Null);
        for ip in spec
            .get("clusterIPs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(ip) = ip.as_str().and_then(|s| s.parse().ok()) {
                ips.insert(ip);
            }
        }
        if let Some(ip) = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
        {
            ips.insert(ip);
        }
        for p in spec
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(np) = p.get("nodePort").and_then(Value::as_u64) {
                ports.insert(np as u16);
            }
        }
        if let Some(hc) = spec.get("healthCheckNodePort").and_then(Value::as_u64) {
            ports.insert(hc as u16);
        }
    }
    (ips, ports)
}

/// A free ClusterIP in `cidr` (skipping the network address and the first host, reserved for
/// the `kubernetes` Service unless `allow_first`).
pub fn next_ip(
    cidr: &IpNet,
    used: &HashSet<IpAddr>,
    allow_first: bool,
) -> Result<IpAddr, ApiError> {
    let skip = if allow_first { 0 } else { 1 };
    cidr.hosts()
        .skip(skip)
        .find(|ip| !used.contains(ip))
        .ok_or_else(|| {
            ApiError::internal(format!(
                "failed to allocate a serviceIP: range {cidr} is full"
            ))
        })
}

/// A free NodePort, starting at a pseudo-random offset like upstream.
pub fn next_port(range: (u16, u16), used: &HashSet<u16>) -> Result<u16, ApiError> {
    let span = u32::from(range.1.saturating_sub(range.0)) + 1;
    let start = uuid::Uuid::new_v4().as_u128() as u32 % span;
    (0..span)
        .map(|i| range.0 + ((start + i) % span) as u16)
        .find(|p| !used.contains(p))
        .ok_or_else(|| ApiError::internal("failed to allocate a nodePort: range is full"))
}

/// Whether a Service spec needs a `healthCheckNodePort` (as upstream: type LoadBalancer with
/// `externalTrafficPolicy: Local`).
fn needs_health_check_port(spec: &serde_json::Map<String, Value>) -> bool {
    spec.get("type").and_then(Value::as_str) == Some("LoadBalancer")
        && spec.get("externalTrafficPolicy").and_then(Value::as_str) == Some("Local")
}

/// The `healthCheckNodePort` a Service spec gets, as the upstream registry decides it: kept
/// when requested (in range, not taken by another Service) or already allocated, else a free
/// node port; dropped when the Service no longer needs one and the value is the old one; a
/// value set on a Service that does not need one is invalid. `taken` holds the node ports of
/// the other Services and this one's own (the result is added).
pub fn health_check_node_port(
    spec: &serde_json::Map<String, Value>,
    old_spec: Option<&Value>,
    range: (u16, u16),
    others: &HashSet<u16>,
    taken: &mut HashSet<u16>,
) -> Result<Option<u16>, ApiError> {
    const FIELD: &str = "spec.healthCheckNodePort";
    let requested = spec
        .get("healthCheckNodePort")
        .and_then(Value::as_u64)
        .filter(|p| *p != 0);
    let old = old_spec
        .and_then(|o| o.get("healthCheckNodePort"))
        .and_then(Value::as_u64)
        .filter(|p| *p != 0);
    if !needs_health_check_port(spec) {
        return match requested {
            Some(p) if Some(p) != old => Err(field_invalid(
                FIELD,
                &p.to_string(),
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            )),
            _ => Ok(None),
        };
    }
    let port = match requested.or(old) {
        Some(p) => {
            if !(u64::from(range.0)..=u64::from(range.1)).contains(&p) {
                return Err(field_invalid(
                    FIELD,
                    &p.to_string(),
                    &format!(
                        "provided port is not in the valid range. The range of valid ports is {}-{}",
                        range.0, range.1
                    ),
                ));
            }
            let p = p as u16;
            if others.contains(&p) || (Some(u64::from(p)) != old && taken.contains(&p)) {
                return Err(field_invalid(
                    FIELD,
                    &p.to_string(),
                    "provided port is already allocated",
                ));
            }
            p
        }
        None => next_port(range, taken)?,
    };
    taken.insert(port);
    Ok(Some(port))
}

/// Validate a requested ClusterIP.
pub fn check_ip(cidr: &IpNet, ip: &str, used: &HashSet<IpAddr>) -> Result<IpAddr, ApiError> {
    let parsed: IpAddr = ip
        .parse()
        .map_err(|_| field_invalid("spec.clusterIPs[0]", ip, "must be a valid IP address"))?;
    if !cidr.contains(&parsed) {
        return Err(field_invalid(
            "spec.clusterIPs[0]",
            ip,
            &format!(
                "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {cidr}"
            ),
        ));
    }
    if used.contains(&parsed) {
        return Err(field_invalid(
            "spec.clusterIPs[0]",
            ip,
            &format!("failed to allocate IP {ip}: provided IP is already allocated"),
        ));
    }
    Ok(parsed)
}

fn field_invalid(field: &str, value: &str, msg: &str) -> ApiError {
    ApiError::invalid(
        "",
        "Service",
        "",
        vec![k8slite_api::Cause::new(
            "FieldValueInvalid",
            field,
            format!("Invalid value: \"{value}\": {msg}"),
        )],
    )
}

impl crate::ApiServer {
    /// Allocate ClusterIP(s) and NodePorts of a Service being created or updated (call with
    /// [`Allocators::lock`] held so concurrent creates cannot pick the same value).
    pub(crate) async fn allocate_service(
        &self,
        svc: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        let res = self
            .store
            .list(
                "/registry/services/",
                k8slite_datastore::ListOptions::default(),
            )
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let me = (
            k8slite_api::meta::namespace(svc).map(str::to_string),
            k8slite_api::meta::name(svc).to_string(),
        );
        let others: Vec<Value> = res
            .items
            .iter()
            .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
            .filter(|o| {
                (
                    k8slite_api::meta::namespace(o).map(str::to_string),
                    k8slite_api::meta::name(o).to_string(),
                ) != me
            })
            .collect();
        let (used_ips, used_ports) = used(&others);
        let cfg = &self.config;
        let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else {
            return Ok(());
        };
        let ty = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        if ty == "ExternalName" {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
            return Ok(());
        }
        let old_ip = old
            .and_then(|o| o.pointer("/spec/clusterIP"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let requested = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let ip = match (requested.as_str(), old_ip) {
            ("None", _) => "None".to_string(),
            ("", Some(o)) => o,
            ("", None) => {
                // The cluster DNS address goes only to a Service asking for it.
                let mut reserved = used_ips.clone();
                reserved.extend(cfg.cluster_dns);
                next_ip(&cfg.service_cidr, &reserved, false)?.to_string()
            }
            (req, Some(o)) if req == o => o,
            (req, _) => {
                let is_kubernetes = me.0.as_deref() == Some("default") && me.1 == "kubernetes";
                let ip = check_ip(&cfg.service_cidr, req, &used_ips)?;
                if !is_kubernetes && cfg.service_cidr.hosts().next() == Some(ip) {
                    return Err(ApiError::invalid(
                        "",
                        "Service",
                        &me.1,
                        vec![k8slite_api::Cause::new(
                            "FieldValueInvalid",
                            "spec.clusterIPs[0]",
                            format!(
                                "Invalid value: \"{req}\": failed to allocate IP {req}: provided IP is already allocated"
                            ),
                        )],
                    ));
                }
                ip.to_string()
            }
        };
        spec.insert("clusterIP".into(), Value::String(ip.clone()));
        spec.insert("clusterIPs".into(), serde_json::json!([ip]));
        let needs_node_port = ty == "NodePort"
            || (ty == "LoadBalancer"
                && spec
                    .get("allocateLoadBalancerNodePorts")
                    .and_then(Value::as_bool)
                    != Some(false));
        let old_ports: Vec<Value> = old
            .and_then(|o| o.pointer("/spec/ports"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let others_ports = used_ports.clone();
        let mut taken = used_ports;
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports.iter() {
                if let Some(n) = p.get("nodePort").and_then(Value::as_u64) {
                    if !(u64::from(cfg.node_port_range.0)..=u64::from(cfg.node_port_range.1))
                        .contains(&n)
                    {
                        return Err(ApiError::invalid(
                            "",
                            "Service",
                            &me.1,
                            vec![k8slite_api::Cause::new(
                                "FieldValueInvalid",
                                "spec.ports[0].nodePort",
                                format!(
                                    "Invalid value: {n}: provided port is not in the valid range. The range of valid ports is {}-{}",
                                    cfg.node_port_range.0, cfg.node_port_range.1
                                ),
                            )],
                        ));
                    }
                    if !taken.insert(n as u16)
                        && !old_ports
                            .iter()
                            .any(|op| op.get("nodePort").and_then(Value::as_u64) == Some(n))
                    {
                        return Err(ApiError::invalid(
                            "",
                            "Service",
                            &me.1,
                            vec![k8slite_api::Cause::new(
                                "FieldValueInvalid",
                                "spec.ports[0].nodePort",
                                format!("Invalid value: {n}: provided port is already allocated"),
                            )],
                        ));
                    }
                }
            }
            for p in ports.iter_mut() {
                let Some(pm) = p.as_object_mut() else {
                    continue;
                };
                if !needs_node_port {
                    pm.remove("nodePort");
                    continue;
                }
                if pm.get("nodePort").and_then(Value::as_u64).is_some() {
                    continue;
                }
                let port = pm.get("port").cloned();
                let keep = old_ports
                    .iter()
                    .find(|op| op.get("port") == port.as_ref())
                    .and_then(|op| op.get("nodePort"))
                    .and_then(Value::as_u64);
                let n = match keep {
                    Some(n) => n as u16,
                    None => next_port(cfg.node_port_range, &taken)?,
                };
                taken.insert(n);
                pm.insert("nodePort".into(), serde_json::json!(n));
            }
        }
        let old_spec = old.and_then(|o| o.get("spec"));
        match health_check_node_port(
            spec,
            old_spec,
            cfg.node_port_range,
            &others_ports,
            &mut taken,
        )? {
            Some(p) => {
                spec.insert("healthCheckNodePort".into(), serde_json::json!(p));
            }
            None => {
                spec.remove("healthCheckNodePort");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn allocates_free_values() {
        let cidr: IpNet = "10.43.0.0/29".parse().expect("cidr");
        let svcs =
            vec![json!({"spec": {"clusterIP": "10.43.0.2", "ports": [{"nodePort": 30000}]}})];
        let (ips, ports) = used(&svcs);
        assert_eq!(
            next_ip(&cidr, &ips, false).expect("ip").to_string(),
            "10.43.0.3"
        );
        assert_eq!(
            next_ip(&cidr, &HashSet::new(), true)
                .expect("ip")
                .to_string(),
            "10.43.0.1"
        );
        let p = next_port((30000, 30001), &ports).expect("port");
        assert_eq!(p, 30001);
        assert!(next_port((30000, 30000), &ports).is_err());
        assert!(check_ip(&cidr, "10.44.0.1", &ips).is_err());
        assert!(check_ip(&cidr, "10.43.0.2", &ips).is_err());
    }

    fn spec(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn health_check_node_port_for_local_load_balancers() {
        let range = (30000, 30002);
        let others: HashSet<u16> = [30000].into();
        let lb = json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local"});
        // Allocated when needed, from the free ports.
        let mut taken = others.clone();
        taken.insert(30001); // this Service's own nodePort
        let p = health_check_node_port(&spec(lb.clone()), None, range, &others, &mut taken);
        assert_eq!(p.expect("allocated"), Some(30002));
        // Kept across an update that does not name it.
        let old = json!({"healthCheckNodePort": 30002});
        let mut taken = others.clone();
        let p = health_check_node_port(&spec(lb.clone()), Some(&old), range, &others, &mut taken);
        assert_eq!(p.expect("kept"), Some(30002));
        // A requested port taken by another Service or outside the range is invalid.
        let mut req = lb.clone();
        req["healthCheckNodePort"] = json!(30000);
        let mut taken = others.clone();
        assert!(health_check_node_port(&spec(req), None, range, &others, &mut taken).is_err());
        let mut req = lb.clone();
        req["healthCheckNodePort"] = json!(40000);
        let mut taken = others.clone();
        assert!(health_check_node_port(&spec(req), None, range, &others, &mut taken).is_err());
        // Not needed: none; the old value is dropped; another value is invalid.
        for s in [
            json!({"type": "LoadBalancer", "externalTrafficPolicy": "Cluster"}),
            json!({"type": "NodePort", "externalTrafficPolicy": "Local"}),
        ] {
            let mut taken = others.clone();
            let p = health_check_node_port(&spec(s.clone()), None, range, &others, &mut taken);
            assert_eq!(p.expect("none"), None);
            let mut with_old = s.clone();
            with_old["healthCheckNodePort"] = json!(30002);
            let p = health_check_node_port(
                &spec(with_old.clone()),
                Some(&old),
                range,
                &others,
                &mut taken,
            );
            assert_eq!(p.expect("dropped"), None);
            assert!(
                health_check_node_port(&spec(with_old), None, range, &others, &mut taken).is_err()
            );
        }
    }
}
