//! RingCentral SMS and Team Messaging endpoints of the simulator (used by
//! the alert channels). Placeholder state; routes are added with alerts.

use std::sync::Arc;

use axum::Router;

#[derive(Default)]
pub struct Messaging {}

pub fn routes() -> Router<Arc<super::ringcentral::RingCentralSim>> {
    Router::new()
}
