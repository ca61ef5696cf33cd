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

/// Items per store page when an unlimited list is streamed.
const STREAM_PAGE: usize = 500;

/// The bytes of one list item (`None` when the selectors exclude it): the stored bytes with the
/// resourceVersion spliced in where possible, else the parsed object, or its Table row.
fn item_bytes(
    r: &ResourceRequest,
    kv: &k8slite_datastore::KeyValue,
    sel: &Selectors,
    rows: Option<&TableRows<'_>>,
    now: jiff::Timestamp,
) -> Result<Option<Vec<u8>>, ApiError> {
    let stored_as_served = k8slite_api::convert::storage_api_version(&r.info.group, &r.info.kind)
        .is_none_or(|sv| sv == r.info.api_version());
    if rows.is_none()
        && sel.is_empty()
        && stored_as_served
        && let Some(b) = crate::objects::splice_rv(&kv.value, kv.mod_revision)
    {
        return Ok(Some(b));
    }
    let o = from_stored_as(&r.info, kv)?;
    if !sel.matches(&o) {
        return Ok(None);
    }
    let v = match rows {
        Some(t) => t.row(&o, now),
        None => o,
    };
    serde_json::to_vec(&v)
        .map(Some)
        .map_err(|e| ApiError::internal(e.to_string()))
}

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
        if limit.is_none() && matches!(r.output, Output::Json | Output::Table(_)) {
            return self.stream_list(r, sel, prefix, revision).await;
        }
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
                    skip_count: false,
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
                if !items.add(kv, &sel)? {
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
        Ok(items.finish(self, md))
    }

    /// An unlimited list streamed page by page: the store is read in pages at one revision and
    /// each page goes out as a body chunk, so the server never holds the whole list. The first
    /// page is read before answering, so its errors are still a `Status`; a failure later ends
    /// the body early (the client sees a truncated response and retries).
    async fn stream_list(
        self: &Arc<Self>,
        r: &ResourceRequest,
        sel: Selectors,
        prefix: String,
        revision: Option<Revision>,
    ) -> Result<Response<Body>, ApiError> {
        let page = |revision, start_after| ListOptions {
            revision,
            limit: Some(STREAM_PAGE),
            start_after,
            skip_count: true,
        };
        let first = self
            .store
            .list(&prefix, page(revision, None))
            .await
            .map_err(|e| store_err(r, "", e))?;
        let rev = first.revision;
        let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(2);
        let me = self.clone();
        let req = r.clone();
        tokio::spawn(async move {
            let rows = match req.output {
                Output::Table(api_version) => Some(TableRows::new(&me, &req, api_version)),
                _ => None,
            };
            let now = jiff::Timestamp::now();
            let md = json!({"resourceVersion": rev.to_string()});
            let mut first_item = true;
            let mut chunk = list_head(&req, rows.as_ref(), md);
            let mut res = first;
            loop {
                for kv in &res.items {
                    match item_bytes(&req, kv, &sel, rows.as_ref(), now) {
                        Ok(Some(b)) => {
                            if !first_item {
                                chunk.push(b',');
                            }
                            first_item = false;
                            chunk.extend_from_slice(&b);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e.message, "list stream: bad stored object; ending the response");
                            return;
                        }
                    }
                }
                if tx
                    .send(bytes::Bytes::from(std::mem::take(&mut chunk)))
                    .await
                    .is_err()
                {
                    return;
                }
                if res.remaining == 0 {
                    break;
                }
                let after = res.items.last().map(|kv| kv.key.clone());
                res = match me.store.list(&prefix, page(Some(rev), after)).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "list stream: page failed; ending the response");
                        return;
                    }
                };
            }
            let _ = tx.send(bytes::Bytes::from_static(b"]}")).await;
        });
        let mut resp = Response::new(crate::body::streaming(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(resp)
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

/// The start of a JSON list or Table body, up to the opening `[` of its items/rows.
fn list_head(r: &ResourceRequest, rows: Option<&TableRows<'_>>, md: Value) -> Vec<u8> {
    let mut head = match rows {
        Some(t) => serde_json::to_vec(&t.envelope(md, Vec::new())).unwrap_or_default(),
        None => serde_json::to_vec(&json!({"kind": r.info.list_kind(), "apiVersion": r.info.api_version(), "metadata": md, "items": []}))
            .unwrap_or_default(),
    };
    head.truncate(head.len().saturating_sub(2)); // the empty list's "]}"
    head
}

/// The items of a (limited) list response: encoded one by one for JSON and Tables
/// ([`item_bytes`]), objects for the other outputs.
struct ListItems<'a> {
    r: &'a ResourceRequest,
    rows: Option<TableRows<'a>>,
    encoded: Option<Vec<Vec<u8>>>,
    objects: Vec<Value>,
    now: jiff::Timestamp,
}

impl<'a> ListItems<'a> {
    fn new(server: &ApiServer, r: &'a ResourceRequest) -> Self {
        let (rows, encoded) = match r.output {
            Output::Json => (None, Some(Vec::new())),
            Output::Table(api_version) => (
                Some(TableRows::new(server, r, api_version)),
                Some(Vec::new()),
            ),
            _ => (None, None),
        };
        Self {
            r,
            rows,
            encoded,
            objects: Vec::new(),
            now: jiff::Timestamp::now(),
        }
    }

    fn len(&self) -> usize {
        self.encoded.as_ref().map_or(self.objects.len(), Vec::len)
    }

    /// Add `kv` if it matches; returns whether it was added.
    fn add(&mut self, kv: &k8slite_datastore::KeyValue, sel: &Selectors) -> Result<bool, ApiError> {
        if let Some(encoded) = &mut self.encoded {
            return Ok(
                match item_bytes(self.r, kv, sel, self.rows.as_ref(), self.now)? {
                    Some(b) => {
                        encoded.push(b);
                        true
                    }
                    None => false,
                },
            );
        }
        let o = from_stored_as(&self.r.info, kv)?;
        if !sel.matches(&o) {
            return Ok(false);
        }
        self.objects.push(o);
        Ok(true)
    }

    fn finish(self, server: &ApiServer, md: Value) -> Response<Body> {
        let r = self.r;
        match self.encoded {
            Some(items) => {
                let mut out = list_head(r, self.rows.as_ref(), md);
                out.reserve(items.iter().map(Vec::len).sum::<usize>() + items.len() + 2);
                for (i, it) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(it);
                }
                out.extend_from_slice(b"]}");
                json_bytes(StatusCode::OK, out, "application/json")
            }
            None => {
                let list = json!({"kind": r.info.list_kind(), "apiVersion": r.info.api_version(), "metadata": md, "items": self.objects});
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
