//! Writing a batch: encode, de-duplicate keys, chunk (<= 25 items, <= 16 MB),
//! `BatchWriteItem` with unprocessed items and throttles retried, and
//! validation failures isolated item by item with `PutItem`.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};

use super::item::{self, Encoded, Item, PK, SK};
use super::{classify, Class, DynamoSink, Failure};
use crate::internal_events::{InternalEvent, SinkRequestRetried};
use crate::journal::SinkDeadLetter;
use crate::sinks::{Batch, Delivery, SinkError};
use crate::util::backoff_delay;

/// DynamoDB's per-request limits.
pub const MAX_BATCH_ITEMS: usize = 25;
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// One item on its way, with where it came from.
struct Pending {
    seq: u64,
    key: String,
    enc: Encoded,
}

pub(super) async fn deliver(sink: &DynamoSink, batch: &Batch) -> Result<Delivery, SinkError> {
    let layout = sink.layout();
    let mut dead = Vec::new();
    let mut pending: Vec<Pending> = Vec::with_capacity(batch.len());
    // Later records win on a repeated key (same event key → same content).
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    for r in &batch.records {
        let ev = match r.event() {
            Ok(ev) => ev,
            Err(e) => {
                dead.push(SinkDeadLetter {
                    seq: r.seq,
                    key: r.key.clone(),
                    reason: format!("invalid_event: journal payload is not an event: {e}"),
                });
                continue;
            }
        };
        match item::encode(&ev, layout) {
            Ok(enc) => {
                let p = Pending {
                    seq: r.seq,
                    key: r.key.clone(),
                    enc,
                };
                let k = (p.enc.pk.clone(), p.enc.sk.clone());
                match index.get(&k) {
                    Some(&i) => pending[i] = p,
                    None => {
                        index.insert(k, pending.len());
                        pending.push(p);
                    }
                }
            }
            Err(e) => dead.push(SinkDeadLetter {
                seq: r.seq,
                key: r.key.clone(),
                reason: e.to_string(),
            }),
        }
    }
    for chunk in chunks(pending) {
        dead.extend(write_chunk(sink, chunk).await?);
    }
    Ok(Delivery { dead })
}

/// Splits items into request-sized chunks, keeping journal order.
fn chunks(items: Vec<Pending>) -> Vec<Vec<Pending>> {
    let mut out: Vec<Vec<Pending>> = Vec::new();
    let mut bytes = 0usize;
    for p in items {
        let start_new = match out.last() {
            None => true,
            Some(c) => c.len() >= MAX_BATCH_ITEMS || bytes + p.enc.size > MAX_BATCH_BYTES,
        };
        if start_new {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += p.enc.size;
        if let Some(c) = out.last_mut() {
            c.push(p);
        }
    }
    out
}

fn put(item: Item) -> Result<WriteRequest, SinkError> {
    let put = PutRequest::builder()
        .set_item(Some(item))
        .build()
        .map_err(|e| SinkError::retryable("request", format!("building PutRequest: {e}")))?;
    Ok(WriteRequest::builder().put_request(put).build())
}

fn key_of(item: &Item) -> (String, String) {
    let s = |name: &str| match item.get(name) {
        Some(aws_sdk_dynamodb::types::AttributeValue::S(v)) => v.clone(),
        _ => String::new(),
    };
    (s(PK), s(SK))
}

/// A key shortened for a dead-letter reason (keys can be kilobytes).
fn clip(s: &str) -> String {
    const MAX: usize = 100;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

/// Paces the retries of one request.
struct Retry<'a> {
    sink: &'a DynamoSink,
    attempt: u32,
}

impl Retry<'_> {
    /// Waits before the next try, or says it is time to give up.
    async fn wait(&mut self, reason: &str, items: usize, detail: &str) -> bool {
        if self.attempt >= self.sink.settings.max_retries {
            return false;
        }
        let delay = backoff_delay(
            self.attempt,
            self.sink.settings.retry_base_delay.0,
            self.sink.settings.retry_max_delay.0,
        );
        self.attempt += 1;
        SinkRequestRetried {
            sink: &self.sink.name,
            reason,
            items: items as u64,
            detail,
            retry_in: delay,
        }
        .emit();
        tokio::time::sleep(delay).await;
        true
    }
}

fn reason_of(f: &Failure) -> &'static str {
    match f.class {
        Class::Throttle => "throttled",
        _ => "server_error",
    }
}

/// The error handed to the worker for a failure the sink will not (or no
/// longer) retry itself.
fn to_sink_error(sink: &DynamoSink, f: Failure) -> SinkError {
    let table = &sink.settings.table;
    match f.class {
        Class::NotFound => SinkError::halt(
            "table_not_found",
            format!(
                "table `{table}` ({}) not found: {} (create it with partition key `pk` (S) and sort key `sk` (S), or set create_table = true)",
                sink.location(),
                f.message
            ),
        ),
        Class::Auth => SinkError::halt(
            "credentials",
            format!("{} writing to table `{table}`: {}", f.code, f.message),
        ),
        _ => SinkError::retryable(f.code, format!("table `{table}`: {}", f.message)),
    }
}

/// Writes one chunk; returns the items dead-lettered. Fails only when the
/// whole chunk must be retried later (or the sink must halt).
async fn write_chunk(
    sink: &DynamoSink,
    chunk: Vec<Pending>,
) -> Result<Vec<SinkDeadLetter>, SinkError> {
    let table = sink.settings.table.clone();
    let mut origin: HashMap<(String, String), (u64, String)> = HashMap::new();
    let mut requests = Vec::with_capacity(chunk.len());
    for p in chunk {
        origin.insert((p.enc.pk.clone(), p.enc.sk.clone()), (p.seq, p.key));
        requests.push(put(p.enc.item)?);
    }
    let mut retry = Retry { sink, attempt: 0 };
    loop {
        let sent = requests.len();
        let result = sink
            .client
            .batch_write_item()
            .request_items(table.clone(), requests.clone())
            .send()
            .await;
        match result {
            Ok(out) => {
                let unprocessed = out
                    .unprocessed_items
                    .and_then(|mut m| m.remove(&table))
                    .unwrap_or_default();
                if unprocessed.is_empty() {
                    return Ok(Vec::new());
                }
                if unprocessed.len() < sent {
                    // Progress: start the backoff over.
                    retry.attempt = 0;
                }
                let n = unprocessed.len();
                requests = unprocessed;
                let detail = format!("{n} of {sent} items unprocessed");
                if !retry.wait("unprocessed", n, &detail).await {
                    return Err(SinkError::retryable(
                        "unprocessed",
                        format!(
                            "table `{table}`: {n} items still unprocessed after {} retries",
                            sink.settings.max_retries
                        ),
                    ));
                }
            }
            Err(e) => {
                let f = classify(&e);
                match f.class {
                    Class::Throttle | Class::Transient => {
                        if !retry.wait(reason_of(&f), sent, &f.message).await {
                            return Err(to_sink_error(sink, f));
                        }
                    }
                    Class::Validation => {
                        return isolate(sink, requests, &origin).await;
                    }
                    _ => return Err(to_sink_error(sink, f)),
                }
            }
        }
    }
}

/// A chunk was refused as invalid: write its items one by one so only the
/// offending ones are dead-lettered (with DynamoDB's reason).
async fn isolate(
    sink: &DynamoSink,
    requests: Vec<WriteRequest>,
    origin: &HashMap<(String, String), (u64, String)>,
) -> Result<Vec<SinkDeadLetter>, SinkError> {
    let mut dead = Vec::new();
    for req in requests {
        let Some(item) = req.put_request.map(|p| p.item) else {
            continue;
        };
        let k = key_of(&item);
        let mut retry = Retry { sink, attempt: 0 };
        loop {
            let result = sink
                .client
                .put_item()
                .table_name(&sink.settings.table)
                .set_item(Some(item.clone()))
                .send()
                .await;
            match result {
                Ok(_) => break,
                Err(e) => {
                    let f = classify(&e);
                    match f.class {
                        Class::Validation => {
                            let (seq, key) = origin.get(&k).cloned().unwrap_or_default();
                            dead.push(SinkDeadLetter {
                                seq,
                                key,
                                reason: format!(
                                    "validation: {} (pk {}, sk {})",
                                    f.message,
                                    clip(&k.0),
                                    clip(&k.1)
                                ),
                            });
                            break;
                        }
                        Class::Throttle | Class::Transient => {
                            if !retry.wait(reason_of(&f), 1, &f.message).await {
                                return Err(to_sink_error(sink, f));
                            }
                        }
                        _ => return Err(to_sink_error(sink, f)),
                    }
                }
            }
        }
    }
    Ok(dead)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap as Map;

    fn pending(n: usize, size: usize) -> Vec<Pending> {
        (0..n)
            .map(|i| Pending {
                seq: i as u64,
                key: format!("k{i}"),
                enc: Encoded {
                    item: Map::new(),
                    pk: "p".into(),
                    sk: format!("s{i}"),
                    size,
                    compressed: false,
                },
            })
            .collect()
    }

    #[test]
    fn chunks_respect_count_and_bytes() {
        let c = chunks(pending(60, 100));
        assert_eq!(c.iter().map(Vec::len).collect::<Vec<_>>(), vec![25, 25, 10]);
        // Items this large do not exist (400 KB cap); they show the byte cap.
        let c = chunks(pending(25, 1024 * 1024));
        assert_eq!(c.iter().map(Vec::len).collect::<Vec<_>>(), vec![16, 9]);
        assert!(chunks(Vec::new()).is_empty());
    }
}
