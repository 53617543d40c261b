//! glance-api's Prometheus metrics (`GET /metrics`, OpenMetrics text):
//! requests by route and status, latency histograms, Keystone token cache
//! hits, links issued by kind, and the stream nodes' health.
//!
//! Routes are the router's templates (`/v2/images/{id}`), never raw paths,
//! so the label sets stay bounded whatever clients send.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::Shared;

/// Labels of a request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route template, or `unmatched`.
    pub route: String,
    /// The method.
    pub method: String,
    /// The status code.
    pub status: u16,
}

/// Labels of a latency histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route template, or `unmatched`.
    pub route: String,
    /// The method.
    pub method: String,
}

/// One label with a fixed set of values.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `stream` or `direct`; `hit` or `miss`.
    pub kind: &'static str,
}

/// A stream node's name.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    /// The node's name.
    pub node: String,
}

/// Every metric glance-api keeps.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    links: Family<KindLabel, Counter>,
    /// Keystone token validations answered from the cache (`hit`) or by
    /// asking Keystone (`miss`).
    pub token_cache: Family<KindLabel, Counter>,
    node_up: Family<NodeLabel, Gauge>,
    node_eligible: Family<NodeLabel, Gauge>,
    node_drained: Family<NodeLabel, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("glance_api");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "HTTP requests answered", requests.clone());
        // 0.25 ms to about 8 s.
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.000_25, 2.0, 16))) as fn() -> Histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Time from the request to the response head",
            latency.clone(),
        );
        let links = Family::<KindLabel, Counter>::default();
        registry.register(
            "links_issued",
            "Download links issued (307 redirects and the links API), by kind",
            links.clone(),
        );
        let token_cache = Family::<KindLabel, Counter>::default();
        registry.register(
            "token_cache",
            "Keystone token validations: hit (from the cache) or miss (asked Keystone)",
            token_cache.clone(),
        );
        let node_up = Family::<NodeLabel, Gauge>::default();
        registry.register(
            "stream_node_up",
            "1 when the stream node's last health check passed",
            node_up.clone(),
        );
        let node_eligible = Family::<NodeLabel, Gauge>::default();
        registry.register(
            "stream_node_eligible",
            "1 when the stream node takes new downloads",
            node_eligible.clone(),
        );
        let node_drained = Family::<NodeLabel, Gauge>::default();
        registry.register(
            "stream_node_drained",
            "1 when the stream node is drained",
            node_drained.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            links,
            token_cache,
            node_up,
            node_eligible,
            node_drained,
        }
    }

    /// Counts one link issued.
    pub fn link_issued(&self, kind: &'static str) {
        self.links.get_or_create(&KindLabel { kind }).inc();
    }

    /// The text exposition, with the node gauges read from the fleet now.
    pub fn render(&self, state: &Shared) -> String {
        self.node_up.clear();
        self.node_eligible.clear();
        self.node_drained.clear();
        for v in state.fleet.views() {
            let label = NodeLabel { node: v.name };
            let up = v.health == crate::fleet::Health::Up;
            self.node_up.get_or_create(&label).set(i64::from(up));
            self.node_eligible
                .get_or_create(&label)
                .set(i64::from(v.eligible));
            self.node_drained
                .get_or_create(&label)
                .set(i64::from(v.drained));
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        out
    }
}

/// Middleware: counts every request and times it, by route template.
pub async fn track(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // Any method reaches this before authentication: only known ones name
    // a label of their own.
    let method = match req.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS") => m,
        _ => "other",
    }
    .to_owned();
    let start = Instant::now();
    let resp = next.run(req).await;
    let m = &state.metrics;
    m.latency
        .get_or_create(&RouteLabels {
            route: route.clone(),
            method: method.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    m.requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

/// `GET /metrics`.
pub async fn serve(State(state): State<Shared>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(&state),
    )
        .into_response()
}
