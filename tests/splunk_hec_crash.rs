//! Issue test 4 with the real binary: `trailkeep run` (RingCentral
//! simulator → journal → Splunk HEC simulator) is SIGKILLed while acks
//! are pending; the restarted process queries the saved channel and
//! ackIds and confirms every batch without sending anything again.

mod engine_support;

use std::time::Duration;

use engine_support::{rc_source_toml, start_child, temp, wait_until};
use trailkeep::journal::Journal;
use trailkeep::sim::hec;
use trailkeep::sim::ringcentral::{self as rcsim, Config as SimConfig};
use trailkeep::util::HumanDuration;

fn kill(child: &mut std::process::Child) {
    // SIGKILL: no shutdown code runs.
    child.kill().expect("kill");
    child.wait().expect("wait");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_pending_acks_restart_resends_nothing() {
    let (_t, dir) = temp();
    let (rc, rc_h) = rcsim::start(SimConfig {
        initial_records: 1_500,
        initial_span: HumanDuration(Duration::from_secs(2 * 86_400)),
        live_per_second: 0.0,
        unlimited: true,
        ..SimConfig::default()
    })
    .await
    .expect("rc sim");
    // Acks read true only 10 s after a send: the kill finds them pending.
    let (hec_sim, hec_h) = hec::start(hec::Config {
        indexing_delay_ms: 10_000,
        ..hec::Config::default()
    })
    .await
    .expect("hec sim");
    let token = dir.join("hec_token");
    std::fs::write(&token, "sim-hec-token").expect("token");
    let src = rc_source_toml(
        &dir,
        &rc,
        &rc_h.url(),
        "acme",
        "start_at = \"3d\"\npoll_interval = \"1s\"\nsettle_delay = \"200ms\"",
    );
    let config = format!(
        r#"
[journal]
path = "{dir}/journal.db"

[telemetry]
listen = ""
log_format = "text"
log_level = "warn"

[pipeline]
shutdown_grace = "3s"

{src}

[[sinks]]
kind = "splunk_hec"
name = "splunk"
endpoint = "{url}"
token = {{ file = "{token}" }}
max_events = 200
ack_timeout = "60s"
ack_poll_interval = "100ms"
"#,
        dir = dir.display(),
        url = hec_h.url(),
        token = token.display(),
    );
    let path = dir.join("trailkeep.toml");
    std::fs::write(&path, config).expect("config");
    let expected = rc.visible_ids().len();
    assert_eq!(expected, 1_500);

    let mut first = start_child(&path, &dir.join("run1.log"));
    let journal_path = dir.join("journal.db");
    wait_until("journal created", Duration::from_secs(30), || {
        journal_path.exists()
    })
    .await;
    let journal = Journal::open(&journal_path, None).expect("journal");
    let started = std::time::Instant::now();
    loop {
        let c = hec_sim.counters();
        let saved = journal
            .sink_state_prefix("splunk", "ack.")
            .map(|v| v.len())
            .unwrap_or(0);
        if hec_sim.events_indexed() == expected as u64
            && c.acks_read_true == 0
            && saved == c.acks_issued as usize
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let log = std::fs::read_to_string(dir.join("run1.log")).unwrap_or_default();
            panic!(
                "timed out waiting for every event sent and every ack saved: {c:?}, saved {saved}, journal {:?}\n{log}",
                journal.max_seq()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    kill(&mut first);
    let saved = journal.sink_state_prefix("splunk", "ack.").expect("state");
    assert!(!saved.is_empty(), "acks were pending at the kill");
    assert!(
        journal.sink_cursor("splunk").expect("cursor") < journal.max_seq().expect("max"),
        "not everything was confirmed before the kill"
    );
    let issued_before = hec_sim.counters().acks_issued;

    let mut second = start_child(&path, &dir.join("run2.log"));
    let j = journal.clone();
    wait_until(
        "the restart confirms everything",
        Duration::from_secs(60),
        || {
            let max = j.max_seq().unwrap_or(u64::MAX);
            max > 0 && j.sink_cursor("splunk").unwrap_or(0) >= max
        },
    )
    .await;
    kill(&mut second);

    let c = hec_sim.counters();
    assert_eq!(c.events_indexed, expected as u64, "nothing was sent again");
    assert_eq!(
        c.acks_issued, issued_before,
        "no new request after the restart"
    );
    assert_eq!(
        c.acks_read_true, issued_before,
        "every saved ack was read true"
    );
    let mut got = hec_sim.event_ids();
    got.sort();
    let keys = journal.event_keys().expect("keys");
    let mut want = keys.clone();
    want.sort();
    assert_eq!(got, want, "every journal event exactly once in Splunk");
    // What may remain after a clean stop: records of acks already read
    // true whose batch the cursor has passed (removed at the next start).
    // Nothing pending, nothing ahead of the cursor.
    let cursor = journal.sink_cursor("splunk").expect("cursor");
    for (k, v) in journal.sink_state_prefix("splunk", "ack.").expect("state") {
        let saved: serde_json::Value = serde_json::from_str(&v).expect("saved ack");
        assert_eq!(
            saved["confirmed"], true,
            "{k} is still pending after a clean stop"
        );
        assert!(
            saved["last"].as_u64().expect("last") <= cursor,
            "{k} is ahead of the cursor"
        );
    }
}
