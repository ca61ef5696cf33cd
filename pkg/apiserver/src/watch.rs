//! Watch: newline-delimited JSON events over a chunked response.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Response, StatusCode, header};
use k8slite_api::{ApiError, meta};
use k8slite_datastore::{Event, EventKind, ListOptions, Revision, StoreError};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::ApiServer;
use crate::body::{Body, streaming};
use crate::handler::{Output, ResourceRequest};
use crate::list::Selectors;
use crate::objects::from_stored_as;

/// Default and longest watch duration when the client does not ask for less.
const MAX_WATCH: Duration = Duration::from_secs(30 * 60);
/// Events buffered per watch before the client counts as too slow.
const WATCH_BUFFER: usize = 256;

struct Sink {
    tx: mpsc::Sender<Bytes>,
    output: Output,
    first_table: bool,
}

impl ApiServer {
    /// GET with `watch=true`.
    pub(crate) async fn watch(
        self: &Arc<Self>,
        r: &ResourceRequest,
    ) -> Result<Response<Body>, ApiError> {
        let permit = self
            .watches
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::too_many_requests("too many open watches", 1))?;
        let mut sel = Selectors::from_request(r)?;
        if let Some(name) = &r.path.name {
            // /watch/namespaces/x/pods/name (legacy) watches one object.
            sel.fields.0.push(k8slite_api::selector::FieldRequirement {
                path: "metadata.name".into(),
                value: name.clone(),
                negated: false,
            });
        }
        let timeout = r
            .query
            .uint("timeoutSeconds")?
            .map(Duration::from_secs)
            .unwrap_or(MAX_WATCH)
            .min(MAX_WATCH);
        let bookmarks = r.query.flag("allowWatchBookmarks");
        let send_initial = r.query.flag("sendInitialEvents");
        let rv = r
            .query
            .get("resourceVersion")
            .unwrap_or_default()
            .to_string();
        let prefix = r.info.key_prefix_in(r.ns());
        let (tx, rx) = mpsc::channel::<Bytes>(WATCH_BUFFER);
        let mut sink = Sink {
            tx,
            output: r.output,
            first_table: true,
        };

        // Initial state: for "" and "0" (and sendInitialEvents) send the current objects as ADDED.
        let initial = rv.is_empty() || rv == "0" || send_initial;
        let mut start_rev: Revision = if initial {
            0
        } else {
            rv.parse::<Revision>().map_err(|_| {
                ApiError::bad_request(format!("resourceVersion: Invalid value: \"{rv}\""))
            })?
        };
        let mut initial_items = Vec::new();
        if initial {
            let res = self
                .store
                .list(&prefix, ListOptions::default())
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?;
            start_rev = res.revision;
            for kv in &res.items {
                let o = from_stored_as(&r.info, kv)?;
                if sel.matches(&o) {
                    initial_items.push(o);
                }
            }
        }
        let stream = self.store.watch(&prefix, start_rev).await;
        let me = self.clone();
        let info = r.info.clone();
        let req_ctx = r.clone();
        let shutdown = self.shutdown.clone();
        let bookmark_every = self.config.bookmark_interval;
        tokio::spawn(async move {
            let _permit = permit;
            me.metrics.watch_opened();
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            let mut stream = match stream {
                Ok(s) => s,
                Err(StoreError::Expired {
                    requested,
                    compacted,
                }) => {
                    let st = ApiError::gone(format!(
                        "too old resource version: {requested} ({compacted})"
                    ))
                    .to_status();
                    let _ = sink.send(&me, &req_ctx, "ERROR", &st).await;
                    me.metrics.watch_closed();
                    return;
                }
                Err(e) => {
                    let st = ApiError::internal(e.to_string()).to_status();
                    let _ = sink.send(&me, &req_ctx, "ERROR", &st).await;
                    me.metrics.watch_closed();
                    return;
                }
            };
            for o in &initial_items {
                if sink.send(&me, &req_ctx, "ADDED", o).await.is_err() {
                    me.metrics.watch_closed();
                    return;
                }
            }
            if send_initial && bookmarks {
                let bm = bookmark(&info.api_version(), &info.kind, start_rev, true);
                let _ = sink.send_raw("BOOKMARK", &bm).await;
            }
            drop(initial_items);
            let mut last_rev = start_rev;
            let mut ticker = tokio::time::interval(bookmark_every);
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = &mut deadline => break,
                    _ = shutdown.cancelled() => break,
                    _ = sink.tx.closed() => break,
                    _ = ticker.tick(), if bookmarks => {
                        let bm = bookmark(&info.api_version(), &info.kind, last_rev, false);
                        if sink.send_raw("BOOKMARK", &bm).await.is_err() { break; }
                    }
                    batch = stream.next() => {
                        match batch {
                            None => break,
                            Some(Err(StoreError::WatcherLagged)) | Some(Err(StoreError::Closed)) => break,
                            Some(Err(e)) => {
                                let st = ApiError::internal(e.to_string()).to_status();
                                let _ = sink.send(&me, &req_ctx, "ERROR", &st).await;
                                break;
                            }
                            Some(Ok(events)) => {
                                let mut failed = false;
                                for ev in &events {
                                    last_rev = ev.revision();
                                    if let Some((ty, obj)) = translate(ev, &sel, &info)
                                        && sink.send(&me, &req_ctx, ty, &obj).await.is_err()
                                    {
                                        failed = true;
                                        break;
                                    }
                                }
                                if failed { break; }
                            }
                        }
                    }
                }
            }
            me.metrics.watch_closed();
        });
        let body = streaming(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut resp = Response::new(body);
        *resp.status_mut() = StatusCode::OK;
        let ct = if r.output == Output::Yaml {
            "application/yaml"
        } else {
            "application/json"
        };
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, private"),
        );
        Ok(resp)
    }
}

fn bookmark(api_version: &str, kind: &str, rev: Revision, initial_end: bool) -> Value {
    let mut md = json!({"resourceVersion": rev.to_string()});
    if initial_end {
        md["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": kind, "apiVersion": api_version, "metadata": md})
}

/// Watch event type and object for a store event under the selectors (None: not visible).
fn translate(
    ev: &Event,
    sel: &Selectors,
    info: &k8slite_api::ResourceInfo,
) -> Option<(&'static str, Value)> {
    let served = |raw: &[u8]| -> Option<Value> {
        let v: Value = serde_json::from_slice(raw).ok()?;
        Some(
            match k8slite_api::convert::storage_api_version(&info.group, &info.kind) {
                Some(_) => k8slite_api::convert::convert(v, &info.api_version()),
                None => v,
            },
        )
    };
    let mut cur = served(&ev.kv.value)?;
    meta::set_resource_version(&mut cur, ev.kv.mod_revision);
    match ev.kind {
        EventKind::Created => sel.matches(&cur).then_some(("ADDED", cur)),
        EventKind::Deleted => sel.matches(&cur).then_some(("DELETED", cur)),
        EventKind::Updated => {
            let now = sel.matches(&cur);
            let before = match &ev.prev {
                Some(p) if !sel.is_empty() => served(&p.value).is_some_and(|o| sel.matches(&o)),
                _ => now,
            };
            match (before, now) {
                (true, true) => Some(("MODIFIED", cur)),
                (false, true) => Some(("ADDED", cur)),
                (true, false) => {
                    let mut old = ev.prev.as_ref().and_then(|p| served(&p.value))?;
                    meta::set_resource_version(&mut old, ev.kv.mod_revision);
                    Some(("DELETED", old))
                }
                (false, false) => None,
            }
        }
    }
}

impl Sink {
    async fn send(
        &mut self,
        server: &ApiServer,
        r: &ResourceRequest,
        ty: &str,
        obj: &Value,
    ) -> Result<(), ()> {
        let object = match self.output {
            Output::Table(api_version) if ty != "ERROR" => {
                let mut t = server.to_table(r, obj, api_version);
                if !self.first_table {
                    // Like upstream: column definitions only in the first event.
                    t["columnDefinitions"] = Value::Null;
                }
                self.first_table = false;
                t
            }
            Output::Metadata(api_version) if ty != "ERROR" => {
                json!({"kind": "PartialObjectMetadata", "apiVersion": api_version, "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))})
            }
            _ => obj.clone(),
        };
        self.send_raw(ty, &object).await
    }

    async fn send_raw(&mut self, ty: &str, obj: &Value) -> Result<(), ()> {
        let mut line = serde_json::to_vec(&json!({"type": ty, "object": obj})).map_err(|_| ())?;
        line.push(b'\n');
        // A client that does not read is cut off instead of buffering without bound.
        match tokio::time::timeout(Duration::from_secs(30), self.tx.send(Bytes::from(line))).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }
}
