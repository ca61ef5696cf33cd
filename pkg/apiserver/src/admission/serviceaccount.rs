//! ServiceAccount admission: pods run as `default` unless they name a service account, and get
//! the projected `kube-api-access-<suffix>` volume (a bound token, the cluster CA from the
//! `kube-root-ca.crt` ConfigMap, the namespace) mounted read-only at
//! `/var/run/secrets/kubernetes.io/serviceaccount` in every container, unless
//! `automountServiceAccountToken` is false on the pod or its service account.
//! Also the root-CA publisher: every namespace gets the `kube-root-ca.crt` ConfigMap.

use std::sync::Arc;
use std::time::Duration;

use k8slite_api::meta;
use k8slite_datastore::StoreError;
use serde_json::{Value, json};

use crate::ApiServer;
use crate::objects::{from_stored, to_stored};

/// Where the token volume is mounted.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Lifetime of projected tokens (upstream's 3607: one hour plus seven seconds).
pub const PROJECTED_EXPIRATION: i64 = 3607;
/// Name of the ConfigMap with the cluster CA published in every namespace.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// The service account a pod runs as (`default` when unset).
pub fn service_account_name(pod: &Value) -> String {
    match pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
    {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => match pod.pointer("/spec/serviceAccount").and_then(Value::as_str) {
            Some(s) if !s.is_empty() => s.to_string(),
            _ => "default".to_string(),
        },
    }
}

/// The projected volume upstream adds.
pub fn token_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": PROJECTED_EXPIRATION, "path": "token"}},
                {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ]
        }
    })
}

/// Apply the plugin to a pod being created; `sa` is its service account when it exists.
pub fn admit(pod: &mut Value, sa: Option<&Value>) {
    // Mirror pods (static pods of a node) are left alone, like upstream.
    if meta::annotations(pod).contains_key("kubernetes.io/config.mirror") {
        return;
    }
    let name = service_account_name(pod);
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.insert("serviceAccountName".into(), json!(name));
    spec.insert("serviceAccount".into(), json!(name));
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            sa.and_then(|s| s.get("automountServiceAccountToken"))
                .and_then(Value::as_bool)
        })
        .unwrap_or(true);
    if !automount {
        return;
    }
    let mounted = ["containers", "initContainers"].iter().any(|k| {
        spec.get(*k)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|c| {
                c.get("volumeMounts")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
            .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(MOUNT_PATH))
    });
    if mounted {
        return;
    }
    let vol_name = loop {
        let n = format!("kube-api-access-{}", crate::strategy::random_suffix());
        let taken = spec
            .get("volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|v| v.get("name").and_then(Value::as_str) == Some(n.as_str()));
        if !taken {
            break n;
        }
    };
    let vols = spec.entry("volumes").or_insert_with(|| json!([]));
    if let Some(a) = vols.as_array_mut() {
        a.push(token_volume(&vol_name));
    }
    let mount = json!({"name": vol_name, "readOnly": true, "mountPath": MOUNT_PATH});
    for k in ["initContainers", "containers"] {
        if let Some(cs) = spec.get_mut(k).and_then(Value::as_array_mut) {
            for c in cs {
                if let Some(cm) = c.as_object_mut() {
                    let ms = cm.entry("volumeMounts").or_insert_with(|| json!([]));
                    if let Some(a) = ms.as_array_mut() {
                        a.push(mount.clone());
                    }
                }
            }
        }
    }
}

/// The `kube-root-ca.crt` ConfigMap of `ns`.
pub fn root_ca_configmap(ns: &str, ca_pem: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": ROOT_CA_CONFIGMAP, "namespace": ns,
                     "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION}},
        "data": {"ca.crt": ca_pem},
    })
}

impl ApiServer {
    /// Create or repair the `kube-root-ca.crt` ConfigMap of `ns` (no-op without a CA).
    pub(crate) async fn publish_root_ca(&self, ns: &str) -> Result<(), k8slite_api::ApiError> {
        let Some(pem) = self.config.cacerts.clone() else {
            return Ok(());
        };
        let reg = self.registry();
        let Some(info) = reg.get("", "v1", "configmaps") else {
            return Ok(());
        };
        let key = info.key(Some(ns), ROOT_CA_CONFIGMAP);
        let internal = |e: StoreError| k8slite_api::ApiError::internal(e.to_string());
        match self.store.get(&key).await.map_err(internal)? {
            Some(kv) => {
                let mut cm = from_stored(&kv)?;
                if cm.pointer("/data/ca.crt").and_then(Value::as_str) == Some(&*pem) {
                    return Ok(());
                }
                cm["data"] = json!({"ca.crt": &*pem});
                meta::metadata_mut(&mut cm).remove("resourceVersion");
                match self
                    .store
                    .update(&key, to_stored(&cm)?, kv.mod_revision)
                    .await
                {
                    Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
                    Err(e) => Err(internal(e)),
                }
            }
            None => {
                let mut cm = root_ca_configmap(ns, &pem);
                crate::strategy::prepare_create(&info, &mut cm, Some(ns))?;
                match self.store.create(&key, to_stored(&cm)?).await {
                    Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(()),
                    Err(e) => Err(internal(e)),
                }
            }
        }
    }

    /// The root-CA publisher: keeps `kube-root-ca.crt` in every active namespace, checking
    /// on every namespace or ConfigMap change and at least every 30 s.
    pub(crate) async fn run_root_ca_publisher(self: Arc<Self>) {
        if self.config.cacerts.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.list_objects("", "v1", "namespaces", None).await {
                Ok(nss) => {
                    for ns in nss.iter().filter(|n| !meta::is_deleting(n)) {
                        if let Err(e) = self.publish_root_ca(meta::name(ns)).await {
                            tracing::warn!(namespace = meta::name(ns), error = %e, "publishing kube-root-ca.crt");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "root-CA publisher: listing namespaces"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_sa_and_volume() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {
            "initContainers": [{"name": "i", "image": "busybox"}],
            "containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "nginx", "volumeMounts": [{"name": "x", "mountPath": "/x"}]}]}});
        admit(&mut pod, None);
        assert_eq!(pod["spec"]["serviceAccountName"], "default");
        let vols = pod["spec"]["volumes"].as_array().expect("volumes");
        assert_eq!(vols.len(), 1);
        let vname = vols[0]["name"].as_str().expect("name");
        assert!(
            vname.starts_with("kube-api-access-") && vname.len() == 21,
            "{vname}"
        );
        assert_eq!(
            vols[0]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
            3607
        );
        assert_eq!(
            vols[0]["projected"]["sources"][1]["configMap"]["name"],
            "kube-root-ca.crt"
        );
        for c in ["initContainers", "containers"] {
            for ct in pod["spec"][c].as_array().expect("containers") {
                let m = ct["volumeMounts"]
                    .as_array()
                    .expect("mounts")
                    .last()
                    .cloned()
                    .expect("mount");
                assert_eq!(
                    m,
                    json!({"name": vname, "readOnly": true, "mountPath": MOUNT_PATH})
                );
            }
        }
    }

    #[test]
    fn automount_opt_out() {
        let mut pod = json!({"spec": {"serviceAccountName": "robot", "automountServiceAccountToken": false, "containers": [{"name": "a"}]}});
        admit(&mut pod, None);
        assert_eq!(pod["spec"]["serviceAccountName"], "robot");
        assert!(pod["spec"].get("volumes").is_none());
        let mut pod = json!({"spec": {"containers": [{"name": "a"}]}});
        admit(
            &mut pod,
            Some(&json!({"automountServiceAccountToken": false})),
        );
        assert!(pod["spec"].get("volumes").is_none());
        // the pod's own setting wins over the service account's
        let mut pod =
            json!({"spec": {"automountServiceAccountToken": true, "containers": [{"name": "a"}]}});
        admit(
            &mut pod,
            Some(&json!({"automountServiceAccountToken": false})),
        );
        assert_eq!(pod["spec"]["volumes"].as_array().map(Vec::len), Some(1));
        // an existing mount at the path is kept and nothing is added
        let mut pod = json!({"spec": {"containers": [{"name": "a", "volumeMounts": [{"name": "own", "mountPath": MOUNT_PATH}]}]}});
        admit(&mut pod, None);
        assert!(pod["spec"].get("volumes").is_none());
    }
}
