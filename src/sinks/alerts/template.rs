//! Alert message templates: `{name}` placeholders and `{?name}...{/name}`
//! sections kept only when `name` is not empty. The default reproduces the
//! layout of the seed's third-party app:
//!
//! `Apr 24, 2025 => 2:12 pm: User account information changed by: Peter Beck
//! MacIntyre. Affected Element: [Department] old value / current action:
//! [Biology] new value: [Mathematics] The target of the change was: Peter B
//! MacIntyre (ext: 12004)`

use std::collections::HashMap;

use chrono_tz::Tz;

use super::rules::RuleMatch;
use crate::model::AuditEvent;

pub const DEFAULT_TEMPLATE: &str = "{date} => {time}: {label} by: {actor}.{?field} Affected Element: [{field}] old value / current action: [{old}] new value: [{new}]{/field}{?target} The target of the change was: {target}{?target_ext} (ext: {target_ext}){/target_ext}{/target}";

pub const DEFAULT_OPT_OUT: &str = "To opt out at any time, simply reply with STOP.";

/// SMS text limit in UTF-16 code units.
pub const SMS_LIMIT: usize = 1000;
/// Team Messaging post limit in characters.
pub const POST_LIMIT: usize = 10_000;

pub const PLACEHOLDERS: &[&str] = &[
    "date",
    "time",
    "time_utc",
    "label",
    "category",
    "rule",
    "action",
    "action_label",
    "kind",
    "actor",
    "actor_id",
    "actor_email",
    "actor_role",
    "target",
    "target_id",
    "target_type",
    "target_ext",
    "field",
    "old",
    "new",
    "source",
    "tenant",
    "stream",
    "event_key",
    "client_ip",
];

#[derive(Clone, Debug, PartialEq)]
enum Part {
    Text(String),
    Var(String),
    Section(String, Vec<Part>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut stack: Vec<(String, Vec<Part>)> = vec![(String::new(), Vec::new())];
        let mut rest = text;
        while !rest.is_empty() {
            let Some(open) = rest.find('{') else {
                push_text(&mut stack, rest);
                break;
            };
            push_text(&mut stack, &rest[..open]);
            let after = &rest[open + 1..];
            if let Some(literal) = after.strip_prefix('{') {
                push_text(&mut stack, "{");
                rest = literal;
                continue;
            }
            let Some(close) = after.find('}') else {
                return Err(format!(
                    "unclosed `{{` at byte {} (write `{{{{` for a literal brace)",
                    text.len() - rest.len() + open
                ));
            };
            let tag = &after[..close];
            rest = &after[close + 1..];
            let check = |name: &str| {
                if PLACEHOLDERS.contains(&name) {
                    Ok(())
                } else {
                    Err(format!(
                        "unknown placeholder `{name}` (known: {})",
                        PLACEHOLDERS.join(", ")
                    ))
                }
            };
            if let Some(name) = tag.strip_prefix('?') {
                check(name)?;
                stack.push((name.to_string(), Vec::new()));
            } else if let Some(name) = tag.strip_prefix('/') {
                let (open_name, parts) = stack
                    .pop()
                    .filter(|_| !stack.is_empty())
                    .ok_or_else(|| format!("`{{/{name}}}` closes no section"))?;
                if open_name != name {
                    return Err(format!("`{{/{name}}}` closes section `{{?{open_name}}}`"));
                }
                if let Some((_, top)) = stack.last_mut() {
                    top.push(Part::Section(open_name, parts));
                }
            } else {
                check(tag)?;
                if let Some((_, top)) = stack.last_mut() {
                    top.push(Part::Var(tag.to_string()));
                }
            }
        }
        if stack.len() > 1 {
            let (name, _) = &stack[stack.len() - 1];
            return Err(format!(
                "section `{{?{name}}}` is never closed with `{{/{name}}}`"
            ));
        }
        let parts = stack.pop().map(|(_, p)| p).unwrap_or_default();
        Ok(Template { parts })
    }

    pub fn render(&self, vars: &HashMap<&'static str, String>) -> String {
        let mut out = String::new();
        render_parts(&self.parts, vars, &mut out);
        out
    }
}

impl Default for Template {
    fn default() -> Self {
        // The default template is a constant checked by a unit test.
        Template::parse(DEFAULT_TEMPLATE).unwrap_or(Template { parts: Vec::new() })
    }
}

fn push_text(stack: &mut [(String, Vec<Part>)], s: &str) {
    if s.is_empty() {
        return;
    }
    let s = s.replace("}}", "}");
    if let Some((_, top)) = stack.last_mut() {
        if let Some(Part::Text(t)) = top.last_mut() {
            t.push_str(&s);
        } else {
            top.push(Part::Text(s));
        }
    }
}

fn render_parts(parts: &[Part], vars: &HashMap<&'static str, String>, out: &mut String) {
    for p in parts {
        match p {
            Part::Text(t) => out.push_str(t),
            Part::Var(v) => out.push_str(vars.get(v.as_str()).map(String::as_str).unwrap_or("")),
            Part::Section(name, inner) => {
                if vars.get(name.as_str()).is_some_and(|v| !v.is_empty()) {
                    render_parts(inner, vars, out);
                }
            }
        }
    }
}

/// The values a template can use, for one event and the rule that matched.
pub fn variables(ev: &AuditEvent, m: &RuleMatch<'_>, tz: Tz) -> HashMap<&'static str, String> {
    let local = ev.time.with_timezone(&tz);
    let join = |f: &dyn Fn(&crate::model::Change) -> String| {
        m.changes.iter().map(|c| f(c)).collect::<Vec<_>>().join(",")
    };
    let mut v = HashMap::new();
    v.insert("date", local.format("%b %-d, %Y").to_string());
    v.insert("time", local.format("%-I:%M %P").to_string());
    v.insert("time_utc", crate::util::rfc3339_ms(ev.time));
    let action_label = ev.action_label.clone().unwrap_or_else(|| ev.action.clone());
    let label = m
        .category
        .map(|c| c.message_label.clone().unwrap_or_else(|| c.label.clone()))
        .unwrap_or_else(|| action_label.clone());
    v.insert("label", label);
    v.insert(
        "category",
        m.category.map(|c| c.name.clone()).unwrap_or_default(),
    );
    v.insert("rule", m.rule.name.clone());
    v.insert("action", ev.action.clone());
    v.insert("action_label", action_label);
    v.insert("kind", ev.kind.as_str().to_string());
    let actor = ev
        .actor
        .name
        .clone()
        .or_else(|| ev.actor.email.clone())
        .or_else(|| ev.actor.id.clone())
        .unwrap_or_else(|| "unknown".into());
    v.insert("actor", actor);
    v.insert("actor_id", ev.actor.id.clone().unwrap_or_default());
    v.insert("actor_email", ev.actor.email.clone().unwrap_or_default());
    v.insert("actor_role", ev.actor.role.clone().unwrap_or_default());
    v.insert(
        "target",
        ev.target
            .name
            .clone()
            .or_else(|| ev.target.id.clone())
            .unwrap_or_default(),
    );
    v.insert("target_id", ev.target.id.clone().unwrap_or_default());
    v.insert("target_type", ev.target.kind.clone().unwrap_or_default());
    v.insert(
        "target_ext",
        ev.target.extension.clone().unwrap_or_default(),
    );
    v.insert("field", join(&|c| c.field.clone()));
    v.insert("old", join(&|c| c.old.clone().unwrap_or_default()));
    v.insert("new", join(&|c| c.new.clone().unwrap_or_default()));
    v.insert("source", ev.source.clone());
    v.insert("tenant", ev.tenant.clone());
    v.insert("stream", ev.stream.clone());
    v.insert("event_key", ev.key.clone());
    v.insert("client_ip", ev.client_ip.clone().unwrap_or_default());
    v
}

/// Cuts `text` to at most `limit` UTF-16 units, keeping `suffix` (the
/// opt-out line) whole at the end; a cut is marked with `…`.
pub fn fit_utf16(text: &str, suffix: &str, limit: usize) -> String {
    let units = |s: &str| s.encode_utf16().count();
    let sep = if suffix.is_empty() { "" } else { " " };
    let full = units(text) + units(sep) + units(suffix);
    if full <= limit {
        return format!("{text}{sep}{suffix}");
    }
    let budget = limit.saturating_sub(units(suffix) + units(sep) + 1);
    let mut used = 0;
    let mut cut = String::new();
    for c in text.chars() {
        if used + c.len_utf16() > budget {
            break;
        }
        used += c.len_utf16();
        cut.push(c);
    }
    format!("{}…{sep}{suffix}", cut.trim_end())
}

/// Cuts `text` to at most `limit` characters (Team Messaging).
pub fn fit_chars(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        return text.to_string();
    }
    let mut s: String = text.chars().take(limit.saturating_sub(1)).collect();
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_template_parses() {
        assert_eq!(Template::parse(DEFAULT_TEMPLATE), Ok(Template::default()));
    }

    #[test]
    fn sections_and_escapes() {
        let t = Template::parse("a {{x}} {?field}[{field}]{/field}!").expect("valid");
        let mut v = HashMap::new();
        assert_eq!(t.render(&v), "a {x} !");
        v.insert("field", "F".to_string());
        assert_eq!(t.render(&v), "a {x} [F]!");
    }

    #[test]
    fn template_errors() {
        assert!(Template::parse("{nope}")
            .unwrap_err()
            .contains("unknown placeholder"));
        assert!(Template::parse("{?field} x")
            .unwrap_err()
            .contains("never closed"));
        assert!(Template::parse("{?field}{/target}")
            .unwrap_err()
            .contains("closes section"));
        assert!(Template::parse("{/field}")
            .unwrap_err()
            .contains("closes no section"));
        assert!(Template::parse("{field").unwrap_err().contains("unclosed"));
    }

    #[test]
    fn sms_fit_keeps_opt_out() {
        let long = "é".repeat(600) + &"😀".repeat(400);
        let s = fit_utf16(&long, DEFAULT_OPT_OUT, SMS_LIMIT);
        assert!(s.encode_utf16().count() <= SMS_LIMIT);
        assert!(s.ends_with(DEFAULT_OPT_OUT));
        assert!(s.contains('…'));
        assert_eq!(
            fit_utf16("short", DEFAULT_OPT_OUT, SMS_LIMIT),
            format!("short {DEFAULT_OPT_OUT}")
        );
        assert_eq!(fit_utf16("short", "", SMS_LIMIT), "short");
    }

    proptest::proptest! {
        #[test]
        fn fit_never_exceeds(s in "\\PC{0,1500}") {
            let out = fit_utf16(&s, DEFAULT_OPT_OUT, SMS_LIMIT);
            proptest::prop_assert!(out.encode_utf16().count() <= SMS_LIMIT);
            proptest::prop_assert!(out.ends_with(DEFAULT_OPT_OUT));
        }
    }
}
