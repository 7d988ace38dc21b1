//! `/metrics`: Prometheus counters, gauges and histograms of ingest, delivery and plugin
//! calls, in the OpenMetrics text format (which Prometheus scrapes natively). One
//! [`Metrics`] per server, passed to the stages that record into it; no global registry.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::store::{DeliveryStatus, QueueDepth};

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    events_ingested: Counter,
    deliveries: Family<Labels, Counter>,
    leases_lost: Counter,
    queue: Family<Labels, Gauge>,
    outcomes_pending: Gauge,
    attempt_seconds: Family<Labels, Histogram>,
    plugin_call_seconds: Family<Labels, Histogram>,
}

/// What [`Metrics::render`] answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("canopy");
        let events_ingested = Counter::default();
        registry.register(
            "events_ingested",
            "Events accepted by POST /v1/events (duplicates not counted)",
            events_ingested.clone(),
        );
        let deliveries = Family::<Labels, Counter>::default();
        registry.register(
            "deliveries",
            "Delivery outcomes after each attempt, by status (succeeded, retrying, failed, exhausted, skipped, paused)",
            deliveries.clone(),
        );
        let leases_lost = Counter::default();
        registry.register(
            "leases_lost",
            "Attempts whose outcome was not recorded: their lease had expired and another worker (or node) had claimed the delivery again",
            leases_lost.clone(),
        );
        let outcomes_pending = Gauge::default();
        registry.register(
            "outcomes_pending",
            "Attempt outcomes waiting to be recorded: queued for the store's next group commit or in its write, their workers not yet answered",
            outcomes_pending.clone(),
        );
        let queue = Family::<Labels, Gauge>::default();
        registry.register(
            "queue_depth",
            "Deliveries waiting: due now, scheduled for later, in flight (held by a worker), paused",
            queue.clone(),
        );
        // HTTP exchanges: 1 ms to 20 s (the default timeout is 10 s).
        let attempt_seconds = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0,
            ])
        });
        registry.register(
            "attempt_duration_seconds",
            "Time from sending a request to reading its response, by plugin",
            attempt_seconds.clone(),
        );
        // Plugin calls: 10 µs to 1 s (the default time limit is 0.5 s).
        let plugin_call_seconds = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.000_01, 0.000_03, 0.000_1, 0.000_3, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0,
            ])
        });
        registry.register(
            "plugin_call_duration_seconds",
            "Time spent in plugin calls, by plugin and call (transform, interpret)",
            plugin_call_seconds.clone(),
        );
        Metrics {
            registry,
            events_ingested,
            deliveries,
            leases_lost,
            queue,
            outcomes_pending,
            attempt_seconds,
            plugin_call_seconds,
        }
    }

    pub fn events_ingested(&self, count: u64) {
        self.events_ingested.inc_by(count);
    }

    pub fn delivery(&self, status: DeliveryStatus) {
        self.deliveries
            .get_or_create(&vec![("status", status.as_str().to_owned())])
            .inc();
    }

    pub fn lease_lost(&self) {
        self.leases_lost.inc();
    }

    pub fn attempt(&self, plugin: &str, duration: Duration) {
        self.attempt_seconds
            .get_or_create(&vec![("plugin", plugin.to_owned())])
            .observe(duration.as_secs_f64());
    }

    pub fn plugin_call(&self, plugin: &str, call: &'static str, duration: Duration) {
        self.plugin_call_seconds
            .get_or_create(&vec![
                ("plugin", plugin.to_owned()),
                ("call", call.to_owned()),
            ])
            .observe(duration.as_secs_f64());
    }

    /// The text exposition, with the queue gauges set to `depth` and the pending outcomes
    /// gauge to `outcomes_pending`.
    pub fn render(&self, depth: QueueDepth, outcomes_pending: u64) -> String {
        self.outcomes_pending.set(outcomes_pending as i64);
        for (state, value) in [
            ("due", depth.due),
            ("scheduled", depth.scheduled),
            ("in_flight", depth.in_flight),
            ("paused", depth.paused),
        ] {
            self.queue
                .get_or_create(&vec![("state", state.to_owned())])
                .set(value as i64);
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}
