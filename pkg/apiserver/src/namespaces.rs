//! Namespace finalization: a namespace being deleted has its objects removed, then goes.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8slite_api::meta;
use k8slite_datastore::ListOptions;
use serde_json::{Value, json};
use tracing::Instrument;

use crate::ApiServer;
use crate::objects::{from_stored, to_stored};

const RESYNC: Duration = Duration::from_secs(5);

/// Run until shutdown: react to namespace changes, and resync periodically.
pub(crate) async fn run_finalizer(server: Arc<ApiServer>) {
    let shutdown = server.shutdown.clone();
    loop {
        let rev = server.store.current_revision().await.unwrap_or(0);
        let mut watch = match server.store.watch("/registry/namespaces/", rev).await {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "namespace finalizer: watch failed; polling");
                None
            }
        };
        finalize_all(&server).await;
        loop {
            let next = async {
                match watch.as_mut() {
                    Some(w) => w.next().await.map(|r| r.is_ok()),
                    None => {
                        tokio::time::sleep(RESYNC).await;
                        Some(true)
                    }
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RESYNC) => finalize_all(&server).await,
                ev = next => match ev {
                    Some(true) => finalize_all(&server).await,
                    _ => break,
                },
            }
        }
    }
}

async fn finalize_all(server: &Arc<ApiServer>) {
    let Ok(res) = server
        .store
        .list("/registry/namespaces/", ListOptions::default())
        .await
    else {
        return;
    };
    for kv in res.items {
        let Ok(ns) = from_stored(&kv) else { continue };
        if meta::is_deleting(&ns) {
            let name = meta::name(&ns).to_string();
            let span = tracing::debug_span!("namespace finalize", namespace = %name);
            if let Err(e) = finalize(server, &name).instrument(span).await {
                tracing::warn!(namespace = %name, error = %e, "namespace finalization failed; will retry");
            }
        }
    }
}

/// Delete everything in namespace `ns`; when nothing is left, drop the `kubernetes`
/// finalizer and delete the namespace.
async fn finalize(server: &Arc<ApiServer>, ns: &str) -> Result<(), k8slite_api::ApiError> {
    let reg = server.registry();
    let mut remaining = 0usize;
    let mut seen_storage = std::collections::HashSet::new();
    for info in reg.all() {
        if !info.namespaced || !info.stored || !seen_storage.insert(info.storage.clone()) {
            continue;
        }
        let prefix = info.key_prefix_in(Some(ns));
        let res = server
            .store
            .list(&prefix, ListOptions::default())
            .await
            .map_err(|e| k8slite_api::ApiError::internal(e.to_string()))?;
        for kv in res.items {
            remaining += 1;
            let opts = json!({"gracePeriodSeconds": 0});
            if let Err(e) = server.delete_one(info, &kv.key, &opts, false).await
                && e.code != 404
            {
                tracing::debug!(key = %kv.key, error = %e, "namespace finalize: delete failed");
            }
        }
    }
    if remaining > 0 {
        // Objects with finalizers may still be there; the next pass checks again.
        let again = count_left(server, ns).await;
        if again > 0 {
            return Ok(());
        }
    }
    let key = format!("/registry/namespaces/{ns}");
    let Some(kv) = server
        .store
        .get(&key)
        .await
        .map_err(|e| k8slite_api::ApiError::internal(e.to_string()))?
    else {
        return Ok(());
    };
    let mut obj = from_stored(&kv)?;
    if let Some(f) = obj
        .pointer_mut("/spec/finalizers")
        .and_then(Value::as_array_mut)
    {
        f.retain(|v| v.as_str() != Some("kubernetes"));
    }
    let spec_empty = obj
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if spec_empty && meta::finalizers(&obj).is_empty() {
        server
            .store
            .delete(&key, Some(kv.mod_revision))
            .await
            .map_err(|e| k8slite_api::ApiError::internal(e.to_string()))?;
        tracing::info!(namespace = %ns, "namespace deleted");
    } else {
        server
            .store
            .update(&key, to_stored(&obj)?, kv.mod_revision)
            .await
            .map_err(|e| k8slite_api::ApiError::internal(e.to_string()))?;
    }
    Ok(())
}

async fn count_left(server: &Arc<ApiServer>, ns: &str) -> u64 {
    let reg = server.registry();
    let mut n = 0;
    for info in reg.all() {
        if info.namespaced && info.stored {
            n += server
                .store
                .count(&info.key_prefix_in(Some(ns)))
                .await
                .unwrap_or(0);
        }
    }
    n
}
