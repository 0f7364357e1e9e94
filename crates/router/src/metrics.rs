//! The router's Prometheus metrics (names in docs/METRICS.md, "Router").
//! Each route's counters and its service's histogram are looked up once,
//! when the routing table is built, so a request only bumps atomics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The Prometheus text format, version 0.0.4 (as the server and agents
/// serve it).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    service: String,
    route: String,
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    service: String,
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: &'static str,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Every corral histogram's layout (docs/METRICS.md): powers of two
/// microseconds, 128 µs to about 67 s.
fn histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000128, 2.0, 20,
    ))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<ServiceLabels, Histogram, fn() -> Histogram>,
    upstream_errors: Family<UpstreamLabels, Counter>,
    retries: Family<ServiceLabels, Counter>,
    ejections: Family<ServiceLabels, Counter>,
    connections: Family<ProtocolLabels, Gauge>,
    pub catalog_index: Gauge,
    pub catalog_updates: Counter,
    pub catalog_errors: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// The handles one route bumps.
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    by_class: [Counter; 5],
    duration: Histogram,
}

impl RouteMetrics {
    pub fn observe(&self, status: u16, seconds: f64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].inc();
        self.duration.observe(seconds);
    }
}

/// The handles one service bumps on endpoint trouble.
#[derive(Debug, Clone)]
pub struct ServiceMetrics {
    pub retries: Counter,
    pub ejections: Counter,
    service: String,
    errors: Family<UpstreamLabels, Counter>,
}

impl ServiceMetrics {
    pub fn upstream_error(&self, kind: &'static str) {
        self.errors
            .get_or_create(&UpstreamLabels {
                service: self.service.clone(),
                kind,
            })
            .inc();
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let duration: Family<ServiceLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(histogram);
        let upstream_errors = Family::<UpstreamLabels, Counter>::default();
        let retries = Family::<ServiceLabels, Counter>::default();
        let ejections = Family::<ServiceLabels, Counter>::default();
        let connections = Family::<ProtocolLabels, Gauge>::default();
        let catalog_index = Gauge::default();
        let catalog_updates = Counter::default();
        let catalog_errors = Counter::default();
        registry.register(
            "corral_router_requests",
            "HTTP requests answered, by service, route and status class (unrouted: service and route empty)",
            requests.clone(),
        );
        registry.register(
            "corral_router_request_duration_seconds",
            "Time from a request's head to its response's head, by service",
            duration.clone(),
        );
        registry.register(
            "corral_router_upstream_errors",
            "Failed attempts to get a response from an endpoint, by service and kind (connect, connect_timeout, timeout, protocol)",
            upstream_errors.clone(),
        );
        registry.register(
            "corral_router_retries",
            "Requests retried on another endpoint after a connect failure",
            retries.clone(),
        );
        registry.register(
            "corral_router_endpoint_ejections",
            "Endpoints taken out of rotation by passive health checking",
            ejections.clone(),
        );
        registry.register(
            "corral_router_active_connections",
            "Client connections open now, by protocol (http, tcp)",
            connections.clone(),
        );
        registry.register(
            "corral_router_catalog_index",
            "Index of the service catalog the routing table was built from",
            catalog_index.clone(),
        );
        registry.register(
            "corral_router_catalog_updates",
            "Routing tables built from a new catalog",
            catalog_updates.clone(),
        );
        registry.register(
            "corral_router_catalog_errors",
            "Failed catalog queries (retried with backoff)",
            catalog_errors.clone(),
        );
        Metrics {
            registry,
            requests,
            duration,
            upstream_errors,
            retries,
            ejections,
            connections,
            catalog_index,
            catalog_updates,
            catalog_errors,
        }
    }

    pub fn route(&self, service: &str, route: &str) -> RouteMetrics {
        let by_class = CLASSES.map(|code| {
            self.requests
                .get_or_create(&RequestLabels {
                    service: service.to_string(),
                    route: route.to_string(),
                    code,
                })
                .clone()
        });
        let duration = self
            .duration
            .get_or_create(&ServiceLabels {
                service: service.to_string(),
            })
            .clone();
        RouteMetrics { by_class, duration }
    }

    pub fn service(&self, service: &str) -> ServiceMetrics {
        let labels = ServiceLabels {
            service: service.to_string(),
        };
        ServiceMetrics {
            retries: self.retries.get_or_create(&labels).clone(),
            ejections: self.ejections.get_or_create(&labels).clone(),
            service: service.to_string(),
            errors: self.upstream_errors.clone(),
        }
    }

    /// The gauge of open client connections of one protocol.
    pub fn connections(&self, protocol: &'static str) -> Gauge {
        self.connections
            .get_or_create(&ProtocolLabels { protocol })
            .clone()
    }

    /// Everything, in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Counts an open connection until dropped.
pub struct ConnectionGauge(Gauge);

impl ConnectionGauge {
    pub fn open(g: &Gauge) -> Self {
        g.inc();
        ConnectionGauge(g.clone())
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_documented_and_counted_where_it_belongs() {
        let doc = include_str!("../../../docs/METRICS.md");
        let m = Metrics::new();
        m.route("web", "web.localhost/").observe(204, 0.01);
        let s = m.service("web");
        s.upstream_error("connect");
        s.retries.inc();
        s.ejections.inc();
        let _open = ConnectionGauge::open(&m.connections("http"));
        let text = m.encode();
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        assert_eq!(names.len(), 9, "{text}");
        for n in names {
            assert!(
                doc.contains(&format!("`{n}`")),
                "{n} is not in docs/METRICS.md"
            );
        }
        assert!(text.contains(
            "corral_router_requests_total{service=\"web\",route=\"web.localhost/\",code=\"2xx\"} 1\n"
        ));
        assert!(text.contains("corral_router_active_connections{protocol=\"http\"} 1\n"));
        assert!(text.contains(
            "corral_router_request_duration_seconds_bucket{service=\"web\",le=\"0.016384\"} 1\n"
        ));
    }
}
