//! CustomResourceDefinitions: status on create, registry rows for served versions, printer
//! columns, and removal of custom objects when their CRD goes.

use std::sync::Arc;

use k8slite_api::registry::{PrinterColumn, ScalePaths, Subresource};
use k8slite_api::table::{self, Column};
use k8slite_api::{Registry, ResourceInfo, STANDARD, meta};
use k8slite_datastore::ListOptions;
use serde_json::{Value, json};

use crate::ApiServer;

/// Conditions and accepted names of a new CRD (names are checked when the registry syncs).
pub(crate) fn prepare(obj: &mut Value) {
    let names = obj.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let stored: Vec<Value> = obj
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .filter_map(|v| v.get("name").cloned())
        .collect();
    let now = meta::now_rfc3339();
    obj["status"] = json!({
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts", "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
        ],
        "acceptedNames": names,
        "storedVersions": stored,
    });
}

/// Registry rows for the served versions of a CRD.
pub(crate) fn rows(crd: &Value) -> Vec<ResourceInfo> {
    let s = |p: &str| {
        crd.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let strings = |p: &str| -> Vec<String> {
        crd.pointer(p)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let group = s("/spec/group");
    let plural = s("/spec/names/plural");
    let kind = s("/spec/names/kind");
    let mut singular = s("/spec/names/singular");
    if singular.is_empty() {
        singular = kind.to_lowercase();
    }
    let namespaced = s("/spec/scope") != "Cluster";
    let mut out = Vec::new();
    for v in crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let version = v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let mut subresources = Vec::new();
        if v.pointer("/subresources/status").is_some() {
            subresources.push(Subresource {
                name: "status".into(),
                kind: kind.clone(),
                group: group.clone(),
                version: version.clone(),
                verbs: vec!["get".into(), "patch".into(), "update".into()],
            });
        }
        let scale = v.pointer("/subresources/scale").map(|sc| ScalePaths {
            spec_replicas: sc
                .get("specReplicasPath")
                .and_then(Value::as_str)
                .unwrap_or(".spec.replicas")
                .to_string(),
            status_replicas: sc
                .get("statusReplicasPath")
                .and_then(Value::as_str)
                .unwrap_or(".status.replicas")
                .to_string(),
            label_selector: sc
                .get("labelSelectorPath")
                .and_then(Value::as_str)
                .map(str::to_string),
        });
        if scale.is_some() {
            subresources.push(Subresource {
                name: "scale".into(),
                kind: "Scale".into(),
                group: "autoscaling".into(),
                version: "v1".into(),
                verbs: vec!["get".into(), "patch".into(), "update".into()],
            });
        }
        let printer_columns = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| PrinterColumn {
                name: c
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                kind: c
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("string")
                    .to_string(),
                json_path: c
                    .get("jsonPath")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                priority: c
                    .get("priority")
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
                    .min(1) as u8,
            })
            .collect();
        out.push(ResourceInfo {
            group: group.clone(),
            version,
            kind: kind.clone(),
            plural: plural.clone(),
            singular: singular.clone(),
            short_names: strings("/spec/names/shortNames"),
            categories: strings("/spec/names/categories"),
            namespaced,
            verbs: STANDARD.iter().map(|v| v.to_string()).collect(),
            subresources,
            storage: format!("{group}/{plural}"),
            stored: true,
            custom: true,
            printer_columns,
            scale,
            schema: v.pointer("/schema/openAPIV3Schema").cloned().map(Arc::new),
        });
    }
    out
}

/// Computes the cells of one table row.
pub(crate) type CellFn = Box<dyn Fn(&Value, jiff::Timestamp) -> Vec<Value> + Send + Sync>;

/// Table columns and a cell function for a resource (custom printer columns for CRs).
pub(crate) fn printer(info: &ResourceInfo, _reg: &Registry) -> (Vec<Column>, CellFn) {
    if !info.custom {
        let (g, k) = (info.group.clone(), info.kind.clone());
        return (
            table::columns(&g, &k),
            Box::new(move |o, now| table::cells(&g, &k, o, now)),
        );
    }
    let mut cols = vec![Column {
        name: "Name".into(),
        kind: "string",
        priority: 0,
    }];
    let pcs = info.printer_columns.clone();
    for c in &pcs {
        let kind: &'static str = match c.kind.as_str() {
            "integer" => "integer",
            "number" => "number",
            "boolean" => "boolean",
            "date" => "date",
            _ => "string",
        };
        cols.push(Column {
            name: c.name.clone(),
            kind,
            priority: c.priority,
        });
    }
    let has_age = pcs.iter().any(|c| c.name.eq_ignore_ascii_case("age"));
    if !has_age {
        cols.push(Column {
            name: "Age".into(),
            kind: "date",
            priority: 0,
        });
    }
    (
        cols,
        Box::new(move |o, now| {
            let mut cells = vec![json!(meta::name(o))];
            for c in &pcs {
                let v = table::simple_json_path(o, &c.json_path);
                cells.push(match (c.kind.as_str(), v) {
                    ("date", Value::String(s)) => match meta::parse_time(&s) {
                        Some(t) => json!(meta::human_duration(std::time::Duration::from_secs(
                            now.duration_since(t).as_secs().max(0) as u64
                        ))),
                        None => json!(s),
                    },
                    (_, Value::Null) => Value::Null,
                    (_, v) => v,
                });
            }
            if !has_age {
                cells.push(json!(meta::age(o, now)));
            }
            cells
        }),
    )
}

impl ApiServer {
    /// Rebuild the custom rows of the registry from the stored CRDs.
    pub(crate) async fn sync_crds(&self) {
        let res = match self
            .store
            .list(
                "/registry/apiextensions.k8s.io/customresourcedefinitions/",
                ListOptions::default(),
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "listing CRDs");
                return;
            }
        };
        let mut reg = Registry::builtin();
        for kv in &res.items {
            let Ok(crd) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            if meta::is_deleting(&crd) {
                continue;
            }
            for row in rows(&crd) {
                if reg
                    .all()
                    .iter()
                    .any(|r| !r.custom && r.group == row.group && r.plural == row.plural)
                {
                    tracing::warn!(group = %row.group, plural = %row.plural, "CRD clashes with a built-in resource; not served");
                    continue;
                }
                reg.upsert(row);
            }
        }
        match self.registry.write() {
            Ok(mut g) => *g = Arc::new(reg),
            Err(p) => *p.into_inner() = Arc::new(reg),
        }
    }

    /// A CRD was deleted: delete its custom objects and stop serving it.
    pub(crate) async fn crd_deleted(&self, crd: &Value) {
        let group = crd
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let plural = crd
            .pointer("/spec/names/plural")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !group.is_empty() && !plural.is_empty() {
            let prefix = format!("/registry/{group}/{plural}/");
            if let Ok(res) = self.store.list(&prefix, ListOptions::default()).await {
                for kv in res.items {
                    if let Err(e) = self.store.delete(&kv.key, None).await {
                        tracing::warn!(key = %kv.key, error = %e, "deleting custom object of a deleted CRD");
                    }
                }
            }
        }
        self.sync_crds().await;
    }
}
