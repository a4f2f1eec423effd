//! `trailkeep query`: reads events back from the table (compliance's "show
//! me what we kept") and prints them as NDJSON, one canonical event per
//! line, ordered by event time.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{anyhow, bail, Context};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Datelike, TimeZone, Utc};

use super::item::{self, ACTOR, ACTOR_INDEX, PK, SK};
use super::{connect, parse, Settings};
use crate::config::{Config, ConfigErrors};
use crate::util::rfc3339_ms;

/// What to read: one source and tenant, a time range `[from, to)`,
/// optionally only one actor (matched against the item's `actor`: the
/// actor's email, else id, else name).
#[derive(Clone, Debug)]
pub struct QueryParams {
    /// The dynamodb sink to read (its name); None = the only one configured.
    pub sink: Option<String>,
    /// Source kind (`ringcentral`, `vbrick`, `symphony`).
    pub source: String,
    /// The source's configured name.
    pub tenant: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub actor: Option<String>,
}

/// Runs a query with the table settings of a configured dynamodb sink and
/// writes NDJSON to `out`. Returns the number of events printed.
pub async fn run_query(
    cfg: &Config,
    params: &QueryParams,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<u64> {
    let candidates: Vec<_> = cfg
        .sinks
        .iter()
        .filter(|s| s.kind == "dynamodb")
        .filter(|s| params.sink.as_deref().is_none_or(|n| n == s.name))
        .collect();
    let entry = match candidates.as_slice() {
        [one] => *one,
        [] => match &params.sink {
            Some(n) => bail!("no sink named `{n}` with kind = \"dynamodb\" in the configuration"),
            None => bail!("no sink with kind = \"dynamodb\" in the configuration"),
        },
        many => bail!(
            "several dynamodb sinks are configured ({}); name one with --sink",
            many.iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut issues = Vec::new();
    let settings = parse(entry, &mut issues);
    let client = match &settings {
        Some(s) => connect(&entry.path, s, &mut issues).await,
        None => None,
    };
    let (Some(settings), Some(client)) = (settings, client) else {
        return Err(anyhow!(ConfigErrors(issues)));
    };
    query_table(&client, &settings, params, out).await
}

/// The month buckets `[from, to)` touches, oldest first.
fn months(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let last = to - chrono::Duration::milliseconds(1);
    let mut out = Vec::new();
    let (mut y, mut m) = (from.year(), from.month());
    while (y, m) <= (last.year(), last.month()) {
        if let Some(t) = Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single() {
            out.push(t);
        }
        if m == 12 {
            y += 1;
            m = 1;
        } else {
            m += 1;
        }
    }
    out
}

/// Reads `[from, to)` with an existing client (used by `run_query`, tests).
pub async fn query_table(
    client: &Client,
    s: &Settings,
    p: &QueryParams,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<u64> {
    if p.to <= p.from {
        bail!(
            "--to ({}) must be after --from ({})",
            rfc3339_ms(p.to),
            rfc3339_ms(p.from)
        );
    }
    let lo = AttributeValue::S(rfc3339_ms(p.from));
    let hi = AttributeValue::S(rfc3339_ms(p.to));
    let base = item::partition_key(&p.source, &p.tenant, p.from, false);
    let mut count = 0u64;
    let use_index = p.actor.is_some() && s.actor_index && has_actor_index(client, &s.table).await;
    match (&p.actor, use_index) {
        (Some(actor), true) => {
            // One GSI query: every partition of this actor, in sk order.
            let mut values = HashMap::from([
                (":a".to_string(), AttributeValue::S(actor.clone())),
                (":lo".to_string(), lo),
                (":hi".to_string(), hi),
            ]);
            let filter = if s.partition_by_month {
                values.insert(":pk".into(), AttributeValue::S(format!("{base}#")));
                "begins_with(#pk, :pk)"
            } else {
                values.insert(":pk".into(), AttributeValue::S(base));
                "#pk = :pk"
            };
            count += pages(
                client,
                s,
                Some(ACTOR_INDEX),
                "#a = :a AND #sk BETWEEN :lo AND :hi",
                Some(filter),
                values,
                out,
            )
            .await?;
        }
        _ => {
            let buckets: Vec<String> = if s.partition_by_month {
                months(p.from, p.to)
                    .into_iter()
                    .map(|m| item::partition_key(&p.source, &p.tenant, m, true))
                    .collect()
            } else {
                vec![base]
            };
            for pk in buckets {
                let mut values = HashMap::from([
                    (":pk".to_string(), AttributeValue::S(pk)),
                    (":lo".to_string(), lo.clone()),
                    (":hi".to_string(), hi.clone()),
                ]);
                let filter = p.actor.as_ref().map(|a| {
                    values.insert(":a".into(), AttributeValue::S(a.clone()));
                    "#a = :a"
                });
                count += pages(
                    client,
                    s,
                    None,
                    "#pk = :pk AND #sk BETWEEN :lo AND :hi",
                    filter,
                    values,
                    out,
                )
                .await?;
            }
        }
    }
    out.flush().context("writing output")?;
    Ok(count)
}

/// Whether the table has `actor-index` (true when that cannot be told:
/// the query itself then says what is wrong).
async fn has_actor_index(client: &Client, table: &str) -> bool {
    match client.describe_table().table_name(table).send().await {
        Ok(out) => out.table.is_some_and(|t| {
            t.global_secondary_indexes()
                .iter()
                .any(|g| g.index_name() == Some(ACTOR_INDEX))
        }),
        Err(_) => true,
    }
}

/// Runs one Query to its last page, printing each item.
async fn pages(
    client: &Client,
    s: &Settings,
    index: Option<&str>,
    key_condition: &str,
    filter: Option<&str>,
    values: HashMap<String, AttributeValue>,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<u64> {
    let mut names = HashMap::from([
        ("#pk".to_string(), PK.to_string()),
        ("#sk".to_string(), SK.to_string()),
    ]);
    if values.contains_key(":a") {
        names.insert("#a".into(), ACTOR.into());
    }
    let mut start: Option<HashMap<String, AttributeValue>> = None;
    let mut count = 0u64;
    loop {
        let res = client
            .query()
            .table_name(&s.table)
            .set_index_name(index.map(str::to_string))
            .key_condition_expression(key_condition)
            .set_filter_expression(filter.map(str::to_string))
            .set_expression_attribute_names(Some(names.clone()))
            .set_expression_attribute_values(Some(values.clone()))
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| {
                let f = super::classify(&e);
                anyhow!(
                    "querying table `{}`{}: {}: {}",
                    s.table,
                    index.map(|i| format!(" (index {i})")).unwrap_or_default(),
                    f.code,
                    f.message
                )
            })?;
        for it in res.items() {
            let ev = item::decode(it).map_err(|e| anyhow!("table `{}`: {e}", s.table))?;
            serde_json::to_writer(&mut *out, &ev).context("writing output")?;
            out.write_all(b"\n").context("writing output")?;
            count += 1;
        }
        match res.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => break,
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_buckets() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let m = months(t("2024-11-15T00:00:00Z"), t("2025-02-01T00:00:00Z"));
        let names: Vec<String> = m.iter().map(|d| d.format("%Y-%m").to_string()).collect();
        assert_eq!(names, vec!["2024-11", "2024-12", "2025-01"]);
        assert_eq!(
            months(t("2024-11-15T00:00:00Z"), t("2024-11-15T00:00:01Z")).len(),
            1
        );
    }
}
