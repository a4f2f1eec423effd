//! Every metric trailkeep exposes, in one registry. Labels name streams and
//! sinks by their configured names: never a secret, never a person.

use std::sync::LazyLock;

use prometheus::{
    CounterVec, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

pub const STREAM_LABELS: &[&str] = &["source", "tenant", "stream"];

pub struct Metrics {
    pub registry: Registry,
    pub build_info: IntGaugeVec,
    pub source_lag_seconds: GaugeVec,
    pub source_horizon_headroom_seconds: GaugeVec,
    pub source_window_saturated: IntGaugeVec,
    pub source_requests_total: IntCounterVec,
    pub source_request_duration_seconds: HistogramVec,
    pub source_rate_limit_hits_total: IntCounterVec,
    pub source_rate_limit_wait_seconds_total: CounterVec,
    pub source_events_total: IntCounterVec,
    pub source_rejected_records_total: IntCounterVec,
    pub source_gaps_total: IntCounterVec,
    pub source_errors_total: IntCounterVec,
    pub source_last_success_timestamp_seconds: GaugeVec,
    pub auth_refresh_total: IntCounterVec,
    pub journal_events_stored_total: IntCounterVec,
    pub journal_duplicates_total: IntCounterVec,
    pub journal_depth_events: IntGaugeVec,
    pub journal_full: IntGaugeVec,
    pub sink_events_total: IntCounterVec,
    pub sink_lag_seconds: GaugeVec,
    pub sink_request_duration_seconds: HistogramVec,
    pub sink_errors_total: IntCounterVec,
    pub sink_halted: IntGaugeVec,
    pub sink_retries_total: IntCounterVec,
    pub sink_unprocessed_items_total: IntCounterVec,
    pub splunk_pending_acks: IntGaugeVec,
    pub dead_letters_total: IntCounterVec,
    pub alerts_total: IntCounterVec,
    pub alert_channel_problem: IntGaugeVec,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("trailkeep")
}

macro_rules! reg {
    ($registry:expr, $metric:expr) => {{
        let m = $metric;
        // Registration fails only on a duplicate name, which this single
        // constructor rules out.
        #[allow(clippy::expect_used)]
        $registry
            .register(Box::new(m.clone()))
            .expect("metric names are unique");
        m
    }};
}

#[allow(clippy::expect_used)] // metric definitions are static; a bad one is a bug caught by every test
fn build() -> Metrics {
    let r = Registry::new();
    let latency = vec![
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ];
    let m = Metrics {
        build_info: reg!(r, IntGaugeVec::new(opts("build_info", "Build of the running trailkeep (value 1)."), &["version"]).expect("metric")),
        source_lag_seconds: reg!(r, GaugeVec::new(opts("source_lag_seconds", "Seconds between now and the stream's watermark (end of the last complete window)."), STREAM_LABELS).expect("metric")),
        source_horizon_headroom_seconds: reg!(r, GaugeVec::new(opts("source_horizon_headroom_seconds", "Seconds left before records not yet read can fall out of the source's retention."), STREAM_LABELS).expect("metric")),
        source_window_saturated: reg!(r, IntGaugeVec::new(opts("source_window_saturated", "1 when the last window hit the source's record cap (records may have been evicted)."), STREAM_LABELS).expect("metric")),
        source_requests_total: reg!(r, IntCounterVec::new(opts("source_requests_total", "Requests sent to source APIs, by HTTP status (0 = no response)."), &["source", "tenant", "stream", "status"]).expect("metric")),
        source_request_duration_seconds: reg!(r, HistogramVec::new(HistogramOpts::new("source_request_duration_seconds", "Latency of source API requests.").namespace("trailkeep").buckets(latency.clone()), STREAM_LABELS).expect("metric")),
        source_rate_limit_hits_total: reg!(r, IntCounterVec::new(opts("source_rate_limit_hits_total", "429 answers received from source APIs, by rate-limit group."), &["source", "tenant", "group"]).expect("metric")),
        source_rate_limit_wait_seconds_total: reg!(r, CounterVec::new(opts("source_rate_limit_wait_seconds_total", "Seconds spent waiting on rate budgets and penalties."), &["source", "tenant", "group"]).expect("metric")),
        source_events_total: reg!(r, IntCounterVec::new(opts("source_events_total", "Records fetched from source APIs (before de-duplication)."), STREAM_LABELS).expect("metric")),
        source_rejected_records_total: reg!(r, IntCounterVec::new(opts("source_rejected_records_total", "Malformed source records dead-lettered."), STREAM_LABELS).expect("metric")),
        source_gaps_total: reg!(r, IntCounterVec::new(opts("source_gaps_total", "Intervals lost because they fell out of the source's retention before being read."), STREAM_LABELS).expect("metric")),
        source_errors_total: reg!(r, IntCounterVec::new(opts("source_errors_total", "Failed window fetches, by error class."), &["source", "tenant", "stream", "class"]).expect("metric")),
        source_last_success_timestamp_seconds: reg!(r, GaugeVec::new(opts("source_last_success_timestamp_seconds", "Unix time of the last page committed for the stream."), STREAM_LABELS).expect("metric")),
        auth_refresh_total: reg!(r, IntCounterVec::new(opts("auth_refresh_total", "Source authentications, by outcome (success, failure)."), &["source", "tenant", "outcome"]).expect("metric")),
        journal_events_stored_total: reg!(r, IntCounterVec::new(opts("journal_events_stored_total", "New events stored in the journal."), STREAM_LABELS).expect("metric")),
        journal_duplicates_total: reg!(r, IntCounterVec::new(opts("journal_duplicates_total", "Re-pulled events already in the journal (counted, not stored)."), STREAM_LABELS).expect("metric")),
        journal_depth_events: reg!(r, IntGaugeVec::new(opts("journal_depth_events", "Events in the journal not yet confirmed by the sink."), &["sink"]).expect("metric")),
        journal_full: reg!(r, IntGaugeVec::new(opts("journal_full", "1 while the journal is at its size limit and pulling is paused."), &["journal"]).expect("metric")),
        sink_events_total: reg!(r, IntCounterVec::new(opts("sink_events_total", "Events handled by sinks, by outcome (delivered, dead_lettered)."), &["sink", "outcome"]).expect("metric")),
        sink_lag_seconds: reg!(r, GaugeVec::new(opts("sink_lag_seconds", "Age of the oldest event the sink has not confirmed yet (0 when caught up)."), &["sink"]).expect("metric")),
        sink_request_duration_seconds: reg!(r, HistogramVec::new(HistogramOpts::new("sink_request_duration_seconds", "Time to deliver one batch, confirmation included.").namespace("trailkeep").buckets(latency), &["sink"]).expect("metric")),
        sink_errors_total: reg!(r, IntCounterVec::new(opts("sink_errors_total", "Failed sink deliveries, by error code."), &["sink", "code"]).expect("metric")),
        sink_halted: reg!(r, IntGaugeVec::new(opts("sink_halted", "1 while the sink is halted on a credential or configuration error."), &["sink"]).expect("metric")),
        sink_retries_total: reg!(r, IntCounterVec::new(opts("sink_retries_total", "Retried sink requests, by reason (throttled, unprocessed, busy, ...)."), &["sink", "reason"]).expect("metric")),
        sink_unprocessed_items_total: reg!(r, IntCounterVec::new(opts("sink_unprocessed_items_total", "Items a destination returned unprocessed (DynamoDB UnprocessedItems) and the sink re-sent."), &["sink"]).expect("metric")),
        splunk_pending_acks: reg!(r, IntGaugeVec::new(opts("splunk_pending_acks", "Splunk HEC ackIds sent and not yet confirmed."), &["sink"]).expect("metric")),
        dead_letters_total: reg!(r, IntCounterVec::new(opts("dead_letters_total", "Events a sink gave up on and dead-lettered, by reason."), &["sink", "reason"]).expect("metric")),
        alerts_total: reg!(r, IntCounterVec::new(opts("alerts_total", "Alert sends by channel and outcome (sent, failed = refused for good and dead-lettered, retry = will be tried again, skipped = already sent before a restart, too_old = event past max_age, channel empty)."), &["sink", "channel", "outcome"]).expect("metric")),
        alert_channel_problem: reg!(r, IntGaugeVec::new(opts("alert_channel_problem", "1 when the start-up check of an alert channel found a problem (from number not SMS-capable, chat not found)."), &["sink", "channel"]).expect("metric")),
        registry: r,
    };
    m.build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    m
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(build);

/// Text exposition of every metric.
pub fn render() -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    let enc = prometheus::TextEncoder::new();
    if let Err(e) = enc.encode(&METRICS.registry.gather(), &mut buf) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    String::from_utf8(buf).unwrap_or_default()
}
