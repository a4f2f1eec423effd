//! Alert rules (`[[alerts]]`) and the category catalogue
//! (`config/alert-categories.toml`): parsing, validation with key paths,
//! and matching against canonical events.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::glob::Glob;
use super::template::Template;
use crate::config::{join_path, parse_section, ConfigIssue};
use crate::model::{AuditEvent, Change, EventKind};

/// The catalogue shipped with trailkeep (used when no `categories_file`
/// is configured).
pub const BUILTIN_CATEGORIES: &str = include_str!("../../../config/alert-categories.toml");

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// What an event must look like; every list is a set of globs (any may
/// match), every given list must match (AND). The change criteria
/// (`fields`, `old`, `new`) must all hold for ONE change of the event.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    #[serde(default, deserialize_with = "one_or_many")]
    pub source: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub tenant: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub stream: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub actions: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub exclude_actions: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub kinds: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub actor_ids: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub actor_roles: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub target_ids: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub target_types: Vec<String>,
    /// Changed field names (`changes[].field`, e.g. `Department`).
    #[serde(default, deserialize_with = "one_or_many")]
    pub fields: Vec<String>,
    /// Old values of the changed field.
    #[serde(default, deserialize_with = "one_or_many")]
    pub old: Vec<String>,
    /// New values of the changed field.
    #[serde(default, deserialize_with = "one_or_many")]
    pub new: Vec<String>,
}

/// A compiled `MatchSpec`.
#[derive(Clone, Debug, Default)]
pub struct Matcher {
    source: Vec<Glob>,
    tenant: Vec<Glob>,
    stream: Vec<Glob>,
    actions: Vec<Glob>,
    exclude_actions: Vec<Glob>,
    kinds: Vec<Glob>,
    actor_ids: Vec<Glob>,
    actor_roles: Vec<Glob>,
    target_ids: Vec<Glob>,
    target_types: Vec<Glob>,
    fields: Vec<Glob>,
    old: Vec<Glob>,
    new: Vec<Glob>,
}

const KINDS: &[EventKind] = &[
    EventKind::Create,
    EventKind::Update,
    EventKind::Delete,
    EventKind::Login,
    EventKind::Logout,
    EventKind::Access,
    EventKind::Other,
];

fn compile(prefix: &str, key: &str, pats: &[String], issues: &mut Vec<ConfigIssue>) -> Vec<Glob> {
    let mut out = Vec::new();
    for (i, p) in pats.iter().enumerate() {
        match Glob::new(p) {
            Ok(g) => out.push(g),
            Err(e) => issues.push(ConfigIssue::new(
                format!("{}[{i}]", join_path(prefix, key)),
                e,
            )),
        }
    }
    out
}

/// None on an empty list: "no constraint".
fn any(globs: &[Glob], value: Option<&str>) -> bool {
    globs.is_empty() || value.is_some_and(|v| globs.iter().any(|g| g.matches(v)))
}

impl MatchSpec {
    pub fn compile(&self, prefix: &str, issues: &mut Vec<ConfigIssue>) -> Matcher {
        let m = Matcher {
            source: compile(prefix, "source", &self.source, issues),
            tenant: compile(prefix, "tenant", &self.tenant, issues),
            stream: compile(prefix, "stream", &self.stream, issues),
            actions: compile(prefix, "actions", &self.actions, issues),
            exclude_actions: compile(prefix, "exclude_actions", &self.exclude_actions, issues),
            kinds: compile(prefix, "kinds", &self.kinds, issues),
            actor_ids: compile(prefix, "actor_ids", &self.actor_ids, issues),
            actor_roles: compile(prefix, "actor_roles", &self.actor_roles, issues),
            target_ids: compile(prefix, "target_ids", &self.target_ids, issues),
            target_types: compile(prefix, "target_types", &self.target_types, issues),
            fields: compile(prefix, "fields", &self.fields, issues),
            old: compile(prefix, "old", &self.old, issues),
            new: compile(prefix, "new", &self.new, issues),
        };
        for (i, g) in m.kinds.iter().enumerate() {
            if !KINDS.iter().any(|k| g.matches(k.as_str())) {
                issues.push(ConfigIssue::new(
                    format!("{}[{i}]", join_path(prefix, "kinds")),
                    format!(
                        "`{}` matches no event kind (kinds: create, update, delete, login, logout, access, other)",
                        g.as_str()
                    ),
                ));
            }
        }
        m
    }

    pub fn is_empty(&self) -> bool {
        [
            &self.source,
            &self.tenant,
            &self.stream,
            &self.actions,
            &self.exclude_actions,
            &self.kinds,
            &self.actor_ids,
            &self.actor_roles,
            &self.target_ids,
            &self.target_types,
            &self.fields,
            &self.old,
            &self.new,
        ]
        .iter()
        .all(|v| v.is_empty())
    }
}

impl Matcher {
    /// Everything but the per-change criteria.
    pub fn event_matches(&self, ev: &AuditEvent) -> bool {
        any(&self.source, Some(&ev.source))
            && any(&self.tenant, Some(&ev.tenant))
            && any(&self.stream, Some(&ev.stream))
            && any(&self.actions, Some(&ev.action))
            && !self.exclude_actions.iter().any(|g| g.matches(&ev.action))
            && any(&self.kinds, Some(ev.kind.as_str()))
            && any(&self.actor_ids, ev.actor.id.as_deref())
            && any(&self.actor_roles, ev.actor.role.as_deref())
            && any(&self.target_ids, ev.target.id.as_deref())
            && any(&self.target_types, ev.target.kind.as_deref())
    }

    pub fn has_change_filter(&self) -> bool {
        !(self.fields.is_empty() && self.old.is_empty() && self.new.is_empty())
    }

    pub fn change_matches(&self, c: &Change) -> bool {
        any(&self.fields, Some(&c.field))
            && any(&self.old, c.old.as_deref())
            && any(&self.new, c.new.as_deref())
    }
}

/// One catalogue entry.
#[derive(Clone, Debug)]
pub struct Category {
    pub name: String,
    /// The UI name (seed 002's event list).
    pub label: String,
    /// What the message calls it (`User account information changed`).
    pub message_label: Option<String>,
    /// True when the mapping to actionIds / fields is a guess: no public
    /// document maps the label to the vendor's action ids.
    pub assumption: bool,
    pub note: Option<String>,
    pub matcher: Matcher,
}

pub type Catalogue = BTreeMap<String, Arc<Category>>;

const CATEGORY_META: &[&str] = &["label", "message_label", "assumption", "note"];

/// Parses one category table; `prefix` names it in issues.
fn parse_category(
    name: &str,
    value: Value,
    prefix: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<Category> {
    let Value::Object(mut map) = value else {
        issues.push(ConfigIssue::new(prefix, "must be a table"));
        return None;
    };
    let mut take_str = |k: &str, required: bool, issues: &mut Vec<ConfigIssue>| match map.remove(k)
    {
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            issues.push(ConfigIssue::new(join_path(prefix, k), "must be a string"));
            None
        }
        None if required => {
            issues.push(ConfigIssue::new(join_path(prefix, k), "missing"));
            None
        }
        None => None,
    };
    let label = take_str("label", true, issues);
    let message_label = take_str("message_label", false, issues);
    let note = take_str("note", false, issues);
    let assumption = match map.remove("assumption") {
        None => {
            issues.push(ConfigIssue::new(
                join_path(prefix, "assumption"),
                "missing: say whether this mapping is an assumption (true) or documented (false)",
            ));
            false
        }
        Some(Value::Bool(b)) => b,
        Some(_) => {
            issues.push(ConfigIssue::new(
                join_path(prefix, "assumption"),
                "must be true or false",
            ));
            false
        }
    };
    debug_assert!(CATEGORY_META.iter().all(|k| !map.contains_key(*k)));
    let spec: MatchSpec = parse_section(prefix, Value::Object(map), issues)?;
    if spec.is_empty() {
        issues.push(ConfigIssue::new(
            prefix,
            "a category needs at least one criterion (actions, fields, ...)",
        ));
        return None;
    }
    let n = issues.len();
    let matcher = spec.compile(prefix, issues);
    if issues.len() > n {
        return None;
    }
    Some(Category {
        name: name.to_string(),
        label: label?,
        message_label,
        assumption,
        note,
        matcher,
    })
}

/// Parses a catalogue file's text (`[categories.<name>]` tables). Issues
/// are named `<origin>: categories.<name>.<key>`.
pub fn parse_catalogue(text: &str, origin: &str, issues: &mut Vec<ConfigIssue>) -> Catalogue {
    let mut out = Catalogue::new();
    let root: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            issues.push(ConfigIssue::new(origin, format!("invalid TOML: {e}")));
            return out;
        }
    };
    for key in root.keys() {
        if key != "categories" {
            issues.push(ConfigIssue::new(
                format!("{origin}: {key}"),
                "unknown key (expected only [categories.<name>] tables)",
            ));
        }
    }
    let Some(cats) = root.get("categories") else {
        return out;
    };
    let cats: Value = match serde_json::to_value(cats) {
        Ok(v) => v,
        Err(e) => {
            issues.push(ConfigIssue::new(origin, format!("unreadable: {e}")));
            return out;
        }
    };
    let Value::Object(cats) = cats else {
        issues.push(ConfigIssue::new(
            format!("{origin}: categories"),
            "must be a table of [categories.<name>] tables",
        ));
        return out;
    };
    add_categories(&mut out, cats, &format!("{origin}: categories"), issues);
    out
}

/// Adds (or replaces) categories from a `name → table` map.
pub fn add_categories(
    into: &mut Catalogue,
    cats: Map<String, Value>,
    prefix: &str,
    issues: &mut Vec<ConfigIssue>,
) {
    for (name, v) in cats {
        let path = join_path(prefix, &name);
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            issues.push(ConfigIssue::new(
                path.clone(),
                "category names use letters, digits, `_` and `-`",
            ));
            continue;
        }
        if let Some(c) = parse_category(&name, v, &path, issues) {
            into.insert(name, Arc::new(c));
        }
    }
}

/// One `[[alerts]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDef {
    name: String,
    /// Read from the raw table by `attach_rules` (which sink gets the rule).
    #[serde(default)]
    #[allow(dead_code)]
    sink: Option<String>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default, deserialize_with = "one_or_many")]
    categories: Vec<String>,
    #[serde(default, rename = "match")]
    matching: Option<MatchSpec>,
    #[serde(deserialize_with = "one_or_many")]
    channels: Vec<String>,
    #[serde(default)]
    template: Option<String>,
}

fn yes() -> bool {
    true
}

/// A compiled rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    pub categories: Vec<Arc<Category>>,
    pub matcher: Option<Matcher>,
    pub channels: Vec<String>,
    pub template: Option<Template>,
}

/// A rule that matched an event: what the message says and which changes
/// it is about.
#[derive(Clone, Debug)]
pub struct RuleMatch<'a> {
    pub rule: &'a Rule,
    pub category: Option<&'a Category>,
    /// The changes the rule's and category's change criteria selected (all
    /// changes when neither has any).
    pub changes: Vec<&'a Change>,
}

impl Rule {
    pub fn matches<'a>(&'a self, ev: &'a AuditEvent) -> Option<RuleMatch<'a>> {
        let change_ok = |cat: Option<&Category>, c: &Change| {
            cat.is_none_or(|k| !k.matcher.has_change_filter() || k.matcher.change_matches(c))
                && self
                    .matcher
                    .as_ref()
                    .is_none_or(|m| !m.has_change_filter() || m.change_matches(c))
        };
        let needs_change = |cat: Option<&Category>| {
            cat.is_some_and(|k| k.matcher.has_change_filter())
                || self.matcher.as_ref().is_some_and(|m| m.has_change_filter())
        };
        if let Some(m) = &self.matcher {
            if !m.event_matches(ev) {
                return None;
            }
        }
        let category = if self.categories.is_empty() {
            None
        } else {
            let found = self.categories.iter().find(|k| {
                k.matcher.event_matches(ev)
                    && (!needs_change(Some(k)) || ev.changes.iter().any(|c| change_ok(Some(k), c)))
            })?;
            Some(found.as_ref())
        };
        if needs_change(category) && !ev.changes.iter().any(|c| change_ok(category, c)) {
            return None;
        }
        let changes = ev
            .changes
            .iter()
            .filter(|c| change_ok(category, c))
            .collect();
        Some(RuleMatch {
            rule: self,
            category,
            changes,
        })
    }
}

/// Parses and checks one rule. `channels` are the channel names of the
/// sink the rule belongs to (None = do not check them).
pub fn parse_rule(
    value: Value,
    prefix: &str,
    catalogue: &Catalogue,
    channels: Option<&[String]>,
    issues: &mut Vec<ConfigIssue>,
) -> Option<Rule> {
    let def: RuleDef = parse_section(prefix, value, issues)?;
    let n = issues.len();
    if !def.enabled {
        return None;
    }
    let mut categories = Vec::new();
    for (i, name) in def.categories.iter().enumerate() {
        match catalogue.get(name) {
            Some(c) => categories.push(c.clone()),
            None => {
                let near: Vec<&str> = catalogue
                    .keys()
                    .filter(|k| {
                        let a = k.to_ascii_lowercase();
                        let b = name.to_ascii_lowercase();
                        a.contains(&b) || b.contains(&a)
                    })
                    .map(String::as_str)
                    .take(5)
                    .collect();
                let hint = if near.is_empty() {
                    format!("{} categories are defined", catalogue.len())
                } else {
                    format!("did you mean: {}", near.join(", "))
                };
                issues.push(ConfigIssue::new(
                    format!("{prefix}.categories[{i}]"),
                    format!("unknown category `{name}` ({hint})"),
                ));
            }
        }
    }
    let matcher = def
        .matching
        .as_ref()
        .map(|m| m.compile(&format!("{prefix}.match"), issues));
    if def.categories.is_empty() && def.matching.as_ref().is_none_or(MatchSpec::is_empty) {
        issues.push(ConfigIssue::new(
            prefix,
            "a rule needs `categories` or a non-empty `match` table (it would alert on every event)",
        ));
    }
    if def.channels.is_empty() {
        issues.push(ConfigIssue::new(
            format!("{prefix}.channels"),
            "needs at least one channel",
        ));
    }
    if let Some(known) = channels {
        for (i, c) in def.channels.iter().enumerate() {
            if !known.contains(c) {
                issues.push(ConfigIssue::new(
                    format!("{prefix}.channels[{i}]"),
                    format!(
                        "unknown channel `{c}` (the alerts sink defines: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
        }
    }
    let template = def.template.as_deref().and_then(|t| {
        Template::parse(t)
            .map_err(|e| issues.push(ConfigIssue::new(format!("{prefix}.template"), e)))
            .ok()
    });
    if issues.len() > n {
        return None;
    }
    Some(Rule {
        name: def.name,
        categories,
        matcher,
        channels: def.channels,
        template,
    })
}

/// Which alerts sink a raw rule names (its `sink` key), if any.
pub fn rule_sink(value: &Value) -> Option<&str> {
    value.get("sink").and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Actor, Target};
    use chrono::Utc;

    pub fn event(action: &str, field: &str, old: &str, new: &str) -> AuditEvent {
        AuditEvent {
            key: "ringcentral:acme:1".into(),
            source: "ringcentral".into(),
            tenant: "acme".into(),
            stream: "audit-trail".into(),
            time: Utc::now(),
            ingested_at: Utc::now(),
            action: action.into(),
            action_label: None,
            kind: EventKind::Update,
            actor: Actor::default(),
            target: Target::default(),
            changes: vec![Change {
                field: field.into(),
                old: Some(old.into()),
                new: Some(new.into()),
            }],
            client_ip: None,
            raw: Value::Null.into(),
        }
    }

    #[test]
    fn builtin_catalogue_is_valid() {
        let mut issues = Vec::new();
        let cat = parse_catalogue(BUILTIN_CATEGORIES, "builtin", &mut issues);
        assert!(issues.is_empty(), "{issues:?}");
        assert!(cat.len() >= 20, "{}", cat.len());
        assert!(cat.values().any(|c| c.assumption));
    }

    #[test]
    fn rule_with_category_and_match() {
        let mut issues = Vec::new();
        let cat = parse_catalogue(BUILTIN_CATEGORIES, "builtin", &mut issues);
        let v = serde_json::json!({"name": "r", "categories": ["rc_user_info_department"],
            "channels": ["c"], "match": {"new": "Math*"}});
        let r =
            parse_rule(v, "alerts[0]", &cat, Some(&["c".to_string()]), &mut issues).expect("valid");
        assert!(r
            .matches(&event(
                "CHANGE_USER_INFO",
                "Department",
                "Bio",
                "Mathematics"
            ))
            .is_some());
        assert!(r
            .matches(&event("CHANGE_USER_INFO", "Department", "Bio", "Art"))
            .is_none());
        assert!(r
            .matches(&event("CHANGE_USER_INFO", "Email", "a", "Mathematics"))
            .is_none());
        assert!(r
            .matches(&event("CHANGE_USER_ROLE", "Department", "a", "Mathematics"))
            .is_none());
    }

    #[test]
    fn issues_carry_key_paths() {
        let mut issues = Vec::new();
        let cat = parse_catalogue(BUILTIN_CATEGORIES, "builtin", &mut issues);
        let v = serde_json::json!({"name": "r", "categories": ["nope"], "channels": ["x"],
            "match": {"actions": ["OK", "CHANGE_[USER"], "kinds": ["updated"]}});
        assert!(parse_rule(v, "alerts[2]", &cat, Some(&["c".to_string()]), &mut issues).is_none());
        let all: Vec<String> = issues.iter().map(|i| i.to_string()).collect();
        let all = all.join("\n");
        assert!(
            all.contains("alerts[2].categories[0]: unknown category `nope`"),
            "{all}"
        );
        assert!(
            all.contains("alerts[2].match.actions[1]: invalid glob"),
            "{all}"
        );
        assert!(all.contains("alerts[2].match.kinds[0]"), "{all}");
        assert!(
            all.contains("alerts[2].channels[0]: unknown channel `x`"),
            "{all}"
        );
    }

    #[test]
    fn catalogue_errors_name_the_file_and_key() {
        let mut issues = Vec::new();
        parse_catalogue(
            "[categories.bad]\nlabel = \"x\"\nassumption = true\nactions = [\"A[\"]\n[categories.worse]\nlabel = \"y\"\nactoins = [\"A\"]\n",
            "cats.toml",
            &mut issues,
        );
        let all: Vec<String> = issues.iter().map(|i| i.to_string()).collect();
        let all = all.join("\n");
        assert!(
            all.contains("cats.toml: categories.bad.actions[0]: invalid glob"),
            "{all}"
        );
        assert!(
            all.contains("cats.toml: categories.worse.assumption: missing"),
            "{all}"
        );
        assert!(all.contains("cats.toml: categories.worse"), "{all}");
    }
}
