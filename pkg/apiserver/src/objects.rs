//! Writes: create, update, patch, delete, deletecollection, and the scale/binding subresources.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use k8slite_api::{ApiError, managed, meta, smp};
use k8slite_datastore::{KeyValue, StoreError};
use serde_json::{Value, json};

use crate::ApiServer;
use crate::body::Body;
use crate::codec::{MediaType, check_object, decode};
use crate::handler::ResourceRequest;
use crate::strategy;

/// Parse a stored value and set its resourceVersion.
pub(crate) fn from_stored(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut v: Value = serde_json::from_slice(&kv.value).map_err(|e| {
        ApiError::internal(format!("stored object {} is not valid JSON: {e}", kv.key))
    })?;
    meta::set_resource_version(&mut v, kv.mod_revision);
    Ok(v)
}

/// Parse a stored value as the version `info` serves (converting from the storage version
/// where the two differ) and set its resourceVersion.
pub(crate) fn from_stored_as(
    info: &k8slite_api::ResourceInfo,
    kv: &KeyValue,
) -> Result<Value, ApiError> {
    let v = from_stored(kv)?;
    Ok(
        match k8slite_api::convert::storage_api_version(&info.group, &info.kind) {
            Some(_) => k8slite_api::convert::convert(v, &info.api_version()),
            None => v,
        },
    )
}

/// Serialise an object for storage (without resourceVersion).
///
/// The top-level keys are written `apiVersion`, `kind`, `metadata` first, so that lists can
/// put the resourceVersion into the stored bytes without parsing them ([`splice_rv`]).
pub(crate) fn to_stored(obj: &Value) -> Result<Bytes, ApiError> {
    let (api_version, kind) = meta::type_meta(obj);
    let (group, _) = meta::split_api_version(api_version);
    let converted;
    let obj = match k8slite_api::convert::storage_api_version(group, kind) {
        Some(sv) if sv != api_version => {
            converted = k8slite_api::convert::convert(obj.clone(), sv);
            &converted
        }
        _ => obj,
    };
    let Some(src) = obj.as_object() else {
        return Err(ApiError::internal("encoding object: not a JSON object"));
    };
    let mut o = serde_json::Map::with_capacity(src.len());
    for k in ["apiVersion", "kind", "metadata"] {
        if let Some(v) = src.get(k) {
            o.insert(k.to_string(), v.clone());
        }
    }
    for (k, v) in src {
        if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            o.insert(k.clone(), v.clone());
        }
    }
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    serde_json::to_vec(&o)
        .map(Bytes::from)
        .map_err(|e| ApiError::internal(format!("encoding object: {e}")))
}

/// The stored bytes with `metadata.resourceVersion` set to `rev`, without parsing them: the
/// top-level `metadata` object is the first `{` after the outer one (see [`to_stored`]).
/// `None` when the bytes are not laid out that way (the caller parses instead).
pub(crate) fn splice_rv(raw: &[u8], rev: i64) -> Option<Vec<u8>> {
    const KEY: &[u8] = b"\"metadata\":{";
    let pos = raw.windows(KEY.len()).position(|w| w == KEY)?;
    if raw.first() != Some(&b'{') || raw[1..pos].contains(&b'{') {
        return None;
    }
    let at = pos + KEY.len();
    let mut out = Vec::with_capacity(raw.len() + 32);
    out.extend_from_slice(&raw[..at]);
    out.extend_from_slice(format!("\"resourceVersion\":\"{rev}\"").as_bytes());
    if raw.get(at) != Some(&b'}') {
        out.push(b',');
    }
    out.extend_from_slice(&raw[at..]);
    Some(out)
}

/// Map a store error for an object.
pub(crate) fn store_err(r: &ResourceRequest, name: &str, e: StoreError) -> ApiError {
    store_err_for(&r.info, name, e)
}

/// Map a store error for an object of `info`.
pub(crate) fn store_err_for(
    info: &k8slite_api::ResourceInfo,
    name: &str,
    e: StoreError,
) -> ApiError {
    let r = info;
    match e {
        StoreError::AlreadyExists(_) => ApiError::already_exists(&r.group, &r.plural, name),
        StoreError::NotFound(_) => ApiError::not_found(&r.group, &r.plural, name),
        StoreError::Conflict { .. } => ApiError::conflict(
            &r.group,
            &r.plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ),
        StoreError::Expired {
            requested,
            compacted,
        } => ApiError::gone(format!(
            "too old resource version: {requested} ({compacted})"
        )),
        other => ApiError::internal(other.to_string()),
    }
}

/// Outcome of applying a patch body to an object.
fn apply_patch(r: &ResourceRequest, current: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let media = MediaType::from_header(&r.content_type)
        .ok_or_else(|| ApiError::unsupported_media_type(&r.content_type))?;
    match media {
        MediaType::JsonPatch => {
            let patch: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("the JSON patch is malformed: {e}")))?;
            let mut out = current.clone();
            json_patch::patch(&mut out, &patch).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the JSON patch could not be applied: {e}"),
                )
            })?;
            Ok(out)
        }
        MediaType::MergePatch => {
            let patch: Value = decode(body, MediaType::Json)?;
            let mut out = current.clone();
            json_patch::merge(&mut out, &patch);
            Ok(out)
        }
        MediaType::StrategicMergePatch => {
            if r.info.custom {
                return Err(ApiError::unsupported_media_type(&r.content_type));
            }
            let patch: Value = decode(body, MediaType::Json)?;
            smp::apply(current, &patch)
        }
        MediaType::ApplyPatch => {
            // Server-side apply: check ownership, merge the configuration (by the patch merge
            // keys of built-in types, JSON merge for custom resources), drop fields this
            // manager applied before and no longer does, record its new field set.
            let manager = match r.query.get("fieldManager") {
                Some(m) if !m.is_empty() => m.to_string(),
                _ => {
                    return Err(ApiError::invalid(
                        &r.info.group,
                        &r.info.kind,
                        r.name(),
                        vec![k8slite_api::Cause::new(
                            "FieldValueRequired",
                            "fieldManager",
                            "Required value: is required for apply patch",
                        )],
                    ));
                }
            };
            let patch = decode(body, MediaType::ApplyPatch)?;
            let patch = check_object(patch, &r.info.api_version(), &r.info.kind)?;
            let mut entries = managed::read(current);
            let (owned, dropped) = managed::apply_check(
                current,
                &patch,
                &manager,
                r.query.flag("force"),
                &mut entries,
            )?;
            let mut out = if r.info.custom {
                let mut out = current.clone();
                json_patch::merge(&mut out, &patch);
                out
            } else {
                smp::apply(current, &patch)?
            };
            for p in &dropped {
                managed::remove_at(&mut out, p);
            }
            entries.retain(|e| !(e.manager == manager && e.operation == "Apply"));
            entries.push(managed::Entry {
                manager,
                operation: "Apply".into(),
                api_version: r.info.api_version(),
                subresource: r.sub().unwrap_or_default().to_string(),
                fields: owned,
            });
            managed::write(&mut out, &entries, &meta::now_rfc3339());
            Ok(out)
        }
        MediaType::Json | MediaType::Yaml | MediaType::Protobuf => {
            Err(ApiError::unsupported_media_type(&r.content_type))
        }
    }
}

impl ApiServer {
    async fn ensure_namespace_usable(&self, r: &ResourceRequest) -> Result<(), ApiError> {
        let Some(ns) = r.ns() else { return Ok(()) };
        let key = format!("/registry/namespaces/{ns}");
        let kv = self
            .store
            .get(&key)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        match kv {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(kv) => {
                let obj = from_stored(&kv)?;
                if meta::is_deleting(&obj) {
                    Err(ApiError::forbidden_msg(format!(
                        "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        r.info.plural,
                        r.name()
                    )))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// POST: create an object.
    pub(crate) async fn create(
        self: &Arc<Self>,
        r: &ResourceRequest,
        body: Bytes,
    ) -> Result<Response<Body>, ApiError> {
        let media = MediaType::from_header(&r.content_type)
            .filter(|m| {
                matches!(m, MediaType::Json | MediaType::Yaml | MediaType::Protobuf)
                    || (r.applying() && *m == MediaType::ApplyPatch)
            })
            .ok_or_else(|| ApiError::unsupported_media_type(&r.content_type))?;
        let obj = decode(&body, media)?;
        let mut obj = check_object(obj, &r.info.api_version(), &r.info.kind)?;
        let warnings = crate::typed::check_fields(r, &mut obj)?;
        let applied_fields = r.applying().then(|| managed::fields_of(&obj, false));
        strategy::prepare_create(&r.info, &mut obj, r.ns())?;
        self.admit_create_mutating(&r.info, &mut obj).await?;
        strategy::validate(&r.info, &obj, None)?;
        match applied_fields {
            Some(fields) => {
                let e = managed::Entry {
                    manager: r.field_manager(),
                    operation: "Apply".into(),
                    api_version: r.info.api_version(),
                    subresource: String::new(),
                    fields,
                };
                managed::write(&mut obj, &[e], &meta::now_rfc3339());
            }
            None => managed::record_update(
                None,
                &mut obj,
                &r.field_manager(),
                &r.info.api_version(),
                "",
                &meta::now_rfc3339(),
            ),
        }
        let dry_run = r.query.dry_run()?;
        self.ensure_namespace_usable(r).await?;
        let name = meta::name(&obj).to_string();
        let key = r.info.key(r.ns(), &name);
        let _guard = if r.info.kind == "Service" && r.info.group.is_empty() {
            let g = self.allocator.lock.lock().await;
            self.allocate_service(&mut obj, None).await?;
            Some(g)
        } else {
            None
        };
        if r.info.kind == "CustomResourceDefinition" {
            crate::crd::prepare(&mut obj);
        }
        self.admit_create_validating(&r.info, &obj, dry_run).await?;
        if dry_run {
            return Ok(self.respond_with_warnings(r, StatusCode::CREATED, &obj, &warnings));
        }
        let kv = self
            .store
            .create(&key, to_stored(&obj)?)
            .await
            .map_err(|e| store_err(r, &name, e))?;
        meta::set_resource_version(&mut obj, kv.mod_revision);
        if r.info.kind == "CustomResourceDefinition" {
            self.sync_crds().await;
        }
        if r.info.kind == "Namespace"
            && r.info.group.is_empty()
            && let Err(e) = self.publish_root_ca(&name).await
        {
            tracing::warn!(namespace = %name, error = %e, "publishing kube-root-ca.crt");
        }
        Ok(self.respond_with_warnings(r, StatusCode::CREATED, &obj, &warnings))
    }

    /// PUT: replace an object (or its status).
    pub(crate) async fn update(
        self: &Arc<Self>,
        r: &ResourceRequest,
        body: Bytes,
    ) -> Result<Response<Body>, ApiError> {
        let media = MediaType::from_header(&r.content_type)
            .filter(|m| matches!(m, MediaType::Json | MediaType::Yaml | MediaType::Protobuf))
            .ok_or_else(|| ApiError::unsupported_media_type(&r.content_type))?;
        let obj = decode(&body, media)?;
        let mut obj = check_object(obj, &r.info.api_version(), &r.info.kind)?;
        let body_name = meta::name(&obj);
        if body_name != r.name() {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({})",
                r.name()
            )));
        }
        let warnings = crate::typed::check_fields(r, &mut obj)?;
        let (current, _) = self.load(r).await?;
        let rv = meta::resource_version(&obj);
        if !rv.is_empty() && rv != current.mod_revision.to_string() {
            return Err(store_err(
                r,
                r.name(),
                StoreError::Conflict {
                    key: current.key.clone(),
                    expected: rv.parse().unwrap_or(0),
                    current: Box::new(current),
                },
            ));
        }
        self.write_update(r, current, obj, warnings).await
    }

    /// Common tail of update and patch: strategy, validation, no-op detection, store.
    async fn write_update(
        self: &Arc<Self>,
        r: &ResourceRequest,
        current: KeyValue,
        mut obj: Value,
        warnings: Vec<String>,
    ) -> Result<Response<Body>, ApiError> {
        let old = from_stored_as(&r.info, &current)?;
        let sub = r.sub().filter(|s| *s != "finalize");
        let managed_before = meta::metadata(&obj).get("managedFields").cloned();
        strategy::prepare_update(&r.info, &old, &mut obj, sub)?;
        if r.applying() {
            if let Some(m) = managed_before {
                meta::metadata_mut(&mut obj).insert("managedFields".into(), m);
            }
        } else {
            managed::record_update(
                Some(&old),
                &mut obj,
                &r.field_manager(),
                &r.info.api_version(),
                sub.unwrap_or_default(),
                &meta::now_rfc3339(),
            );
        }
        if r.sub() == Some("finalize")
            && let Some(f) = obj.pointer("/spec/finalizers").cloned()
        {
            let mut merged = old.clone();
            merged["spec"]["finalizers"] = f;
            obj = merged;
            meta::metadata_mut(&mut obj).remove("resourceVersion");
        }
        strategy::validate(&r.info, &obj, Some(&old))?;
        let dry_run = r.query.dry_run()?;
        let _guard = if r.info.kind == "Service" && r.info.group.is_empty() {
            let g = self.allocator.lock.lock().await;
            self.allocate_service(&mut obj, Some(&old)).await?;
            Some(g)
        } else {
            None
        };
        let mut old_cmp = old.clone();
        meta::metadata_mut(&mut old_cmp).remove("resourceVersion");
        if obj == old_cmp {
            return Ok(self.respond_with_warnings(r, StatusCode::OK, &old, &warnings));
        }
        // The last finalizer removed from an object being deleted: it goes now.
        if meta::is_deleting(&obj)
            && meta::finalizers(&obj).is_empty()
            && !(r.info.kind == "Namespace" && r.info.group.is_empty())
        {
            if dry_run {
                return Ok(self.respond_with_warnings(r, StatusCode::OK, &obj, &warnings));
            }
            let kv = self
                .store
                .delete(&current.key, Some(current.mod_revision))
                .await
                .map_err(|e| store_err(r, r.name(), e))?;
            meta::set_resource_version(&mut obj, kv.mod_revision);
            return Ok(self.respond_with_warnings(r, StatusCode::OK, &obj, &warnings));
        }
        if dry_run {
            meta::set_resource_version(&mut obj, current.mod_revision);
            return Ok(self.respond_with_warnings(r, StatusCode::OK, &obj, &warnings));
        }
        let kv = self
            .store
            .update(&current.key, to_stored(&obj)?, current.mod_revision)
            .await
            .map_err(|e| store_err(r, r.name(), e))?;
        meta::set_resource_version(&mut obj, kv.mod_revision);
        if r.info.kind == "CustomResourceDefinition" {
            self.sync_crds().await;
        }
        Ok(self.respond_with_warnings(r, StatusCode::OK, &obj, &warnings))
    }

    /// PATCH: JSON patch, merge patch, strategic merge patch, apply patch. Retries on
    /// conflicts with concurrent writers like upstream's GuaranteedUpdate.
    pub(crate) async fn patch(
        self: &Arc<Self>,
        r: &ResourceRequest,
        body: Bytes,
    ) -> Result<Response<Body>, ApiError> {
        let key = r.info.key(r.ns(), r.name());
        for _attempt in 0..8 {
            let current = self
                .store
                .get(&key)
                .await
                .map_err(|e| store_err(r, r.name(), e))?;
            let Some(current) = current else {
                if MediaType::from_header(&r.content_type) == Some(MediaType::ApplyPatch)
                    && r.sub().is_none()
                {
                    // Server-side apply of an object that does not exist creates it.
                    let obj = decode(&body, MediaType::ApplyPatch)?;
                    let mut obj = check_object(obj, &r.info.api_version(), &r.info.kind)?;
                    if meta::name(&obj) != r.name() {
                        return Err(ApiError::bad_request(format!(
                            "the name of the object ({}) does not match the name on the URL ({})",
                            meta::name(&obj),
                            r.name()
                        )));
                    }
                    if let Some(ns) = r.ns() {
                        meta::metadata_mut(&mut obj).insert("namespace".into(), json!(ns));
                    }
                    let bytes =
                        serde_json::to_vec(&obj).map_err(|e| ApiError::internal(e.to_string()))?;
                    return self.create(r, Bytes::from(bytes)).await;
                }
                return Err(ApiError::not_found(&r.info.group, &r.info.plural, r.name()));
            };
            let old = from_stored_as(&r.info, &current)?;
            let patched = apply_patch(r, &old, &body)?;
            let mut patched = check_object(patched, &r.info.api_version(), &r.info.kind)?;
            if meta::name(&patched) != r.name() {
                return Err(ApiError::bad_request(
                    "metadata.name: Invalid value: the name of a patched object cannot change",
                ));
            }
            // A resourceVersion the patch itself sets is a precondition; the one carried over
            // from the stored object is not (without this, patches lost every write race).
            let rv = meta::resource_version(&patched).to_string();
            let rv = if rv == meta::resource_version(&old) {
                String::new()
            } else {
                rv
            };
            if !rv.is_empty() && rv != current.mod_revision.to_string() {
                return Err(store_err(
                    r,
                    r.name(),
                    StoreError::Conflict {
                        key: key.clone(),
                        expected: rv.parse().unwrap_or(0),
                        current: Box::new(current),
                    },
                ));
            }
            let warnings = crate::typed::check_fields(r, &mut patched)?;
            match self.write_update(r, current, patched, warnings).await {
                Err(e) if e.code == 409 && e.reason == "Conflict" && rv.is_empty() => continue,
                other => return other,
            }
        }
        Err(ApiError::conflict(
            &r.info.group,
            &r.info.plural,
            r.name(),
            "too many concurrent writers, try again",
        ))
    }

    /// DELETE of one object, honouring preconditions, finalizers and grace periods.
    pub(crate) async fn delete(
        self: &Arc<Self>,
        r: &ResourceRequest,
        body: Bytes,
    ) -> Result<Response<Body>, ApiError> {
        if r.info.group.is_empty()
            && r.info.plural == "namespaces"
            && matches!(r.name(), "default" | "kube-system" | "kube-public")
        {
            return Err(ApiError::forbidden_msg(format!(
                "namespaces \"{}\" is forbidden: this namespace may not be deleted",
                r.name()
            )));
        }
        let opts = delete_options(r, &body)?;
        let key = r.info.key(r.ns(), r.name());
        let dry_run = r.query.dry_run()?
            || opts
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
        let obj = self.delete_one(&r.info, &key, &opts, dry_run).await?;
        Ok(self.respond(r, StatusCode::OK, &obj))
    }

    /// Delete the object at `key` of resource `info` (shared by DELETE, deletecollection and
    /// namespace finalization).
    pub(crate) async fn delete_one(
        &self,
        info: &k8slite_api::ResourceInfo,
        key: &str,
        opts: &Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let r = info;
        for _attempt in 0..8 {
            let name = key.rsplit('/').next().unwrap_or_default();
            let current = self
                .store
                .get(key)
                .await
                .map_err(|e| store_err_for(r, name, e))?
                .ok_or_else(|| ApiError::not_found(&r.group, &r.plural, name))?;
            let mut obj = from_stored_as(r, &current)?;
            if let Some(pre) = opts.get("preconditions") {
                if let Some(uid) = pre.get("uid").and_then(Value::as_str)
                    && uid != meta::uid(&obj)
                {
                    return Err(ApiError::conflict(
                        &r.group,
                        &r.plural,
                        name,
                        &format!(
                            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                            meta::uid(&obj)
                        ),
                    ));
                }
                if let Some(rv) = pre.get("resourceVersion").and_then(Value::as_str)
                    && rv != current.mod_revision.to_string()
                {
                    return Err(ApiError::conflict(
                        &r.group,
                        &r.plural,
                        name,
                        &format!(
                            "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                            current.mod_revision
                        ),
                    ));
                }
            }
            let is_namespace = r.kind == "Namespace" && r.group.is_empty();
            let graceful_pod = r.kind == "Pod"
                && r.group.is_empty()
                && obj
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .is_some_and(|n| !n.is_empty())
                && !obj
                    .pointer("/status/phase")
                    .and_then(Value::as_str)
                    .is_some_and(|p| p == "Succeeded" || p == "Failed");
            let grace = opts
                .get("gracePeriodSeconds")
                .and_then(Value::as_i64)
                .or_else(|| {
                    obj.pointer("/spec/terminationGracePeriodSeconds")
                        .and_then(Value::as_i64)
                })
                .unwrap_or(30);
            // Foreground/Orphan propagation: the garbage collector's finalizers.
            let gc_changed = !is_namespace && apply_gc_finalizers(&mut obj, opts);
            let defer =
                !meta::finalizers(&obj).is_empty() || is_namespace || (graceful_pod && grace > 0);
            if defer {
                if meta::is_deleting(&obj) && !gc_changed {
                    return Ok(obj);
                }
                let already_deleting = meta::is_deleting(&obj);
                let md = meta::metadata_mut(&mut obj);
                let when = jiff::Timestamp::now()
                    .checked_add(jiff::SignedDuration::from_secs(if graceful_pod {
                        grace
                    } else {
                        0
                    }))
                    .unwrap_or_else(|_| jiff::Timestamp::now());
                if !already_deleting {
                    md.insert("deletionTimestamp".into(), json!(meta::format_time(when)));
                    md.insert(
                        "deletionGracePeriodSeconds".into(),
                        json!(if graceful_pod { grace } else { 0 }),
                    );
                }
                if is_namespace
                    && let Some(st) = obj.get_mut("status").and_then(Value::as_object_mut)
                {
                    st.insert("phase".into(), json!("Terminating"));
                }
                if dry_run {
                    return Ok(obj);
                }
                match self
                    .store
                    .update(key, to_stored(&obj)?, current.mod_revision)
                    .await
                {
                    Ok(kv) => {
                        meta::set_resource_version(&mut obj, kv.mod_revision);
                        return Ok(obj);
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(store_err_for(r, name, e)),
                }
            }
            if dry_run {
                return Ok(obj);
            }
            match self.store.delete(key, Some(current.mod_revision)).await {
                Ok(_) => {
                    if r.kind == "CustomResourceDefinition" {
                        self.crd_deleted(&obj).await;
                    }
                    return Ok(obj);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_err_for(r, name, e)),
            }
        }
        Err(ApiError::conflict(
            &r.group,
            &r.plural,
            key.rsplit('/').next().unwrap_or_default(),
            "too many concurrent writers, try again",
        ))
    }

    /// DELETE of a collection (label/field selectors apply).
    pub(crate) async fn delete_collection(
        self: &Arc<Self>,
        r: &ResourceRequest,
        body: Bytes,
    ) -> Result<Response<Body>, ApiError> {
        let opts = delete_options(r, &body)?;
        let dry_run = r.query.dry_run()?;
        let (items, _rev) = self.select_all(r).await?;
        let mut deleted = Vec::new();
        for item in items {
            let key = r.info.key(meta::namespace(&item), meta::name(&item));
            match self.delete_one(&r.info, &key, &opts, dry_run).await {
                Ok(o) => deleted.push(o),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let list = json!({"kind": r.info.list_kind(), "apiVersion": r.info.api_version(), "metadata": {}, "items": deleted});
        Ok(self.respond(r, StatusCode::OK, &list))
    }

    /// POST pods/binding: set spec.nodeName of an unbound pod.
    pub(crate) async fn bind(
        self: &Arc<Self>,
        r: &ResourceRequest,
        body: Bytes,
    ) -> Result<Response<Body>, ApiError> {
        let b = r.decode_body(&body)?;
        let node = b
            .pointer("/target/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if node.is_empty() {
            return Err(ApiError::invalid(
                "",
                "Binding",
                r.name(),
                vec![k8slite_api::Cause::new(
                    "FieldValueRequired",
                    "target.name",
                    "Required value",
                )],
            ));
        }
        let key = r.info.key(r.ns(), r.name());
        let current = self
            .store
            .get(&key)
            .await
            .map_err(|e| store_err(r, r.name(), e))?
            .ok_or_else(|| ApiError::not_found("", "pods", r.name()))?;
        let mut pod = from_stored(&current)?;
        if pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty())
        {
            return Err(ApiError::conflict(
                "",
                "pods",
                r.name(),
                &format!(
                    "pod {} is already assigned to node {:?}",
                    r.name(),
                    pod.pointer("/spec/nodeName")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                ),
            ));
        }
        pod["spec"]["nodeName"] = json!(node);
        // As upstream's binding: the pod is now scheduled (PodScheduled=True).
        let scheduled = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": meta::now_rfc3339()});
        let conditions = &mut pod["status"]["conditions"];
        match conditions.as_array_mut() {
            Some(list) => {
                list.retain(|c| c["type"] != "PodScheduled");
                list.push(scheduled);
            }
            None => *conditions = json!([scheduled]),
        }
        if r.query.dry_run()? {
            return Ok(crate::body::json_response(
                StatusCode::CREATED,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ));
        }
        self.store
            .update(&key, to_stored(&pod)?, current.mod_revision)
            .await
            .map_err(|e| store_err(r, r.name(), e))?;
        Ok(crate::body::json_response(
            StatusCode::CREATED,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ))
    }
}

/// The garbage collector's finalizers for a delete with `opts`, as upstream's registry sets
/// them: `propagationPolicy=Foreground` adds `foregroundDeletion`, `Orphan` (or the deprecated
/// `orphanDependents: true`) adds `orphan`, an explicit `Background` (or
/// `orphanDependents: false`) removes both. Returns whether the finalizers changed.
fn apply_gc_finalizers(obj: &mut Value, opts: &Value) -> bool {
    const FG: &str = "foregroundDeletion";
    const ORPHAN: &str = "orphan";
    let policy = match opts.get("propagationPolicy").and_then(Value::as_str) {
        Some(p) => Some(p),
        None => match opts.get("orphanDependents").and_then(Value::as_bool) {
            Some(true) => Some("Orphan"),
            Some(false) => Some("Background"),
            None => None,
        },
    };
    let Some(policy) = policy else { return false };
    let before = meta::finalizers(obj);
    let mut after: Vec<String> = before
        .iter()
        .filter(|f| *f != FG && *f != ORPHAN)
        .cloned()
        .collect();
    match policy {
        "Foreground" => after.push(FG.to_string()),
        "Orphan" => after.push(ORPHAN.to_string()),
        _ => {}
    }
    let mut b = before.clone();
    b.sort();
    let mut a = after.clone();
    a.sort();
    if a == b {
        return false;
    }
    let md = meta::metadata_mut(obj);
    if after.is_empty() {
        md.remove("finalizers");
    } else {
        md.insert("finalizers".into(), json!(after));
    }
    true
}

pub(crate) fn delete_options(r: &ResourceRequest, body: &[u8]) -> Result<Value, ApiError> {
    let mut opts = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        let v = r.decode_body(body)?;
        if !v.is_object() {
            return Err(ApiError::bad_request("DeleteOptions must be a JSON object"));
        }
        v
    };
    if let Some(g) = r.query.int("gracePeriodSeconds")? {
        opts["gracePeriodSeconds"] = json!(g);
    }
    if let Some(p) = r.query.get("propagationPolicy") {
        if !matches!(p, "Orphan" | "Background" | "Foreground") {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
            )));
        }
        opts["propagationPolicy"] = json!(p);
    }
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_matches_parse() {
        for obj in [
            json!({"spec": {"template": {"metadata": {"name": "inner"}}}, "kind": "Deployment", "apiVersion": "apps/v1", "metadata": {"name": "d", "labels": {"a": "{\"metadata\":{"}}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}),
        ] {
            let stored = to_stored(&obj).expect("stored");
            let spliced = splice_rv(&stored, 42).expect("laid out for splicing");
            let v: Value = serde_json::from_slice(&spliced).expect("valid JSON");
            let kv = KeyValue {
                key: "k".into(),
                value: stored,
                create_revision: 1,
                mod_revision: 42,
            };
            assert_eq!(v, from_stored(&kv).expect("parsed"));
            assert_eq!(v["metadata"]["resourceVersion"], "42");
        }
        assert!(splice_rv(br#"{"spec":{"metadata":{}},"metadata":{}}"#, 1).is_none());
    }
}
