//! The table: checked on start (exists, right key schema), or created when
//! `create_table = true` (on demand, `actor-index` GSI, TTL on `expires_at`).

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TableDescription, TableStatus, TimeToLiveSpecification,
    TimeToLiveStatus,
};

use super::item::{ACTOR, ACTOR_INDEX, PK, SK, TTL_ATTR};
use super::{classify, Class, DynamoSink, Failure};
use crate::internal_events::{InternalEvent, SinkDestinationCreated, SinkSetupNotice};
use crate::sinks::SinkError;

const WANTED: &str = "partition key `pk` (S, HASH) and sort key `sk` (S, RANGE)";

fn err(sink: &DynamoSink, what: &str, f: Failure) -> SinkError {
    let table = &sink.settings.table;
    match f.class {
        Class::Auth => SinkError::halt(
            "credentials",
            format!(
                "{what} table `{table}` ({}): {}: {}",
                sink.location(),
                f.code,
                f.message
            ),
        ),
        _ => SinkError::retryable(
            f.code.clone(),
            format!(
                "{what} table `{table}` ({}): {}",
                sink.location(),
                f.message
            ),
        ),
    }
}

/// Describes the key schema as `pk (S, HASH), sk (S, RANGE)`.
fn schema_text(t: &TableDescription) -> String {
    let types = t.attribute_definitions();
    t.key_schema()
        .iter()
        .map(|k| {
            let ty = types
                .iter()
                .find(|a| a.attribute_name() == k.attribute_name())
                .map(|a| a.attribute_type().as_str().to_string())
                .unwrap_or_else(|| "?".into());
            format!("`{}` ({ty}, {})", k.attribute_name(), k.key_type().as_str())
        })
        .collect::<Vec<_>>()
        .join(" and ")
}

fn has_key(t: &TableDescription, name: &str, kind: KeyType) -> bool {
    let typed = t
        .attribute_definitions()
        .iter()
        .any(|a| a.attribute_name() == name && *a.attribute_type() == ScalarAttributeType::S);
    typed
        && t.key_schema()
            .iter()
            .any(|k| k.attribute_name() == name && *k.key_type() == kind)
}

/// Checks that the table can take our items; says exactly what is wrong.
pub(super) fn check_schema(sink: &DynamoSink, t: &TableDescription) -> Result<(), SinkError> {
    let table = &sink.settings.table;
    if t.key_schema().len() != 2
        || !has_key(t, PK, KeyType::Hash)
        || !has_key(t, SK, KeyType::Range)
    {
        return Err(SinkError::halt(
            "table_schema",
            format!(
                "table `{table}` ({}) has key schema {} but the dynamodb sink needs {WANTED}; point `table` at a table with that key schema, or name a new table and set create_table = true",
                sink.location(),
                schema_text(t)
            ),
        ));
    }
    Ok(())
}

async fn describe_table(sink: &DynamoSink) -> Result<Option<TableDescription>, Failure> {
    match sink
        .client
        .describe_table()
        .table_name(&sink.settings.table)
        .send()
        .await
    {
        Ok(out) => Ok(out.table),
        Err(e) => {
            let f = classify(&e);
            if f.class == Class::NotFound {
                Ok(None)
            } else {
                Err(f)
            }
        }
    }
}

/// `start`: the table exists with the right keys (creating it if allowed).
pub(super) async fn ensure(sink: &DynamoSink) -> Result<(), SinkError> {
    let table = sink.settings.table.clone();
    let desc = describe_table(sink)
        .await
        .map_err(|f| err(sink, "describing", f))?;
    let desc = match desc {
        Some(d) => d,
        None if sink.settings.create_table => {
            create(sink).await?;
            wait_active(sink).await?
        }
        None => {
            return Err(SinkError::halt(
                "table_not_found",
                format!(
                    "table `{table}` does not exist ({}); create it with {WANTED} (on-demand billing, TTL on `{TTL_ATTR}`), or set create_table = true",
                    sink.location()
                ),
            ))
        }
    };
    check_schema(sink, &desc)?;
    if desc.table_status() == Some(&TableStatus::Creating) {
        wait_active(sink).await?;
    }
    if sink.settings.actor_index
        && !desc
            .global_secondary_indexes()
            .iter()
            .any(|g| g.index_name() == Some(ACTOR_INDEX))
    {
        SinkSetupNotice {
            sink: &sink.name,
            notice: &format!(
                "table `{table}` has no GSI `{ACTOR_INDEX}` (hash key `{ACTOR}` S, range key `{SK}` S): `query --actor` falls back to filtering each partition; set actor_index = false to silence this"
            ),
        }
        .emit();
    }
    if sink.settings.retention.is_some() {
        ensure_ttl(sink).await;
    }
    Ok(())
}

async fn create(sink: &DynamoSink) -> Result<(), SinkError> {
    let table = &sink.settings.table;
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(|e| SinkError::halt("request", e.to_string()))
    };
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| SinkError::halt("request", e.to_string()))
    };
    let mut req = sink
        .client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(PK, KeyType::Hash)?)
        .key_schema(key(SK, KeyType::Range)?)
        .attribute_definitions(attr(PK)?)
        .attribute_definitions(attr(SK)?);
    if sink.settings.actor_index {
        let gsi = GlobalSecondaryIndex::builder()
            .index_name(ACTOR_INDEX)
            .key_schema(key(ACTOR, KeyType::Hash)?)
            .key_schema(key(SK, KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::All)
                    .build(),
            )
            .build()
            .map_err(|e| SinkError::halt("request", e.to_string()))?;
        req = req
            .attribute_definitions(attr(ACTOR)?)
            .global_secondary_indexes(gsi);
    }
    match req.send().await {
        Ok(_) => {
            SinkDestinationCreated {
                sink: &sink.name,
                what: &format!(
                    "table `{table}` (on demand, pk/sk{})",
                    if sink.settings.actor_index {
                        ", GSI actor-index"
                    } else {
                        ""
                    }
                ),
            }
            .emit();
            Ok(())
        }
        // Another replica created it first.
        Err(e) if e.code() == Some("ResourceInUseException") => Ok(()),
        Err(e) => {
            let f = classify(&e);
            Err(match f.class {
                Class::Validation => SinkError::halt(
                    "create_table",
                    format!(
                        "creating table `{table}` ({}): {}",
                        sink.location(),
                        f.message
                    ),
                ),
                _ => err(sink, "creating", f),
            })
        }
    }
}

use aws_sdk_dynamodb::error::ProvideErrorMetadata;

async fn wait_active(sink: &DynamoSink) -> Result<TableDescription, SinkError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let desc = describe_table(sink)
            .await
            .map_err(|f| err(sink, "describing", f))?;
        if let Some(d) = desc {
            if d.table_status() == Some(&TableStatus::Active) {
                return Ok(d);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(SinkError::retryable(
                "table_not_active",
                format!(
                    "table `{}` ({}) is not ACTIVE after 5 minutes",
                    sink.settings.table,
                    sink.location()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// TTL on `expires_at`: enabled when creating, otherwise checked. A
/// failure here never stops delivery; it is reported.
async fn ensure_ttl(sink: &DynamoSink) {
    let table = &sink.settings.table;
    let status = sink
        .client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .ok()
        .and_then(|o| o.time_to_live_description)
        .map(|d| {
            (
                d.time_to_live_status().cloned(),
                d.attribute_name().map(str::to_string),
            )
        });
    if let Some((Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling), Some(attr))) =
        &status
    {
        if attr == TTL_ATTR {
            return;
        }
        SinkSetupNotice {
            sink: &sink.name,
            notice: &format!(
                "table `{table}` has TTL on `{attr}`, but items carry their expiry in `{TTL_ATTR}`: they will not expire"
            ),
        }
        .emit();
        return;
    }
    if !sink.settings.create_table {
        SinkSetupNotice {
            sink: &sink.name,
            notice: &format!(
                "TTL is not enabled on table `{table}`: items carry `{TTL_ATTR}` but will not expire until TTL is enabled on that attribute (or set create_table = true)"
            ),
        }
        .emit();
        return;
    }
    let spec = match TimeToLiveSpecification::builder()
        .enabled(true)
        .attribute_name(TTL_ATTR)
        .build()
    {
        Ok(s) => s,
        Err(_) => return,
    };
    match sink
        .client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(spec)
        .send()
        .await
    {
        Ok(_) => SinkDestinationCreated {
            sink: &sink.name,
            what: &format!("TTL on `{TTL_ATTR}` for table `{table}`"),
        }
        .emit(),
        Err(e) => {
            let f = classify(&e);
            let why = if f.code == "UnknownOperationException" {
                "this endpoint does not implement UpdateTimeToLive (a local DynamoDB implementation?)".to_string()
            } else {
                format!("{}: {}", f.code, f.message)
            };
            SinkSetupNotice {
                sink: &sink.name,
                notice: &format!(
                    "could not enable TTL on `{TTL_ATTR}` for table `{table}`: {why}; items will not expire"
                ),
            }
            .emit();
        }
    }
}

/// `check --connect`: a one-line description of the table.
pub(super) async fn describe(sink: &DynamoSink) -> Result<String, SinkError> {
    let table = &sink.settings.table;
    match describe_table(sink)
        .await
        .map_err(|f| err(sink, "describing", f))?
    {
        Some(d) => {
            check_schema(sink, &d)?;
            Ok(format!(
                "table `{table}` ({}) is {}, keys {}, about {} items",
                sink.location(),
                d.table_status().map(|s| s.as_str()).unwrap_or("?"),
                schema_text(&d),
                d.item_count().unwrap_or(0)
            ))
        }
        None if sink.settings.create_table => Ok(format!(
            "table `{table}` ({}) does not exist yet; it will be created on start (create_table = true)",
            sink.location()
        )),
        None => Err(SinkError::halt(
            "table_not_found",
            format!(
                "table `{table}` does not exist ({}); create it with {WANTED}, or set create_table = true",
                sink.location()
            ),
        )),
    }
}
