//! trailkeep keeps SaaS admin audit trails beyond the vendors' retention limits.
//!
//! Data flows one way: a stream worker (`pipeline`) pulls closed time windows
//! from a `sources::StreamSource`, commits each page together with its
//! checkpoint into the `journal`, and one sink worker per configured sink
//! delivers from the journal with its own cursor. Sources and sinks never
//! know about each other; the pipeline only knows their traits.

pub mod bench;
pub mod cli;
pub mod clients;
pub mod config;
pub mod internal_events;
pub mod journal;
pub mod model;
pub mod net;
pub mod pipeline;
pub mod sim;
pub mod sinks;
pub mod sources;
pub mod telemetry;
pub mod util;
