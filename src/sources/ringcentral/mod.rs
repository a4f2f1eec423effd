//! RingCentral Audit Trail source (work in progress).

use std::sync::Arc;

use crate::config::{ConfigIssue, SourceEntry};
use crate::sources::Source;

pub fn build(entry: &SourceEntry, issues: &mut Vec<ConfigIssue>) -> Option<Arc<dyn Source>> {
    issues.push(ConfigIssue::new(
        entry.path.clone(),
        "ringcentral source not built yet",
    ));
    None
}
