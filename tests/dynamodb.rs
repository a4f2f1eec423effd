//! The DynamoDB sink against a real DynamoDB implementation (dynalite,
//! installed by scripts/ci/install-dynalite.sh), with a fault-injecting
//! proxy in between where dynalite cannot produce the fault.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dynamodb_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use dynamodb_support::*;
use trailkeep::model::{event_key, AuditEvent};
use trailkeep::sinks::dynamodb::{run_query, QueryParams};
use trailkeep::sinks::{Batch, SinkError, SinkWorker};
use trailkeep::telemetry::{Health, METRICS};

const LIMIT: Duration = Duration::from_secs(60);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 20, 8, 0, 0).unwrap()
}

fn keys_in(items: &[std::collections::HashMap<String, AttributeValue>]) -> Vec<String> {
    let mut k: Vec<String> = items.iter().map(|i| s_attr(i, "event_id")).collect();
    k.sort();
    k
}

fn keys_of(events: &[AuditEvent]) -> Vec<String> {
    let mut k: Vec<String> = events.iter().map(|e| e.key.clone()).collect();
    k.sort();
    k
}

/// Alphanumeric filler that neither JSON escaping nor gzip can shrink.
fn noise(len: usize, seed: u64) -> String {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let c = (x % 62) as u8;
            char::from(match c {
                0..=9 => b'0' + c,
                10..=35 => b'a' + c - 10,
                _ => b'A' + c - 36,
            })
        })
        .collect()
}

// 1. ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_journal_events_land_once_and_replay_keeps_the_count() {
    let env = env();
    let table = table_name("e2e");
    let endpoint = dynalite().endpoint();
    let extra = "create_table = true\nretention = \"7y\"\nbatch_size = 40";
    let mut all = events(
        "ringcentral",
        "acme",
        180,
        t0(),
        Duration::from_secs(600),
        &["ann", "bob"],
    );
    all.extend(events(
        "vbrick",
        "acme-video",
        120,
        t0(),
        Duration::from_secs(900),
        &["cid"],
    ));
    commit(&env.journal, &all);
    // The same window pulled again: the journal keeps one row per key.
    commit(&env.journal, &all);
    assert_eq!(env.journal.max_seq().unwrap(), 300);

    let sink = env.sink("ddb", &table, &endpoint, extra).await;
    drain(&env, sink, LIMIT).await;
    let client = direct_client().await;
    let first = scan(&client, &table).await;
    assert_eq!(first.len(), 300, "one item per event key");
    assert_eq!(keys_in(&first), keys_of(&all));
    for item in &first {
        let key = s_attr(item, "event_id");
        let ev = all.iter().find(|e| e.key == key).unwrap();
        assert_eq!(s_attr(item, "pk"), format!("{}#{}", ev.source, ev.tenant));
        assert!(s_attr(item, "sk").starts_with(&trailkeep::util::rfc3339_ms(ev.time)));
        let expires = match item.get("expires_at") {
            Some(AttributeValue::N(n)) => n.parse::<i64>().unwrap(),
            other => panic!("expires_at: {other:?}"),
        };
        assert_eq!(expires, ev.time.timestamp() + 7 * 365 * 86_400);
    }

    // Replay: a second cursor over the same journal delivers everything
    // again into the same table.
    let replay = env.sink("ddb-replay", &table, &endpoint, extra).await;
    drain(&env, replay, LIMIT).await;
    let second = scan(&client, &table).await;
    assert_eq!(second.len(), 300, "replay must not add items");
    let by_key = |items: &[std::collections::HashMap<String, AttributeValue>]| {
        items
            .iter()
            .map(|i| {
                (
                    s_attr(i, "event_id"),
                    format!("{:?}", BTreeMap::from_iter(i.iter())),
                )
            })
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(
        by_key(&first),
        by_key(&second),
        "replayed items are identical"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_demo_ringcentral_events_land_once_per_key_and_a_replayed_window_keeps_the_count() {
    let (sim, handle) = rc_sim(600).await;
    let endpoint = dynalite().endpoint();
    let table = table_name("demo");
    let env1 = env();
    let cfg = env1.config(&format!(
        "{}{}",
        rc_source_toml(env1.dir.path(), &handle.url()),
        env1.sink_toml(
            "ddb",
            &table,
            &endpoint,
            "create_table = true\nretention = \"7y\""
        )
    ));
    run_pipeline(cfg, &env1.journal, LIMIT).await;
    let mut keys = env1.journal.event_keys().unwrap();
    keys.sort();
    assert_eq!(
        keys.len(),
        sim.visible_ids().len(),
        "every simulator record pulled"
    );
    let client = direct_client().await;
    let first = scan(&client, &table).await;
    assert_eq!(first.len(), keys.len(), "one item per event key");
    assert_eq!(keys_in(&first), keys);

    // Replay: another deployment (fresh journal) pulls the same window
    // again and writes it into the same table.
    let env2 = env();
    let cfg = env2.config(&format!(
        "{}{}",
        rc_source_toml(env2.dir.path(), &handle.url()),
        env2.sink_toml("ddb", &table, &endpoint, "")
    ));
    run_pipeline(cfg, &env2.journal, LIMIT).await;
    let mut again = env2.journal.event_keys().unwrap();
    again.sort();
    assert_eq!(again, keys, "the replay pulled the same events");
    let second = scan(&client, &table).await;
    assert_eq!(
        second.len(),
        keys.len(),
        "replay leaves the item count unchanged"
    );
    assert_eq!(keys_in(&second), keys);
}

// 2. ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_with_repeated_keys_26_plus_items_and_items_near_and_over_400kb() {
    let env = env();
    let table = table_name("edges");
    create_via_sink(&env, &table).await;
    let proxy = proxy().await;
    let sink = env
        .sink("edges", &table, &proxy.endpoint(), "batch_size = 500")
        .await;
    sink.start(&env.ctx("edges")).await.unwrap();
    let client = direct_client().await;

    // (a) One delivery with repeated keys: the journal never repeats a key,
    // but a sink must not depend on it (DynamoDB rejects a whole request
    // holding two writes to one key).
    let evs = events(
        "ringcentral",
        "repeat",
        40,
        t0(),
        Duration::from_secs(60),
        &["ann"],
    );
    commit(&env.journal, &evs);
    let records = env.journal.read_after(0, 1000, usize::MAX).unwrap();
    let mut repeated = records.clone();
    repeated.extend(records[..30].iter().cloned());
    repeated.extend(records[10..20].iter().cloned());
    let delivery = sink
        .deliver(Batch { records: repeated }, &env.ctx("edges"))
        .await
        .unwrap();
    assert!(delivery.dead.is_empty(), "{:?}", delivery.dead);
    assert_eq!(scan(&client, &table).await.len(), 40);
    assert_eq!(
        proxy.state.count(|c| &c.batch_calls),
        2,
        "40 distinct keys = 25 + 15"
    );
    assert_eq!(proxy.state.count(|c| &c.batch_items), 40);
    env.journal.advance_sink("edges", 40, 40, &[]).unwrap();

    // (b) 130 events through the worker: requests of at most 25 items.
    let many = events(
        "ringcentral",
        "many",
        130,
        t0(),
        Duration::from_secs(60),
        &["bob"],
    );
    commit(&env.journal, &many);
    drain(&env, sink.clone(), LIMIT).await;
    assert!(proxy.state.count(|c| &c.max_batch_items) <= 25);
    assert!(proxy.state.count(|c| &c.batch_calls) >= 2 + 6);
    assert_eq!(scan(&client, &table).await.len(), 170);

    // (c) Large items and bad keys, in one delivery with ordinary ones.
    let mut big = events(
        "ringcentral",
        "big",
        7,
        t0(),
        Duration::from_secs(60),
        &["cid"],
    );
    // Near the limit, stored as is.
    big[1].raw = json!({ "id": "near", "blob": noise(395_000, 7) }).into();
    // Over the limit but compressible: raw gzip-compressed into `raw_gz`.
    big[2].raw = json!({ "id": "fat", "blob": "all work and no play ".repeat(40_000) }).into();
    // Over the limit even compressed: dead-lettered.
    big[3].raw = json!({ "id": "huge", "blob": noise(600_000, 11) }).into();
    // A partition key over DynamoDB's 2048-byte limit (a garbage tenant):
    // refused by dynalite, isolated item by item, dead-lettered with
    // DynamoDB's reason.
    big[4].tenant = "t".repeat(2100);
    big[4].key = event_key("ringcentral", &big[4].tenant, "ev-x");
    // A native id too long for a sort key: stored under its hash.
    big[5].key = event_key("ringcentral", "big", &"x".repeat(1100));
    commit(&env.journal, &big);
    let puts_before = proxy.state.count(|c| &c.put_calls);
    drain(&env, sink.clone(), LIMIT).await;

    let items = scan(&client, &table).await;
    assert_eq!(items.len(), 170 + 5);
    let find = |key: &str| items.iter().find(|i| s_attr(i, "event_id") == key).unwrap();
    let near = find(&big[1].key);
    assert!(matches!(near.get("raw"), Some(AttributeValue::S(s)) if s.len() > 395_000));
    let fat = find(&big[2].key);
    assert!(fat.get("raw").is_none());
    assert!(matches!(fat.get("raw_gz"), Some(AttributeValue::B(_))));
    assert_eq!(
        trailkeep::sinks::dynamodb::item::decode(fat).unwrap().raw,
        big[2].raw
    );
    assert!(s_attr(find(&big[5].key), "sk").contains("#sha256:"));
    for ok in [&big[0], &big[6]] {
        find(&ok.key);
    }
    assert!(
        proxy.state.count(|c| &c.put_calls) > puts_before,
        "the refused request was isolated with PutItem"
    );

    let dead = env.journal.dead_letters(Some("edges"), 100).unwrap();
    let dead: BTreeMap<String, String> = dead
        .into_iter()
        .map(|d| (d.event_key.unwrap(), d.reason))
        .collect();
    assert_eq!(dead.len(), 2, "{dead:#?}");
    assert!(
        dead[&big[3].key].starts_with("item_too_large:"),
        "{}",
        dead[&big[3].key]
    );
    let long = &dead[&big[4].key];
    assert!(
        long.starts_with("validation:") && long.contains("2048") && long.len() < 500,
        "{long}"
    );
    assert_eq!(
        env.journal.sink_cursor("edges").unwrap(),
        env.journal.max_seq().unwrap(),
        "the cursor moved past the dead-lettered items"
    );
}

// 3. ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_partial_unprocessed_items_are_retried_until_written() {
    let env = env();
    let table = table_name("throttle");
    create_via_sink(&env, &table).await;
    let proxy = proxy().await;
    proxy.state.with_faults(|f| {
        f.throttle.extend([
            "ProvisionedThroughputExceededException",
            "ThrottlingException",
            "RequestLimitExceeded",
            "ProvisionedThroughputExceededException",
        ]);
        f.partial = 8;
    });
    let sink = env
        .sink(
            "thr",
            &table,
            &proxy.endpoint(),
            "batch_size = 50\nmax_in_flight = 2",
        )
        .await;
    let evs = events(
        "symphony",
        "pod1",
        200,
        t0(),
        Duration::from_secs(30),
        &["ann", "bob", "cid"],
    );
    commit(&env.journal, &evs);
    drain(&env, sink, LIMIT).await;

    let client = direct_client().await;
    let items = scan(&client, &table).await;
    assert_eq!(keys_in(&items), keys_of(&evs));
    assert_eq!(proxy.state.count(|c| &c.throttled), 4);
    let unprocessed = proxy.state.count(|c| &c.unprocessed_returned);
    assert!(unprocessed > 0);
    let retries = |reason: &str| {
        METRICS
            .sink_retries_total
            .with_label_values(&["thr", reason])
            .get()
    };
    assert_eq!(retries("throttled"), 4);
    assert!(proxy.state.count(|c| &c.unprocessed_calls) >= 4);
    assert_eq!(
        retries("unprocessed"),
        proxy.state.count(|c| &c.unprocessed_calls)
    );
    assert_eq!(
        METRICS
            .sink_unprocessed_items_total
            .with_label_values(&["thr"])
            .get(),
        unprocessed
    );
    assert!(env
        .journal
        .dead_letters(Some("thr"), 10)
        .unwrap()
        .is_empty());

    // Throttled past the sink's own retries: the batch goes back to the
    // worker, which retries it later; nothing is lost or dead-lettered.
    let table2 = table_name("throttle2");
    create_via_sink(&env, &table2).await;
    let proxy2 = dynamodb_support::proxy().await;
    proxy2
        .state
        .with_faults(|f| f.throttle.extend(["ThrottlingException"; 9]));
    let sink2 = env
        .sink(
            "thr2",
            &table2,
            &proxy2.endpoint(),
            "max_retries = 2\nmax_in_flight = 1\nbatch_size = 200",
        )
        .await;
    drain(&env, sink2, LIMIT).await;
    assert_eq!(keys_in(&scan(&client, &table2).await), keys_of(&evs));
    assert_eq!(proxy2.state.count(|c| &c.throttled), 9);
    assert!(
        METRICS
            .sink_errors_total
            .with_label_values(&["thr2", "ThrottlingException"])
            .get()
            == 3,
        "the worker saw three give-ups (3 throttles each)"
    );
}

// 4. ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_table_or_wrong_key_schema_is_a_clear_error_naming_table_and_keys() {
    let env = env();
    let endpoint = dynalite().endpoint();

    let missing = table_name("missing");
    let sink = env.sink("miss", &missing, &endpoint, "").await;
    let e = sink.start(&env.ctx("miss")).await.unwrap_err();
    let SinkError::Halt { code, reason } = &e else {
        panic!("expected a halt, got {e}")
    };
    assert_eq!(code, "table_not_found");
    assert!(
        reason.contains(&format!("table `{missing}` does not exist")),
        "{reason}"
    );
    assert!(
        reason.contains("`pk` (S, HASH)") && reason.contains("`sk` (S, RANGE)"),
        "{reason}"
    );
    assert!(reason.contains("create_table = true"), "{reason}");
    // `check --connect` says the same.
    assert!(sink
        .check_connection()
        .await
        .unwrap_err()
        .to_string()
        .contains(&missing));

    let wrong = table_name("wrong");
    let client = direct_client().await;
    client
        .create_table()
        .table_name(&wrong)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let sink = env.sink("wrong", &wrong, &endpoint, "").await;
    let e = sink.start(&env.ctx("wrong")).await.unwrap_err();
    let SinkError::Halt { code, reason } = &e else {
        panic!("expected a halt, got {e}")
    };
    assert_eq!(code, "table_schema");
    assert!(reason.contains(&format!("table `{wrong}`")), "{reason}");
    assert!(reason.contains("has key schema `id` (S, HASH)"), "{reason}");
    assert!(
        reason.contains("needs partition key `pk` (S, HASH) and sort key `sk` (S, RANGE)"),
        "{reason}"
    );

    // Through the worker: the sink halts (readiness fails) and nothing moves.
    let health = Arc::new(Health::new());
    commit(
        &env.journal,
        &events(
            "ringcentral",
            "acme",
            3,
            t0(),
            Duration::from_secs(1),
            &["ann"],
        ),
    );
    let worker = SinkWorker::new(sink, env.journal.clone(), health.clone(), worker_options());
    let stop = CancellationToken::new();
    let task = tokio::spawn(worker.run(stop.clone()));
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !health.halted().contains_key("wrong") {
        assert!(tokio::time::Instant::now() < deadline, "sink did not halt");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(health.halted()["wrong"].contains(&wrong));
    assert_eq!(env.journal.sink_cursor("wrong").unwrap(), 0);
    stop.cancel();
    task.await.unwrap().unwrap();

    // create_table = true makes a table with the right keys, the actor GSI,
    // and survives the local endpoint's missing UpdateTimeToLive.
    let fresh = table_name("fresh");
    let sink = env
        .sink(
            "fresh",
            &fresh,
            &endpoint,
            "create_table = true\nretention = \"7y\"",
        )
        .await;
    sink.start(&env.ctx("fresh")).await.unwrap();
    let d = client
        .describe_table()
        .table_name(&fresh)
        .send()
        .await
        .unwrap();
    let d = d.table.unwrap();
    assert_eq!(
        d.billing_mode_summary().and_then(|b| b.billing_mode()),
        Some(&BillingMode::PayPerRequest)
    );
    let gsi: Vec<_> = d
        .global_secondary_indexes()
        .iter()
        .filter_map(|g| g.index_name())
        .collect();
    assert_eq!(gsi, vec!["actor-index"]);
    assert!(sink.check_connection().await.unwrap().contains("ACTIVE"));
}

// 5. ---------------------------------------------------------------------

async fn query(cfg: &trailkeep::config::Config, p: &QueryParams) -> Vec<AuditEvent> {
    let mut out: Vec<u8> = Vec::new();
    let n = run_query(cfg, p, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let evs: Vec<AuditEvent> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(n as usize, evs.len());
    evs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_returns_what_was_written_ordered_by_time() {
    let env = env();
    let endpoint = dynalite().endpoint();
    // ~87 days from 20 Jan: four month buckets.
    let acme = events(
        "ringcentral",
        "acme",
        300,
        t0(),
        Duration::from_secs(7 * 3600),
        &["ann", "bob", "cid"],
    );
    let other = events(
        "ringcentral",
        "other",
        50,
        t0(),
        Duration::from_secs(3600),
        &["ann"],
    );
    // Journal (and so write) order differs from time order.
    let mut shuffled: Vec<AuditEvent> = acme.iter().rev().cloned().collect();
    shuffled.extend(other.iter().cloned());
    commit(&env.journal, &shuffled);

    for (i, extra) in [
        "partition_by_month = true",
        "partition_by_month = false\nactor_index = false",
    ]
    .into_iter()
    .enumerate()
    {
        let table = table_name("query");
        let name = format!("q{i}");
        let toml = env.sink_toml(
            &name,
            &table,
            &endpoint,
            &format!("create_table = true\n{extra}"),
        );
        let cfg = env.config(&toml);
        let sink = trailkeep::sinks::build(&cfg.sinks[0], &mut Vec::new())
            .await
            .unwrap();
        drain(&env, sink, LIMIT).await;
        // The table without the GSI, read by a config that expects it:
        // `--actor` falls back to filtering the partition.
        let cfg = if extra.contains("actor_index = false") {
            env.config(&env.sink_toml(&name, &table, &endpoint, "partition_by_month = false"))
        } else {
            cfg
        };

        let from = Utc.with_ymd_and_hms(2024, 2, 10, 0, 0, 0).unwrap();
        let to = Utc.with_ymd_and_hms(2024, 4, 2, 0, 0, 0).unwrap();
        let mut p = QueryParams {
            sink: None,
            source: "ringcentral".into(),
            tenant: "acme".into(),
            from,
            to,
            actor: None,
        };
        let expected: Vec<AuditEvent> = acme
            .iter()
            .filter(|e| e.time >= from && e.time < to)
            .cloned()
            .collect();
        assert!(expected.len() > 100);
        let got = query(&cfg, &p).await;
        assert_eq!(
            got, expected,
            "[{extra}] the window's events, in time order"
        );

        p.actor = Some("bob@acme.test".into());
        let got = query(&cfg, &p).await;
        let bob: Vec<AuditEvent> = expected
            .iter()
            .filter(|e| e.actor.email.as_deref() == Some("bob@acme.test"))
            .cloned()
            .collect();
        assert!(!bob.is_empty());
        assert_eq!(got, bob, "[{extra}] only bob's events, in time order");

        // The whole range: everything of the tenant, nothing of another.
        p.actor = None;
        p.from = t0();
        p.to = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(query(&cfg, &p).await, acme);
        p.tenant = "other".into();
        assert_eq!(query(&cfg, &p).await, other);
    }
}

// 6. ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_batch_then_restart_leaves_exactly_the_source_set() {
    let env = env();
    let table = table_name("crash");
    create_via_sink(&env, &table).await;
    let proxy = proxy().await;
    // Every request writes only half its items, so batches are always
    // part-written when the process dies.
    proxy.state.with_faults(|f| f.partial = u32::MAX);
    let evs = events(
        "vbrick",
        "acme",
        1000,
        t0(),
        Duration::from_secs(45),
        &["ann", "bob"],
    );
    commit(&env.journal, &evs);
    let extra = "batch_size = 100\nmax_in_flight = 3";
    let sink = env.sink("crash", &table, &proxy.endpoint(), extra).await;
    let worker = SinkWorker::new(
        sink,
        env.journal.clone(),
        Arc::new(Health::new()),
        worker_options(),
    );
    let task = tokio::spawn(worker.run(CancellationToken::new()));
    let deadline = tokio::time::Instant::now() + LIMIT;
    while proxy.state.count(|c| &c.batch_calls) < 30 {
        assert!(tokio::time::Instant::now() < deadline, "no traffic");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // The crash: the worker and its in-flight requests vanish at once.
    task.abort();
    let _ = task.await;
    let client = direct_client().await;
    let cursor = env.journal.sink_cursor("crash").unwrap();
    let written = scan(&client, &table).await;
    assert!(cursor < 1000, "crashed before the end (cursor {cursor})");
    let beyond = written
        .iter()
        .filter(|i| {
            let k = s_attr(i, "event_id");
            let pos = evs.iter().position(|e| e.key == k).unwrap() as u64 + 1;
            pos > cursor
        })
        .count();
    assert!(
        beyond > 0,
        "some items past the cursor were already written (mid-batch)"
    );

    // Restart with a healthy endpoint.
    proxy.state.with_faults(|f| f.partial = 0);
    let sink = env.sink("crash", &table, &proxy.endpoint(), extra).await;
    drain(&env, sink, LIMIT).await;
    let items = scan(&client, &table).await;
    assert_eq!(items.len(), 1000);
    assert_eq!(keys_in(&items), keys_of(&evs));
    let set: BTreeSet<String> = items.iter().map(|i| s_attr(i, "sk")).collect();
    assert_eq!(set.len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_trailkeep_run_mid_batch_then_restart_leaves_exactly_the_source_set() {
    let (sim, handle) = rc_sim(1500).await;
    let env = env();
    let table = table_name("sigkill");
    create_via_sink(&env, &table).await;
    let proxy = proxy().await;
    // Every request writes only half its items: batches are part-written
    // whenever the process dies.
    proxy.state.with_faults(|f| f.partial = u32::MAX);
    let text = env.config_text(&format!(
        "{}{}",
        rc_source_toml(env.dir.path(), &handle.url()),
        env.sink_toml(
            "ddb",
            &table,
            &proxy.endpoint(),
            "batch_size = 100\nmax_in_flight = 3"
        )
    ));
    let config = env.dir.path().join("trailkeep.toml");
    std::fs::write(&config, text).unwrap();
    let log = env.dir.path().join("service.log");

    let mut svc = Service::start(&config, log.clone());
    let deadline = tokio::time::Instant::now() + LIMIT;
    while proxy.state.count(|c| &c.batch_calls) < 20 {
        svc.assert_running();
        assert!(
            tokio::time::Instant::now() < deadline,
            "no writes within {LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    svc.kill9();

    let client = direct_client().await;
    let seq_of: std::collections::HashMap<String, u64> = env
        .journal
        .read_after(0, 1_000_000, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.seq))
        .collect();
    let cursor = env.journal.sink_cursor("ddb").unwrap();
    let written = scan(&client, &table).await;
    assert!(
        cursor < env.journal.max_seq().unwrap(),
        "killed before the end"
    );
    assert!(
        written
            .iter()
            .any(|i| seq_of[&s_attr(i, "event_id")] > cursor),
        "items past the cursor were written before the kill (mid-batch)"
    );

    proxy.state.with_faults(|f| f.partial = 0);
    let expected = sim.visible_ids().len();
    let mut svc = Service::start(&config, log.clone());
    loop {
        svc.assert_running();
        let done = env.journal.sink_cursor("ddb").unwrap() >= env.journal.max_seq().unwrap()
            && env.journal.max_seq().unwrap() as usize >= expected;
        if done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline + LIMIT,
            "restarted service did not catch up:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(svc.terminate().success());
    let mut keys = env.journal.event_keys().unwrap();
    keys.sort();
    assert_eq!(keys.len(), expected, "the source set");
    let items = scan(&client, &table).await;
    assert_eq!(items.len(), expected, "no duplicates, nothing missing");
    assert_eq!(keys_in(&items), keys);
}

/// `trailkeep query` (the CLI compliance uses) prints the tenant's events
/// as NDJSON in time order, and nothing of another tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_command_prints_ndjson_in_time_order() {
    let env = env();
    let endpoint = dynalite().endpoint();
    let acme = events(
        "symphony",
        "acme",
        120,
        t0(),
        Duration::from_secs(3600),
        &["ann", "bob"],
    );
    let other = events(
        "symphony",
        "other",
        10,
        t0(),
        Duration::from_secs(3600),
        &["ann"],
    );
    let mut all: Vec<AuditEvent> = acme.iter().rev().cloned().collect();
    all.extend(other.iter().cloned());
    commit(&env.journal, &all);
    let table = table_name("cliquery");
    let toml = env.sink_toml("ddb", &table, &endpoint, "create_table = true");
    let cfg = env.config(&toml);
    let sink = trailkeep::sinks::build(&cfg.sinks[0], &mut Vec::new())
        .await
        .unwrap();
    drain(&env, sink, LIMIT).await;
    let file = env.dir.path().join("q.toml");
    std::fs::write(&file, env.config_text(&toml)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_trailkeep"))
        .args(["query", "-c"])
        .arg(&file)
        .args([
            "--source",
            "symphony",
            "--tenant",
            "acme",
            "--from",
            "2020-01-01T00:00:00Z",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["key"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let expected: Vec<String> = acme.iter().map(|e| e.key.clone()).collect();
    assert_eq!(
        keys, expected,
        "acme's events, oldest first, nothing of `other`"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("120 event(s)"));
}
