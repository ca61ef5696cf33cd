//! Objects every cluster has: the four system namespaces, the `kubernetes` Service with its
//! Endpoints and EndpointSlice pointing at this server, and (unless switched off) the `kube-dns`
//! Service of `kube-system` at the cluster DNS address, as k3s's CoreDNS manifest has it.

use k8slite_api::{ApiError, meta};
use k8slite_datastore::StoreError;
use serde_json::{Value, json};

use crate::ApiServer;
use crate::objects::{from_stored, to_stored};

/// Create `obj` of `group/version/plural` unless it exists; with `replace`, overwrite a stored
/// object whose content differs in the fields of `obj`.
async fn ensure(
    server: &ApiServer,
    group: &str,
    version: &str,
    plural: &str,
    mut obj: Value,
    replace: bool,
) -> Result<(), ApiError> {
    let reg = server.registry();
    let info = reg
        .get(group, version, plural)
        .ok_or_else(|| ApiError::internal(format!("bootstrap: {plural} not registered")))?;
    let ns = meta::namespace(&obj).map(str::to_string);
    let key = info.key(ns.as_deref(), meta::name(&obj));
    if let Some(kv) = server
        .store
        .get(&key)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
    {
        if !replace {
            return Ok(());
        }
        let mut current = from_stored(&kv)?;
        let mut changed = false;
        for (k, v) in obj.as_object().into_iter().flatten() {
            if k != "metadata" && current.get(k) != Some(v) {
                current[k] = v.clone();
                changed = true;
            }
        }
        if changed {
            match server
                .store
                .update(&key, to_stored(&current)?, kv.mod_revision)
                .await
            {
                Ok(_) | Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(ApiError::internal(e.to_string())),
            }
        }
        return Ok(());
    }
    crate::strategy::prepare_create(&info, &mut obj, ns.as_deref())?;
    match server.store.create(&key, to_stored(&obj)?).await {
        Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

pub(crate) async fn ensure_defaults(server: &ApiServer) -> Result<(), ApiError> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        ensure(
            server,
            "",
            "v1",
            "namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            false,
        )
        .await?;
    }
    let cfg = server.config();
    let svc_ip = cfg
        .service_cidr
        .hosts()
        .next()
        .ok_or_else(|| ApiError::internal("service CIDR has no host addresses"))?;
    ensure(server, "", "v1", "services", json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": svc_ip.to_string(), "clusterIPs": [svc_ip.to_string()], "sessionAffinity": "None",
                 "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": cfg.secure_port}]},
    }), false).await?;
    let addr = cfg.advertise_address.to_string();
    ensure(server, "", "v1", "endpoints", json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": addr}], "ports": [{"name": "https", "port": cfg.secure_port, "protocol": "TCP"}]}],
    }), true).await?;
    ensure(server, "discovery.k8s.io", "v1", "endpointslices", json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "endpointslicemirroring-controller.k8s.io"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [addr], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": cfg.secure_port, "protocol": "TCP"}],
    }), true).await?;
    if cfg.cluster_dns_service {
        ensure_kube_dns(server).await?;
    }
    for pc in crate::admission::priority::system_classes() {
        ensure(
            server,
            "scheduling.k8s.io",
            "v1",
            "priorityclasses",
            pc,
            false,
        )
        .await?;
    }
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        server.publish_root_ca(ns).await?;
    }
    server.sync_crds().await;
    Ok(())
}

/// The `kube-dns` Service (k3s's CoreDNS manifest: ports `dns` 53/UDP, `dns-tcp` 53/TCP,
/// `metrics` 9153/TCP, selector `k8s-app: kube-dns`).
pub(crate) fn kube_dns_service(ip: std::net::IpAddr) -> Value {
    let family = if ip.is_ipv6() { "IPv6" } else { "IPv4" };
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system",
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"},
            "annotations": {"prometheus.io/port": "9153", "prometheus.io/scrape": "true"}},
        "spec": {"type": "ClusterIP", "selector": {"k8s-app": "kube-dns"},
            "clusterIP": ip.to_string(), "clusterIPs": [ip.to_string()],
            "ipFamilies": [family], "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None",
            "internalTrafficPolicy": "Cluster",
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}
            ]},
    })
}

/// Create `kube-system/kube-dns` unless it exists (a user's changes stay) or its address is
/// unusable: outside the service CIDR, or held by another Service (logged, not fatal).
async fn ensure_kube_dns(server: &ApiServer) -> Result<(), ApiError> {
    let cfg = server.config();
    let Some(ip) = cfg.cluster_dns else {
        return Ok(());
    };
    if !cfg.service_cidr.contains(&ip) {
        tracing::warn!(cluster_dns = %ip, service_cidr = %cfg.service_cidr, "cluster DNS address outside the service CIDR: no kube-dns Service");
        return Ok(());
    }
    let _held = server.allocator.lock.lock().await;
    let listed = server
        .store
        .list(
            "/registry/services/",
            k8slite_datastore::ListOptions::default(),
        )
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let services: Vec<Value> = listed
        .items
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .collect();
    let exists = services
        .iter()
        .any(|s| meta::namespace(s) == Some("kube-system") && meta::name(s) == "kube-dns");
    if exists {
        return Ok(());
    }
    let (used, _) = crate::allocator::used(&services);
    if used.contains(&ip) {
        let holder = services
            .iter()
            .find(|s| {
                crate::allocator::used(std::slice::from_ref(s))
                    .0
                    .contains(&ip)
            })
            .map(|s| {
                format!(
                    "{}/{}",
                    meta::namespace(s).unwrap_or_default(),
                    meta::name(s)
                )
            })
            .unwrap_or_default();
        tracing::warn!(cluster_dns = %ip, service = %holder, "the cluster DNS address is the ClusterIP of another Service: no kube-dns Service");
        return Ok(());
    }
    ensure(server, "", "v1", "services", kube_dns_service(ip), false).await
}
