//! Objects every cluster has: the four system namespaces and the `kubernetes` Service with its
//! Endpoints and EndpointSlice pointing at this server.

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
