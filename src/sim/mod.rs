//! Simulators of every external API trailkeep talks to. They behave like
//! the real services as `shared/api-facts.md` describes (auth, paging,
//! limits, rate-limit penalties, error bodies) and take fault knobs, so
//! tests and `trailkeep demo` exercise the real client code paths.
//!
//! Each simulator is an axum router over its own state; `serve` binds it
//! on loopback and returns a handle.

pub mod hec;
pub mod limiter;
pub mod ringcentral;
pub mod ringcentral_messaging;
pub mod symphony;
pub mod vbrick;
pub mod webhook;

use std::net::SocketAddr;

use axum::Router;
use tokio_util::sync::CancellationToken;

/// A running simulator.
pub struct SimHandle {
    pub addr: SocketAddr,
    stop: CancellationToken,
}

impl SimHandle {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// A token cancelled when the simulator stops (for its background tasks).
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Serves `router` on `addr` (port 0 = any free port) until the handle is
/// dropped or stopped.
pub async fn serve(router: Router, addr: SocketAddr) -> std::io::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router.into_make_service())
            .with_graceful_shutdown(async move { s.cancelled().await })
            .await;
    });
    Ok(SimHandle { addr: local, stop })
}

/// 127.0.0.1 with a free port.
pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}
