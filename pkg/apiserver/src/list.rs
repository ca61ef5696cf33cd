//! Reads: get and list (selectors, pagination, resourceVersion semantics) and the response
//! forms (JSON, YAML, Table, PartialObjectMetadata).

use std::sync::Arc;

use base64::Engine;
use http::{HeaderValue, Response, StatusCode};
use k8slite_api::selector::{FieldSelector, LabelSelector, supported_fields};
use k8slite_api::{ApiError, table};
use k8slite_datastore::{ListOptions, Revision};
use serde_json::{Value, json};

use crate::ApiServer;
use crate::body::{Body, json_bytes};
use crate::handler::{Output, ResourceRequest};
use crate::objects::{from_stored_as, store_err};

/// Items the store returns per scan when filtering by selectors.
const SCAN_PAGE: usize = 500;

/// The selectors of a request.
pub(crate) struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn from_request(r: &ResourceRequest) -> Result<Self, ApiError> {
        Ok(Self {
            labels: LabelSelector::parse(r.query.get("labelSelector").unwrap_or_default())?,
            fields: FieldSelector::parse(
                r.query.get("fieldSelector").unwrap_or_default(),
                supported_fields(&r.info.group, &r.info.kind),
            )?,
        })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches_object(obj) && self.fields.matches_object(obj)
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }
}

fn encode_continue(rev: Revision, start: &str) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": rev, "start": start});
    base64::engine::general_purpose::URL_SAFE.encode(token.to_string())
}

fn decode_continue(token: &str) -> Result<(Revision, String), ApiError> {
    let bad =
        || ApiError::bad_request("continue key is not valid: the continue token is malformed");
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let rv = v.get("rv").and_then(Value::as_i64).ok_or_else(bad)?;
    let start = v
        .get("start")
        .and_then(Value::as_str)
        .ok_or_else(bad)?
        .to_string();
    Ok((rv, start))
}

impl ApiServer {
    /// The object the request's URL names (404 when absent), stored form and decoded.
    pub(crate) async fn load(
        &self,
        r: &ResourceRequest,
    ) -> Result<(k8slite_datastore::KeyValue, Value), ApiError> {
        let key = r.info.key(r.ns(), r.name());
        let kv = self
            .store
            .get(&key)
            .await
            .map_err(|e| store_err(r, r.name(), e))?
            .ok_or_else(|| ApiError::not_found(&r.info.group, &r.info.plural, r.name()))?;
        let obj = from_stored_as(&r.info, &kv)?;
        Ok((kv, obj))
    }

    /// GET one object (or its status).
    pub(crate) async fn get(
        self: &Arc<Self>,
        r: &ResourceRequest,
    ) -> Result<Response<Body>, ApiError> {
        let (_, obj) = self.load(r).await?;
        Ok(self.respond(r, StatusCode::OK, &obj))
    }

    /// Every object matching the request's namespace and selectors, at the current revision.
    pub(crate) async fn select_all(
        &self,
        r: &ResourceRequest,
    ) -> Result<(Vec<Value>, Revision), ApiError> {
        let sel = Selectors::from_request(r)?;
        let prefix = r.info.key_prefix_in(r.ns());
        let res = self
            .store
            .list(&prefix, ListOptions::default())
            .await
            .map_err(|e| store_err(r, "", e))?;
        let mut out = Vec::new();
        for kv in &res.items {
            let o = from_stored_as(&r.info, kv)?;
            if sel.matches(&o) {
                out.push(o);
            }
        }
        Ok((out, res.revision))
    }

    /// GET a collection.
    pub(crate) async fn list(
        self: &Arc<Self>,
        r: &ResourceRequest,
    ) -> Result<Response<Body>, ApiError> {
        let sel = Selectors::from_request(r)?;
        let limit = r
            .query
            .uint("limit")?
            .filter(|l| *l > 0)
            .map(|l| l as usize);
        let prefix = r.info.key_prefix_in(r.ns());
        let rv_param = r.query.get("resourceVersion").unwrap_or_default();
        let rv_match = r.query.get("resourceVersionMatch").unwrap_or_default();
        let (mut revision, mut start_after) = match r
            .query
            .get("continue")
            .filter(|c| !c.is_empty())
        {
            Some(token) => {
                if !rv_param.is_empty() {
                    return Err(ApiError::bad_request(
                        "specifying resource version is not allowed when using continue",
                    ));
                }
                let (rev, start) = decode_continue(token)?;
                (Some(rev), Some(format!("{prefix}{start}")))
            }
            None => {
                let rev = match (rv_param, rv_match) {
                    ("", "") | ("0", "") | ("0", "NotOlderThan") => None,
                    (rv, "Exact") => Some(parse_rv(rv)?),
                    (rv, "" | "NotOlderThan") => {
                        let want = parse_rv(rv)?;
                        let cur = self
                            .store
                            .current_revision()
                            .await
                            .map_err(|e| store_err(r, "", e))?;
                        if want > cur {
                            return Err(ApiError::timeout(format!(
                                "Too large resource version: {want}, current: {cur}"
                            )));
                        }
                        None
                    }
                    (_, other) => {
                        return Err(ApiError::bad_request(format!(
                            "resourceVersionMatch: Unsupported value: \"{other}\": supported values: \"Exact\", \"NotOlderThan\""
                        )));
                    }
                };
                if rv_match == "Exact" && rv_param.is_empty() {
                    return Err(ApiError::bad_request(
                        "resourceVersionMatch is forbidden unless resourceVersion is provided",
                    ));
                }
                (rev, None)
            }
        };
        let mut items = ListItems::new(self, r);
        let mut more_key: Option<String> = None;
        let mut remaining: Option<u64> = None;
        loop {
            let page = match limit {
                Some(l) if sel.is_empty() => l,
                Some(l) => SCAN_PAGE.max(l),
                None => usize::MAX,
            };
            let res = self
                .store
                .list(&prefix, ListOptions {
                    revision,
                    limit: if page == usize::MAX { None } else { Some(page) },
                    start_after: start_after.clone(),
                })
                .await
                .map_err(|e| match e {
                    k8slite_datastore::StoreError::Expired { .. } if r.query.get("continue").is_some() => ApiError::gone(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                    ),
                    other => store_err(r, "", other),
                })?;
            revision = Some(res.revision);
            let n = res.items.len();
            for kv in &res.items {
                if !items.add(kv, &sel, &r.info)? {
                    continue;
                }
                if let Some(l) = limit
                    && items.len() >= l
                {
                    let is_last_scanned = kv.key == res.items[n - 1].key;
                    if !is_last_scanned || res.remaining > 0 {
                        more_key = Some(kv.key.clone());
                        if sel.is_empty() {
                            remaining = Some(res.remaining);
                        }
                    }
                    break;
                }
            }
            if more_key.is_some() || res.remaining == 0 || limit.is_none() {
                break;
            }
            if let Some(l) = limit
                && items.len() >= l
            {
                break;
            }
            start_after = res.items.last().map(|kv| kv.key.clone());
        }
        let rev = revision.unwrap_or(0);
        let mut md = json!({"resourceVersion": rev.to_string()});
        if let Some(k) = &more_key {
            md["continue"] = json!(encode_continue(rev, k.strip_prefix(&prefix).unwrap_or(k)));
            if let Some(n) = remaining {
                md["remainingItemCount"] = json!(n);
            }
        }
        Ok(items.finish(self, r, md))
    }

    /// Encode an object or list in the negotiated form.
    pub(crate) fn respond(
        &self,
        r: &ResourceRequest,
        code: StatusCode,
        v: &Value,
    ) -> Response<Body> {
        self.respond_with_warnings(r, code, v, &[])
    }

    /// [`Self::respond`] with `Warning` headers.
    pub(crate) fn respond_with_warnings(
        &self,
        r: &ResourceRequest,
        code: StatusCode,
        v: &Value,
        warnings: &[String],
    ) -> Response<Body> {
        let mut resp = match r.output {
            Output::Json => json_bytes(
                code,
                serde_json::to_vec(v).unwrap_or_default(),
                "application/json",
            ),
            Output::Yaml => match serde_saphyr::to_string(v) {
                Ok(s) => json_bytes(code, s.into_bytes(), "application/yaml"),
                Err(e) => {
                    crate::body::error_response(&ApiError::internal(format!("encoding YAML: {e}")))
                }
            },
            Output::Table(api_version) => {
                let t = self.to_table(r, v, api_version);
                json_bytes(
                    code,
                    serde_json::to_vec(&t).unwrap_or_default(),
                    "application/json",
                )
            }
            Output::Metadata(api_version) => {
                let m = to_partial(v, api_version);
                json_bytes(
                    code,
                    serde_json::to_vec(&m).unwrap_or_default(),
                    "application/json",
                )
            }
        };
        for w in warnings {
            let text = format!("299 - \"{}\"", w.replace('"', "\\\""));
            if let Ok(h) = HeaderValue::from_str(&text) {
                resp.headers_mut().append("warning", h);
            }
        }
        resp
    }

    /// A Table for an object or list.
    pub(crate) fn to_table(&self, r: &ResourceRequest, v: &Value, api_version: &str) -> Value {
        let rows = TableRows::new(self, r, api_version);
        let now = jiff::Timestamp::now();
        let is_list = v.get("items").is_some_and(Value::is_array);
        let objects: Vec<&Value> = if is_list {
            v.get("items")
                .and_then(Value::as_array)
                .map(|a| a.iter().collect())
                .unwrap_or_default()
        } else {
            vec![v]
        };
        let rows_v: Vec<Value> = objects.iter().map(|o| rows.row(o, now)).collect();
        let mut md = json!({});
        if let Some(m) = v.get("metadata") {
            for f in ["resourceVersion", "continue", "remainingItemCount"] {
                if let Some(x) = m.get(f) {
                    md[f] = x.clone();
                }
            }
        }
        rows.envelope(md, rows_v)
    }
}

/// Builds Table rows one object at a time.
pub(crate) struct TableRows<'a> {
    cols: Vec<table::Column>,
    cells: crate::crd::CellFn,
    include: &'a str,
    api_version: &'a str,
}

impl<'a> TableRows<'a> {
    pub(crate) fn new(server: &ApiServer, r: &'a ResourceRequest, api_version: &'a str) -> Self {
        let (cols, cells) = crate::crd::printer(&r.info, &server.registry());
        let include = r.query.get("includeObject").unwrap_or("Metadata");
        Self {
            cols,
            cells,
            include,
            api_version,
        }
    }

    /// One row for `o`.
    pub(crate) fn row(&self, o: &Value, now: jiff::Timestamp) -> Value {
        let mut row = json!({"cells": (self.cells)(o, now)});
        match self.include {
            "None" => {}
            "Object" => row["object"] = o.clone(),
            _ => row["object"] = partial_object(o, self.api_version),
        }
        row
    }

    /// The Table object around `rows`.
    pub(crate) fn envelope(&self, md: Value, rows: Vec<Value>) -> Value {
        json!({
            "kind": "Table",
            "apiVersion": self.api_version,
            "metadata": md,
            "columnDefinitions": table::column_definitions(&self.cols),
            "rows": rows,
        })
    }
}

/// The items of a list response, kept in the cheapest form for the negotiated output: stored
/// bytes with the resourceVersion spliced in for JSON (no parsing unless selectors need it),
/// Table rows built and the object dropped at once for Tables, objects otherwise.
enum ListItems<'a> {
    Raw(Vec<Vec<u8>>),
    Rows(TableRows<'a>, Vec<Value>, jiff::Timestamp),
    Objects(Vec<Value>),
}

impl<'a> ListItems<'a> {
    fn new(server: &ApiServer, r: &'a ResourceRequest) -> Self {
        match r.output {
            Output::Json => Self::Raw(Vec::new()),
            Output::Table(api_version) => Self::Rows(
                TableRows::new(server, r, api_version),
                Vec::new(),
                jiff::Timestamp::now(),
            ),
            _ => Self::Objects(Vec::new()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Raw(v) => v.len(),
            Self::Rows(_, v, _) => v.len(),
            Self::Objects(v) => v.len(),
        }
    }

    /// Add `kv` if it matches; returns whether it was added.
    fn add(
        &mut self,
        kv: &k8slite_datastore::KeyValue,
        sel: &Selectors,
        info: &k8slite_api::ResourceInfo,
    ) -> Result<bool, ApiError> {
        let stored_as_served = k8slite_api::convert::storage_api_version(&info.group, &info.kind)
            .is_none_or(|sv| sv == info.api_version());
        if let Self::Raw(items) = self
            && sel.is_empty()
            && stored_as_served
            && let Some(b) = crate::objects::splice_rv(&kv.value, kv.mod_revision)
        {
            items.push(b);
            return Ok(true);
        }
        let o = from_stored_as(info, kv)?;
        if !sel.matches(&o) {
            return Ok(false);
        }
        match self {
            Self::Raw(items) => {
                items.push(serde_json::to_vec(&o).map_err(|e| ApiError::internal(e.to_string()))?)
            }
            Self::Rows(rows, out, now) => out.push(rows.row(&o, *now)),
            Self::Objects(items) => items.push(o),
        }
        Ok(true)
    }

    fn finish(self, server: &ApiServer, r: &ResourceRequest, md: Value) -> Response<Body> {
        match self {
            Self::Raw(items) => {
                let head = json!({"kind": r.info.list_kind(), "apiVersion": r.info.api_version(), "metadata": md});
                let mut out = serde_json::to_vec(&head).unwrap_or_default();
                out.pop(); // the closing brace; items follow
                out.extend_from_slice(b",\"items\":[");
                let total: usize = items.iter().map(Vec::len).sum();
                out.reserve(total + items.len() + 2);
                for (i, it) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(it);
                }
                out.extend_from_slice(b"]}");
                json_bytes(StatusCode::OK, out, "application/json")
            }
            Self::Rows(rows, out, _) => {
                let t = rows.envelope(md, out);
                json_bytes(
                    StatusCode::OK,
                    serde_json::to_vec(&t).unwrap_or_default(),
                    "application/json",
                )
            }
            Self::Objects(items) => {
                let list = json!({"kind": r.info.list_kind(), "apiVersion": r.info.api_version(), "metadata": md, "items": items});
                server.respond(r, StatusCode::OK, &list)
            }
        }
    }
}

fn parse_rv(rv: &str) -> Result<Revision, ApiError> {
    rv.parse::<Revision>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "resourceVersion: Invalid value: \"{rv}\": must be a valid resource version"
            ))
        })
}

fn partial_object(o: &Value, api_version: &str) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": api_version, "metadata": o.get("metadata").cloned().unwrap_or(json!({}))})
}

/// PartialObjectMetadata / PartialObjectMetadataList for a full object or list.
fn to_partial(v: &Value, api_version: &str) -> Value {
    if let Some(items) = v.get("items").and_then(Value::as_array) {
        json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": api_version,
            "metadata": v.get("metadata").cloned().unwrap_or(json!({})),
            "items": items.iter().map(|o| partial_object(o, api_version)).collect::<Vec<_>>(),
        })
    } else if v.get("kind").and_then(Value::as_str) == Some("Status") {
        v.clone()
    } else {
        partial_object(v, api_version)
    }
}
