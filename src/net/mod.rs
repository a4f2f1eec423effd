//! HTTP plumbing shared by sources and sinks: the client, bounded body
//! reading, and the client-side rate budget.

pub mod http;
pub mod rate;
