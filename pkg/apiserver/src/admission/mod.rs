//! Admission: the plugins run on create after defaulting (updates that grow usage, like a
//! resized claim, go through LimitRanger and ResourceQuota too), mutating first (ServiceAccount,
//! DefaultTolerationSeconds, Priority, LimitRanger defaults), then validating (Priority,
//! LimitRanger limits, ResourceQuota), like upstream's default plugin order. Each plugin is one
//! module; the pure parts ("given this pod and these LimitRanges, what changes") are functions
//! over JSON with unit tests, the store reads stay here.

use k8slite_api::{ApiError, ResourceInfo, meta};
use serde_json::Value;

use crate::ApiServer;
use crate::objects::from_stored;

pub(crate) mod limitrange;
pub(crate) mod priority;
pub(crate) mod quota;
pub(crate) mod serviceaccount;
pub(crate) mod tolerations;

/// `<resource> "<name>" is forbidden: <why>` (403), the shape of upstream's admission errors.
pub(crate) fn forbidden(info: &ResourceInfo, name: &str, why: impl std::fmt::Display) -> ApiError {
    let gr = if info.group.is_empty() {
        info.plural.clone()
    } else {
        format!("{}.{}", info.plural, info.group)
    };
    let mut e = ApiError::forbidden_msg(format!("{gr} \"{name}\" is forbidden: {why}"));
    e.group = Some(info.group.clone());
    e.kind = Some(info.plural.clone());
    if !name.is_empty() {
        e.name = Some(name.to_string());
    }
    e
}

fn is_core(info: &ResourceInfo, kind: &str) -> bool {
    info.group.is_empty() && info.kind == kind
}

impl ApiServer {
    /// Current objects of `group/version/plural` in `ns` (all namespaces for cluster-scoped).
    pub(crate) async fn list_objects(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        ns: Option<&str>,
    ) -> Result<Vec<Value>, ApiError> {
        let Some(info) = self.registry().get(group, version, plural) else {
            return Ok(Vec::new());
        };
        let prefix = info.key_prefix_in(ns);
        let mut out = Vec::new();
        let mut start_after = None;
        loop {
            let page = self
                .store
                .list(
                    &prefix,
                    k8slite_datastore::ListOptions {
                        limit: Some(1000),
                        start_after: start_after.clone(),
                        skip_count: true,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| ApiError::internal(format!("listing {plural}: {e}")))?;
            let n = page.items.len();
            for kv in &page.items {
                out.push(crate::objects::from_stored_as(&info, kv)?);
            }
            match page.items.last() {
                Some(last) if n >= 1000 => start_after = Some(last.key.clone()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// One object, `None` when absent.
    pub(crate) async fn get_object(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<(Value, i64)>, ApiError> {
        let Some(info) = self.registry().get(group, version, plural) else {
            return Ok(None);
        };
        let kv = self
            .store
            .get(&info.key(ns, name))
            .await
            .map_err(|e| ApiError::internal(format!("reading {plural} {name}: {e}")))?;
        match kv {
            Some(kv) => Ok(Some((from_stored(&kv)?, kv.mod_revision))),
            None => Ok(None),
        }
    }

    /// Mutating admission of an object about to be created (after defaulting).
    pub(crate) async fn admit_create_mutating(
        &self,
        info: &ResourceInfo,
        obj: &mut Value,
    ) -> Result<(), ApiError> {
        let ns = meta::namespace(obj).map(str::to_string);
        if is_core(info, "Pod") {
            let ns = ns.as_deref().unwrap_or("default");
            let sa_name = serviceaccount::service_account_name(obj);
            let sa = self
                .get_object("", "v1", "serviceaccounts", Some(ns), &sa_name)
                .await?
                .map(|(v, _)| v);
            // Like upstream, a pod may not run as a service account that does not exist; the
            // `default` one is let through while the ServiceAccount controller has yet to
            // create it in a new namespace.
            if sa.is_none() && sa_name != "default" {
                return Err(forbidden(
                    info,
                    meta::name(obj),
                    format!(
                        "error looking up service account {ns}/{sa_name}: serviceaccount \"{sa_name}\" not found"
                    ),
                ));
            }
            serviceaccount::admit(obj, sa.as_ref());
            tolerations::admit(
                obj,
                self.config.default_not_ready_toleration_seconds,
                self.config.default_unreachable_toleration_seconds,
            );
            let classes = self
                .list_objects("scheduling.k8s.io", "v1", "priorityclasses", None)
                .await?;
            priority::admit(info, obj, &classes)?;
            let ranges = self.list_objects("", "v1", "limitranges", Some(ns)).await?;
            limitrange::default_pod(obj, &ranges);
            // requests/limits may have changed: recompute the QoS class.
            if let Some(st) = obj.get_mut("status").and_then(Value::as_object_mut) {
                st.remove("qosClass");
            }
            k8slite_api::defaults::apply("", "Pod", obj);
        }
        Ok(())
    }

    /// Validating admission of an object about to be created; charges ResourceQuota usage
    /// unless `dry_run`.
    pub(crate) async fn admit_create_validating(
        &self,
        info: &ResourceInfo,
        obj: &Value,
        dry_run: bool,
    ) -> Result<(), ApiError> {
        let ns = meta::namespace(obj).map(str::to_string);
        if is_core(info, "Pod") || is_core(info, "PersistentVolumeClaim") {
            let ranges = self
                .list_objects("", "v1", "limitranges", ns.as_deref())
                .await?;
            limitrange::validate(info, obj, &ranges)?;
        }
        if info.group == "scheduling.k8s.io" && info.kind == "PriorityClass" {
            let classes = self
                .list_objects("scheduling.k8s.io", "v1", "priorityclasses", None)
                .await?;
            priority::validate_class(info, obj, &classes)?;
        }
        if let Some(ns) = ns.as_deref() {
            self.charge_quota(info, ns, obj, dry_run).await?;
        }
        Ok(())
    }

    /// Validating admission of an update of the main resource: claims stay within the
    /// LimitRanges, and whatever usage grows (a claim resized) is charged to the quotas.
    pub(crate) async fn admit_update_validating(
        &self,
        info: &ResourceInfo,
        old: &Value,
        obj: &Value,
        dry_run: bool,
    ) -> Result<(), ApiError> {
        let Some(ns) = meta::namespace(obj).map(str::to_string) else {
            return Ok(());
        };
        let delta = quota::growth(&quota::usage(info, obj), &quota::usage(info, old));
        if delta.is_empty() {
            return Ok(());
        }
        if is_core(info, "PersistentVolumeClaim") {
            let ranges = self
                .list_objects("", "v1", "limitranges", Some(&ns))
                .await?;
            limitrange::validate(info, obj, &ranges)?;
        }
        self.charge_quota_delta(info, &ns, obj, delta, dry_run)
            .await
    }
}
