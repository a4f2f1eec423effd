//! API clients shared by a source and a sink of the same vendor (the
//! RingCentral platform serves both the audit-trail source and the SMS /
//! Team Messaging alert channels). Sources and sinks depend on these, never
//! on each other.

pub mod ringcentral;
