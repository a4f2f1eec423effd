//! One typed event per observable happening. Each `emit` writes the log
//! line and updates the metric together, so logs and dashboards never
//! disagree and call sites stay one line long.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{debug, error, info, warn};

use crate::journal::CommitOutcome;
use crate::model::StreamId;
use crate::telemetry::METRICS;

pub trait InternalEvent {
    fn emit(self);
}

/// A response (or a transport failure: status 0) from a source API.
pub struct SourceRequestCompleted<'a> {
    pub stream: &'a StreamId,
    pub status: u16,
    pub elapsed: Duration,
}

impl InternalEvent for SourceRequestCompleted<'_> {
    fn emit(self) {
        debug!(stream = %self.stream, status = self.status, elapsed_ms = self.elapsed.as_millis() as u64, "source request");
        let [s, t, st] = self.stream.labels();
        METRICS
            .source_requests_total
            .with_label_values(&[s, t, st, &self.status.to_string()])
            .inc();
        METRICS
            .source_request_duration_seconds
            .with_label_values(&[s, t, st])
            .observe(self.elapsed.as_secs_f64());
    }
}

/// The source answered 429 (or 503 with Retry-After).
pub struct RateLimitHit<'a> {
    pub source: &'a str,
    pub tenant: &'a str,
    pub group: &'a str,
    pub retry_after: Option<Duration>,
}

impl InternalEvent for RateLimitHit<'_> {
    fn emit(self) {
        warn!(
            source = self.source,
            tenant = self.tenant,
            group = self.group,
            retry_after_s = self.retry_after.map(|d| d.as_secs_f64()),
            "rate limited by source; holding every request of this group until the penalty passes"
        );
        METRICS
            .source_rate_limit_hits_total
            .with_label_values(&[self.source, self.tenant, self.group])
            .inc();
    }
}

/// Time spent waiting for a rate budget or penalty before sending.
pub struct RateLimitWaited<'a> {
    pub source: &'a str,
    pub tenant: &'a str,
    pub group: &'a str,
    pub waited: Duration,
}

impl InternalEvent for RateLimitWaited<'_> {
    fn emit(self) {
        if self.waited >= Duration::from_secs(5) {
            info!(
                source = self.source,
                tenant = self.tenant,
                group = self.group,
                waited_s = self.waited.as_secs_f64(),
                "waited for rate budget"
            );
        }
        METRICS
            .source_rate_limit_wait_seconds_total
            .with_label_values(&[self.source, self.tenant, self.group])
            .inc_by(self.waited.as_secs_f64());
    }
}

/// A source login / token refresh.
pub struct AuthCompleted<'a> {
    pub source: &'a str,
    pub tenant: &'a str,
    pub how: &'a str,
    /// None = success; Some(reason) = failure (never contains a secret).
    pub failure: Option<&'a str>,
}

impl InternalEvent for AuthCompleted<'_> {
    fn emit(self) {
        let outcome = match self.failure {
            None => {
                debug!(
                    source = self.source,
                    tenant = self.tenant,
                    how = self.how,
                    "authenticated"
                );
                "success"
            }
            Some(reason) => {
                error!(
                    source = self.source,
                    tenant = self.tenant,
                    how = self.how,
                    reason,
                    "authentication failed"
                );
                "failure"
            }
        };
        METRICS
            .auth_refresh_total
            .with_label_values(&[self.source, self.tenant, outcome])
            .inc();
    }
}

/// A page and its checkpoint reached the journal.
pub struct PageCommitted<'a> {
    pub stream: &'a StreamId,
    pub fetched: usize,
    pub outcome: CommitOutcome,
}

impl InternalEvent for PageCommitted<'_> {
    fn emit(self) {
        debug!(stream = %self.stream, fetched = self.fetched, stored = self.outcome.inserted,
               duplicates = self.outcome.duplicates, rejected = self.outcome.rejected, "page committed");
        let l = self.stream.labels();
        METRICS
            .source_events_total
            .with_label_values(&l)
            .inc_by(self.fetched as u64);
        METRICS
            .journal_events_stored_total
            .with_label_values(&l)
            .inc_by(self.outcome.inserted);
        METRICS
            .journal_duplicates_total
            .with_label_values(&l)
            .inc_by(self.outcome.duplicates);
        METRICS
            .source_rejected_records_total
            .with_label_values(&l)
            .inc_by(self.outcome.rejected);
        METRICS
            .source_last_success_timestamp_seconds
            .with_label_values(&l)
            .set(Utc::now().timestamp_millis() as f64 / 1000.0);
    }
}

/// A malformed record was dead-lettered by the source.
pub struct RecordRejected<'a> {
    pub stream: &'a StreamId,
    pub location: &'a str,
    pub reason: &'a str,
}

impl InternalEvent for RecordRejected<'_> {
    fn emit(self) {
        warn!(stream = %self.stream, location = self.location, reason = self.reason, "malformed source record dead-lettered");
    }
}

/// Where a stream stands after a window.
pub struct StreamProgress<'a> {
    pub stream: &'a StreamId,
    pub watermark: DateTime<Utc>,
    /// Seconds before unread records can fall off; None = no known horizon.
    pub headroom: Option<f64>,
    pub saturated: bool,
}

impl InternalEvent for StreamProgress<'_> {
    fn emit(self) {
        let l = self.stream.labels();
        let lag = (Utc::now() - self.watermark).num_milliseconds().max(0) as f64 / 1000.0;
        METRICS.source_lag_seconds.with_label_values(&l).set(lag);
        if let Some(h) = self.headroom {
            METRICS
                .source_horizon_headroom_seconds
                .with_label_values(&l)
                .set(h);
        }
        METRICS
            .source_window_saturated
            .with_label_values(&l)
            .set(i64::from(self.saturated));
    }
}

/// A window fetch failed; the worker retries later.
pub struct StreamFetchFailed<'a> {
    pub stream: &'a StreamId,
    pub class: &'a str,
    pub error: &'a str,
    pub retry_in: Duration,
}

impl InternalEvent for StreamFetchFailed<'_> {
    fn emit(self) {
        warn!(stream = %self.stream, class = self.class, error = self.error, retry_in_s = self.retry_in.as_secs_f64(), "fetch failed; will retry");
        let [s, t, st] = self.stream.labels();
        METRICS
            .source_errors_total
            .with_label_values(&[s, t, st, self.class])
            .inc();
    }
}

/// Records between `from` and `to` fell out of the source's retention
/// before they were read: they are lost for good.
pub struct HorizonGap<'a> {
    pub stream: &'a StreamId,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl InternalEvent for HorizonGap<'_> {
    fn emit(self) {
        error!(stream = %self.stream, lost_from = %self.from, lost_to = %self.to,
               "watermark is older than the source's retention horizon: records in this interval can no longer be read");
        METRICS
            .source_gaps_total
            .with_label_values(&self.stream.labels())
            .inc();
    }
}

/// A window reached the source's record cap: older records may have been
/// evicted before they were read.
pub struct WindowSaturated<'a> {
    pub stream: &'a StreamId,
    pub total_found: u64,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl InternalEvent for WindowSaturated<'_> {
    fn emit(self) {
        error!(stream = %self.stream, total_found = self.total_found, from = %self.from, to = %self.to,
               "window hit the source's record cap: records may have fallen off; shrinking the window");
        METRICS
            .source_window_saturated
            .with_label_values(&self.stream.labels())
            .set(1);
    }
}

/// The journal refused a write because it reached its size limit.
pub struct JournalFull<'a> {
    pub journal: &'a str,
    pub full: bool,
}

impl InternalEvent for JournalFull<'_> {
    fn emit(self) {
        if self.full {
            error!(
                journal = self.journal,
                "journal is full: pulling paused, checkpoints unchanged"
            );
        } else {
            info!(
                journal = self.journal,
                "journal has room again: pulling resumes"
            );
        }
        METRICS
            .journal_full
            .with_label_values(&[self.journal])
            .set(i64::from(self.full));
    }
}

/// A sink confirmed a batch.
pub struct SinkBatchDelivered<'a> {
    pub sink: &'a str,
    pub delivered: u64,
    pub dead: u64,
    pub elapsed: Duration,
}

impl InternalEvent for SinkBatchDelivered<'_> {
    fn emit(self) {
        debug!(
            sink = self.sink,
            delivered = self.delivered,
            dead = self.dead,
            elapsed_ms = self.elapsed.as_millis() as u64,
            "batch delivered"
        );
        METRICS
            .sink_events_total
            .with_label_values(&[self.sink, "delivered"])
            .inc_by(self.delivered);
        METRICS
            .sink_events_total
            .with_label_values(&[self.sink, "dead_lettered"])
            .inc_by(self.dead);
        METRICS
            .sink_request_duration_seconds
            .with_label_values(&[self.sink])
            .observe(self.elapsed.as_secs_f64());
    }
}

/// A sink dead-lettered one event.
pub struct EventDeadLettered<'a> {
    pub sink: &'a str,
    pub key: &'a str,
    pub reason: &'a str,
    /// Short machine reason for the metric label (`invalid_event`, `too_large`...).
    pub code: &'a str,
}

impl InternalEvent for EventDeadLettered<'_> {
    fn emit(self) {
        warn!(
            sink = self.sink,
            event_key = self.key,
            reason = self.reason,
            "event dead-lettered"
        );
        METRICS
            .dead_letters_total
            .with_label_values(&[self.sink, self.code])
            .inc();
    }
}

/// A delivery attempt failed and will be retried.
pub struct SinkDeliveryFailed<'a> {
    pub sink: &'a str,
    pub code: &'a str,
    pub error: &'a str,
    pub retry_in: Duration,
}

impl InternalEvent for SinkDeliveryFailed<'_> {
    fn emit(self) {
        warn!(
            sink = self.sink,
            code = self.code,
            error = self.error,
            retry_in_s = self.retry_in.as_secs_f64(),
            "delivery failed; will retry"
        );
        METRICS
            .sink_errors_total
            .with_label_values(&[self.sink, self.code])
            .inc();
    }
}

/// A sink stopped on a credential or configuration error, or came back.
pub struct SinkHaltChanged<'a> {
    pub sink: &'a str,
    pub reason: Option<&'a str>,
}

impl InternalEvent for SinkHaltChanged<'_> {
    fn emit(self) {
        match self.reason {
            Some(r) => error!(
                sink = self.sink,
                reason = r,
                "sink halted: sources keep pulling into the journal; retrying slowly"
            ),
            None => info!(sink = self.sink, "sink recovered"),
        }
        METRICS
            .sink_halted
            .with_label_values(&[self.sink])
            .set(i64::from(self.reason.is_some()));
    }
}

/// The sink's backlog, after each batch and on every idle tick.
pub struct SinkBacklog<'a> {
    pub sink: &'a str,
    pub depth: u64,
    pub oldest_pending: Option<DateTime<Utc>>,
}

impl InternalEvent for SinkBacklog<'_> {
    fn emit(self) {
        METRICS
            .journal_depth_events
            .with_label_values(&[self.sink])
            .set(self.depth as i64);
        let lag = self
            .oldest_pending
            .map(|t| (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        METRICS
            .sink_lag_seconds
            .with_label_values(&[self.sink])
            .set(lag);
    }
}

/// One alert send (or a skip of one already sent before a restart).
pub struct AlertSendOutcome<'a> {
    pub sink: &'a str,
    pub channel: &'a str,
    /// sent, failed (refused for good), retry (will be tried again),
    /// skipped (sent before a restart), too_old (past max_age; channel "").
    pub outcome: &'a str,
    pub event_key: &'a str,
    pub error: Option<&'a str>,
}

impl InternalEvent for AlertSendOutcome<'_> {
    fn emit(self) {
        match (self.outcome, self.error) {
            ("failed", e) => error!(
                sink = self.sink,
                channel = self.channel,
                event_key = self.event_key,
                error = e.unwrap_or(""),
                "alert refused by the channel; recorded as failed and dead-lettered, other channels continue"
            ),
            ("retry", e) => warn!(
                sink = self.sink,
                channel = self.channel,
                event_key = self.event_key,
                error = e.unwrap_or(""),
                "alert send failed; will retry"
            ),
            ("too_old", _) => debug!(
                sink = self.sink,
                event_key = self.event_key,
                "event older than max_age: no alert"
            ),
            ("skipped", _) => debug!(
                sink = self.sink,
                channel = self.channel,
                event_key = self.event_key,
                "alert already sent before a restart; not sending again"
            ),
            _ => info!(
                sink = self.sink,
                channel = self.channel,
                event_key = self.event_key,
                "alert sent"
            ),
        }
        METRICS
            .alerts_total
            .with_label_values(&[self.sink, self.channel, self.outcome])
            .inc();
    }
}

/// The start-up check of an alert channel (SMS capability, chat exists).
pub struct AlertChannelChecked<'a> {
    pub sink: &'a str,
    pub channel: &'a str,
    pub problem: Option<&'a str>,
}

impl InternalEvent for AlertChannelChecked<'_> {
    fn emit(self) {
        match self.problem {
            Some(p) => error!(
                sink = self.sink,
                channel = self.channel,
                problem = p,
                "alert channel check failed: its sends will fail until the configuration is fixed"
            ),
            None => debug!(
                sink = self.sink,
                channel = self.channel,
                "alert channel checked"
            ),
        }
        METRICS
            .alert_channel_problem
            .with_label_values(&[self.sink, self.channel])
            .set(i64::from(self.problem.is_some()));
    }
}

/// The pipeline opened its journal: its `journal_full` series starts at 0,
/// so dashboards and alerts see the metric before the first pause.
pub struct JournalOpened<'a> {
    pub journal: &'a str,
}

impl InternalEvent for JournalOpened<'_> {
    fn emit(self) {
        METRICS
            .journal_full
            .with_label_values(&[self.journal])
            .set(0);
    }
}

/// A stream worker was started: its counters and the saturation flag are
/// exposed at zero from the start, so `increase()` in alert rules sees the
/// first event and panels show 0 rather than "no data".
pub struct StreamRegistered<'a> {
    pub stream: &'a StreamId,
}

impl InternalEvent for StreamRegistered<'_> {
    fn emit(self) {
        let l = self.stream.labels();
        METRICS.source_events_total.with_label_values(&l).inc_by(0);
        METRICS
            .journal_events_stored_total
            .with_label_values(&l)
            .inc_by(0);
        METRICS
            .journal_duplicates_total
            .with_label_values(&l)
            .inc_by(0);
        METRICS
            .source_rejected_records_total
            .with_label_values(&l)
            .inc_by(0);
        METRICS.source_gaps_total.with_label_values(&l).inc_by(0);
        METRICS.source_window_saturated.with_label_values(&l).set(0);
    }
}

/// A sink worker was started: `sink_halted` and the delivery counters are
/// exposed at zero (and `splunk_pending_acks` for Splunk HEC sinks).
pub struct SinkRegistered<'a> {
    pub sink: &'a str,
    pub kind: &'a str,
}

impl InternalEvent for SinkRegistered<'_> {
    fn emit(self) {
        METRICS.sink_halted.with_label_values(&[self.sink]).set(0);
        for outcome in ["delivered", "dead_lettered"] {
            METRICS
                .sink_events_total
                .with_label_values(&[self.sink, outcome])
                .inc_by(0);
        }
        if self.kind == "splunk_hec" {
            METRICS
                .splunk_pending_acks
                .with_label_values(&[self.sink])
                .set(0);
        }
    }
}

/// The source API refused a window as too long (Symphony's 30-day rule).
/// A client bug: the planner halves the window and goes on.
pub struct SourceWindowTooLarge<'a> {
    pub stream: &'a StreamId,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub message: &'a str,
}

impl InternalEvent for SourceWindowTooLarge<'_> {
    fn emit(self) {
        error!(stream = %self.stream, from = %self.from, to = %self.to,
               days = (self.to - self.from).num_milliseconds() as f64 / 86_400_000.0,
               message = self.message,
               "source refused the window as too long; shrinking it (this is a bug: please report it)");
    }
}

/// A source request failed transiently (429, 5xx, transport) and is retried
/// after `retry_in`.
pub struct SourceRequestRetrying<'a> {
    pub stream: &'a StreamId,
    pub what: &'a str,
    pub status: u16,
    pub attempt: u32,
    pub retry_in: Duration,
}

impl InternalEvent for SourceRequestRetrying<'_> {
    fn emit(self) {
        warn!(stream = %self.stream, request = self.what, status = self.status, attempt = self.attempt,
              retry_in_ms = self.retry_in.as_millis() as u64, "source request failed; retrying");
    }
}

/// A stream's saved in-window cursor could not be used (unreadable, or
/// refused by the server as expired): the walk goes on from an earlier
/// safe point and the journal drops what comes again as duplicates.
pub struct SourceCursorRestarted<'a> {
    pub stream: &'a StreamId,
    pub reason: &'a str,
}

impl InternalEvent for SourceCursorRestarted<'_> {
    fn emit(self) {
        warn!(stream = %self.stream, reason = self.reason,
              "saved cursor unusable; re-reading from an earlier point (duplicates are dropped)");
    }
}

/// A sink re-sent a request (or part of one) inside a delivery: throttled,
/// unprocessed items, a 5xx or a timeout.
pub struct SinkRequestRetried<'a> {
    pub sink: &'a str,
    /// `throttled`, `unprocessed`, `server_error`...
    pub reason: &'a str,
    /// Items the retry re-sends.
    pub items: u64,
    pub detail: &'a str,
    pub retry_in: Duration,
}

impl InternalEvent for SinkRequestRetried<'_> {
    fn emit(self) {
        debug!(
            sink = self.sink,
            reason = self.reason,
            items = self.items,
            detail = self.detail,
            retry_in_ms = self.retry_in.as_millis() as u64,
            "sink request retried"
        );
        METRICS
            .sink_retries_total
            .with_label_values(&[self.sink, self.reason])
            .inc();
        if self.reason == "unprocessed" {
            METRICS
                .sink_unprocessed_items_total
                .with_label_values(&[self.sink])
                .inc_by(self.items);
        }
    }
}

/// Something about a sink's destination an operator should know, that does
/// not stop delivery (e.g. TTL not enabled on a DynamoDB table).
pub struct SinkSetupNotice<'a> {
    pub sink: &'a str,
    pub notice: &'a str,
}

impl InternalEvent for SinkSetupNotice<'_> {
    fn emit(self) {
        warn!(sink = self.sink, notice = self.notice, "sink setup notice");
    }
}

/// A sink created its destination (e.g. a DynamoDB table).
pub struct SinkDestinationCreated<'a> {
    pub sink: &'a str,
    pub what: &'a str,
}

impl InternalEvent for SinkDestinationCreated<'_> {
    fn emit(self) {
        info!(
            sink = self.sink,
            created = self.what,
            "sink destination created"
        );
    }
}

/// One answer from Splunk HEC (status 0 = no answer).
pub struct HecRequestCompleted<'a> {
    pub sink: &'a str,
    pub status: u16,
    pub code: Option<i64>,
    pub elapsed: Duration,
}

impl InternalEvent for HecRequestCompleted<'_> {
    fn emit(self) {
        debug!(
            sink = self.sink,
            status = self.status,
            hec_code = self.code,
            elapsed_ms = self.elapsed.as_millis() as u64,
            "HEC request"
        );
        // Code 5 ("No data") answers the token probe: expected.
        if self.status != 200 && self.code != Some(5) {
            let reason = match self.code {
                Some(9) => "busy",
                Some(8) => "server_error",
                _ if self.status == 413 => "too_large",
                _ if self.status == 429 => "throttled",
                _ if self.status == 0 => "transport",
                _ if self.status >= 500 => "server_error",
                _ => "rejected",
            };
            METRICS
                .sink_retries_total
                .with_label_values(&[self.sink, reason])
                .inc();
        }
    }
}

/// Splunk HEC ackIds sent and not yet confirmed.
pub struct HecAcksPending<'a> {
    pub sink: &'a str,
    pub pending: usize,
}

impl InternalEvent for HecAcksPending<'_> {
    fn emit(self) {
        METRICS
            .splunk_pending_acks
            .with_label_values(&[self.sink])
            .set(self.pending as i64);
    }
}

/// An ack never read true within `ack_timeout` (or its channel vanished,
/// or acks were switched off): the events are sent again.
pub struct HecAckTimedOut<'a> {
    pub sink: &'a str,
    pub ack_id: u64,
    pub first: u64,
    pub last: u64,
    pub outcome: &'a str,
}

impl InternalEvent for HecAckTimedOut<'_> {
    fn emit(self) {
        warn!(
            sink = self.sink,
            ack_id = self.ack_id,
            first_seq = self.first,
            last_seq = self.last,
            outcome = self.outcome,
            "HEC ack not confirmed; the events are sent again (duplicates carry the same fields.event_id)"
        );
        METRICS
            .sink_retries_total
            .with_label_values(&[self.sink, self.outcome])
            .inc();
    }
}

/// An ack poll failed; the next poll tries again.
pub struct HecPollFailed<'a> {
    pub sink: &'a str,
    pub error: &'a str,
    /// Failures in a row so far (logged at the first and every 40th).
    pub in_a_row: u64,
}

impl InternalEvent for HecPollFailed<'_> {
    fn emit(self) {
        if self.in_a_row % 40 == 1 {
            warn!(
                sink = self.sink,
                error = self.error,
                in_a_row = self.in_a_row,
                "HEC ack poll failed"
            );
        } else {
            debug!(
                sink = self.sink,
                error = self.error,
                in_a_row = self.in_a_row,
                "HEC ack poll failed"
            );
        }
        METRICS
            .sink_errors_total
            .with_label_values(&[self.sink, "ack_poll"])
            .inc();
    }
}

/// `ack = "auto"` found the token without indexer acknowledgement.
pub struct HecAckFallback<'a> {
    pub sink: &'a str,
    pub reason: &'a str,
}

impl InternalEvent for HecAckFallback<'_> {
    fn emit(self) {
        warn!(
            sink = self.sink,
            reason = self.reason,
            "indexer acknowledgement unavailable: falling back to plain delivery (a 200 counts as delivered)"
        );
    }
}

/// Acks left pending by a previous process were loaded from the journal.
pub struct HecAcksRecovered<'a> {
    pub sink: &'a str,
    pub count: usize,
}

impl InternalEvent for HecAcksRecovered<'_> {
    fn emit(self) {
        info!(
            sink = self.sink,
            pending = self.count,
            "recovered pending HEC acks of the previous run; querying them before resending"
        );
    }
}

/// A HEC request was split (413, or to isolate a poison event).
pub struct HecBatchSplit<'a> {
    pub sink: &'a str,
    pub reason: &'a str,
    pub events: usize,
}

impl InternalEvent for HecBatchSplit<'_> {
    fn emit(self) {
        info!(
            sink = self.sink,
            reason = self.reason,
            events = self.events,
            "splitting HEC request"
        );
        METRICS
            .sink_retries_total
            .with_label_values(&[self.sink, self.reason])
            .inc();
    }
}

/// TLS verification is off for a sink.
pub struct HecInsecureTls<'a> {
    pub sink: &'a str,
    pub endpoint: &'a str,
}

impl InternalEvent for HecInsecureTls<'_> {
    fn emit(self) {
        error!(
            sink = self.sink,
            endpoint = self.endpoint,
            "insecure_skip_verify = true: the HEC server's TLS certificate is NOT verified; anyone on the path can read the audit events and the token. Use tls_ca_file instead."
        );
    }
}
