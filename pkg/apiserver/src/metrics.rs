//! Prometheus metrics: requests by verb/resource/code with latency, store revision and size,
//! open watches. Label values come from the registry and fixed verb names, so the series count
//! stays bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use http::{Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::ApiServer;
use crate::body::{Body, text_response};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    resource: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    verb: String,
    resource: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    watches: Gauge,
    revision: Gauge,
    compacted: Gauge,
    db_bytes: Gauge,
    keys: Gauge,
    open_watches: Arc<AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<LatencyLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let watches = Gauge::default();
        let revision = Gauge::default();
        let compacted = Gauge::default();
        let db_bytes = Gauge::default();
        let keys = Gauge::default();
        registry.register(
            "apiserver_request",
            "API requests by verb, resource and HTTP code",
            requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "API request latency by verb and resource",
            latency.clone(),
        );
        registry.register(
            "apiserver_registered_watchers",
            "Open watches",
            watches.clone(),
        );
        registry.register(
            "k8slite_store_revision",
            "Current datastore revision",
            revision.clone(),
        );
        registry.register(
            "k8slite_store_compacted_revision",
            "Compacted datastore revision",
            compacted.clone(),
        );
        registry.register(
            "k8slite_store_size_bytes",
            "Datastore size on disk (database + WAL)",
            db_bytes.clone(),
        );
        registry.register(
            "k8slite_store_keys",
            "Objects in the datastore",
            keys.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            watches,
            revision,
            compacted,
            db_bytes,
            keys,
            open_watches: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Count one served request.
    pub fn observe(&self, verb: &str, resource: &str, code: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                verb: verb.to_string(),
                resource: resource.to_string(),
                code: code.to_string(),
            })
            .inc();
        if verb != "watch" {
            self.latency
                .get_or_create(&LatencyLabels {
                    verb: verb.to_string(),
                    resource: resource.to_string(),
                })
                .observe(elapsed.as_secs_f64());
        }
    }

    /// A watch started.
    pub fn watch_opened(&self) {
        let n = self.open_watches.fetch_add(1, Ordering::Relaxed) + 1;
        self.watches.set(n);
    }

    /// A watch ended.
    pub fn watch_closed(&self) {
        let n = self.open_watches.fetch_sub(1, Ordering::Relaxed) - 1;
        self.watches.set(n);
    }

    /// Number of open watches.
    pub fn open_watches(&self) -> i64 {
        self.open_watches.load(Ordering::Relaxed)
    }
}

impl ApiServer {
    pub(crate) async fn metrics_response(&self) -> Response<Body> {
        if let Ok(st) = self.store.stats().await {
            self.metrics.revision.set(st.revision);
            self.metrics.compacted.set(st.compact_revision);
            self.metrics.db_bytes.set(st.size_bytes as i64);
            self.metrics.keys.set(st.keys as i64);
        }
        let mut out = String::new();
        match prometheus_client::encoding::text::encode(&mut out, &self.metrics.registry) {
            Ok(()) => text_response(
                StatusCode::OK,
                out,
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            Err(e) => text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding metrics: {e}"),
                "text/plain",
            ),
        }
    }
}
