//! The admin HTTP server (`--admin IP:PORT`, axum): what an operator and a
//! monitoring system watch a long run through. It reads only the run state
//! and the live snapshot of a [`Pipeline`](crate::pipeline::Pipeline), so it
//! never blocks the learner, and it answers until the run has drained
//! ([`RunState::finished_token`]).
//!
//! | path | answer |
//! |---|---|
//! | `GET /metrics` | OpenMetrics text ([`metrics`]), `application/openmetrics-text; version=1.0.0; charset=utf-8` |
//! | `GET /healthz` | `200` while learning; `503` while starting (loading the checkpoint), draining or finished, and while the last checkpoint write failed (learning goes on; the body says why) |
//! | `GET /livez` | `200` while the process runs |
//! | `GET /model` | the live model as the JSON of `emstream inspect --json` (`503` before the first model exists) |
//! | `GET /` | the live page ([`live`]): the model over recent points, time series, the state in words |
//! | `GET /recent` | recent points scored under the live model, as JSON ([`live::recent`]) |
//! | `GET /history` | the state now and one sample a second for the last hour, as JSON (`?since=T`: samples after Unix time `T`) |
//!
//! `/healthz` answers a JSON object `{"status": ..., "phase": ...,
//! "checkpoint_error": ...}`; `status` is `ok`, `starting`, `draining`,
//! `finished` or `checkpoint_failing`. It is open without the token, so
//! the error's paths are cut to their file names.
//!
//! [`start`] is the one place that binds the listener and builds the
//! router ([`router`]). The listener goes through the run's
//! [`Guard`] ([`GuardedListener`]: TLS with
//! `--tls-cert`/`--tls-key`), and with `--auth-token-file` `/metrics`,
//! `/model`, `/recent` and `/history` answer `401` without
//! `Authorization: Bearer TOKEN`; `/healthz`, `/livez` and the page itself
//! (which holds no data of the run) stay open.

pub mod conn;
pub mod live;
pub mod metrics;
pub mod model_cache;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::pipeline::{Phase, RunState, SnapshotReceiver};
use crate::security::{Guard, GuardedListener, GuardedStream};

/// What every handler reads.
#[derive(Clone)]
pub struct AdminState {
    state: Arc<RunState>,
    snapshots: SnapshotReceiver,
    registry: Arc<Registry>,
    guard: Arc<Guard>,
    history: Arc<live::History>,
    model_cache: Arc<model_cache::ModelCache>,
}

impl AdminState {
    /// The admin view of a run: its state and live snapshot
    /// ([`Pipeline::state`](crate::pipeline::Pipeline::state),
    /// [`Pipeline::snapshots`](crate::pipeline::Pipeline::snapshots)).
    pub fn new(state: Arc<RunState>, snapshots: SnapshotReceiver) -> Self {
        let registry = Arc::new(metrics::registry(state.clone(), snapshots.clone()));
        AdminState {
            state,
            snapshots,
            registry,
            guard: Arc::new(Guard::default()),
            history: Arc::new(live::History::default()),
            model_cache: Arc::default(),
        }
    }

    /// The same view behind `guard`: its TLS on the listener, its token as
    /// the bearer token of `/metrics` and `/model`.
    pub fn with_guard(mut self, guard: Arc<Guard>) -> Self {
        self.guard = guard;
        self
    }

    /// A `401` response unless the request carries the guard's bearer
    /// token (`None`, let in, always without a token).
    fn refusal(&self, headers: &HeaderMap) -> Option<Response> {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        self.guard.check_bearer(given).err().map(|denied| {
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                format!("{denied}\n"),
            )
                .into_response()
        })
    }
}

/// The endpoints (see the module docs).
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .route("/model", get(model))
        .route("/", get(page))
        .route("/recent", get(recent))
        .route("/history", get(history))
        .with_state(state)
}

/// A running admin server.
#[derive(Debug)]
pub struct AdminServer {
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// The address actually bound (port 0 picks one).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Waits until the server has stopped (after the run finished).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Binds `addr` and serves [`router`] on it until the run's
/// [`RunState::finished_token`] fires; meanwhile keeps the recent points
/// and samples the history of the live page.
///
/// # Errors
///
/// The bind error (address in use, no permission).
pub async fn start(addr: SocketAddr, state: AdminState) -> std::io::Result<AdminServer> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    if let Some(w) = state.guard.exposure_warning(local, "the admin server") {
        tracing::warn!(target: "emstream", "{w} (/metrics, /model, /recent and /history show the model and the run)");
    }
    let finished = state.state.finished_token();
    state.state.recent().watch();
    tokio::spawn(live::sample_history(
        state.history.clone(),
        state.state.clone(),
        state.snapshots.clone(),
        finished.clone(),
    ));
    // Refusals are said for the first and then every 1000th: a flood of
    // strangers must not flood the log too.
    let refusals = std::sync::atomic::AtomicU64::new(0);
    let listener = AdminListener {
        guarded: GuardedListener::new(listener, state.guard.clone(), move |peer, denied| {
            let n = refusals.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if n % 1000 == 1 {
                tracing::warn!(target: "emstream", "admin connection from {peer} refused: {denied} ({n} refused so far)");
            }
        }),
        slots: Arc::new(tokio::sync::Semaphore::new(conn::MAX_CONNECTIONS)),
        refused: 0,
    };
    let app = router(state);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(finished.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!(target: "emstream", "admin server stopped: {e}");
        }
    });
    Ok(AdminServer { local, task })
}

/// The guarded listener as axum's listener: connections that passed the
/// TLS handshake, [`conn::Bounded`] (at most [`conn::MAX_CONNECTIONS`]
/// open; more are closed as they come).
struct AdminListener {
    guarded: GuardedListener,
    slots: Arc<tokio::sync::Semaphore>,
    /// Connections closed for want of a slot.
    refused: u64,
}

impl axum::serve::Listener for AdminListener {
    type Io = conn::Bounded<GuardedStream<tokio::net::TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Some((io, peer)) = self.guarded.accept().await else {
                // The accept task ended: serve nothing more.
                return std::future::pending().await;
            };
            match self.slots.clone().try_acquire_owned() {
                Ok(slot) => return (conn::Bounded::new(io, slot), peer),
                Err(_) => {
                    self.refused += 1;
                    // Said for the first and then every 1000th: a flood
                    // must not flood the log too.
                    if self.refused % 1000 == 1 {
                        tracing::warn!(
                            target: "emstream",
                            "admin connection from {peer} closed: {} connections are open already ({} closed so far)",
                            conn::MAX_CONNECTIONS,
                            self.refused
                        );
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.guarded.local_addr())
    }
}

async fn metrics_handler(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Some(refused) = s.refusal(&headers) {
        return refused;
    }
    match metrics::render(&s.registry) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics could not be encoded\n",
        )
            .into_response(),
    }
}

/// The health of a run: `(HTTP status, status word, phase word, last
/// checkpoint error)`.
pub fn health(state: &RunState) -> (StatusCode, &'static str, &'static str, Option<String>) {
    let error = state.checkpoint_stats().last_error;
    let (phase, status) = match state.phase() {
        Phase::Starting => ("starting", "starting"),
        Phase::Running if error.is_some() => ("running", "checkpoint_failing"),
        Phase::Running => ("running", "ok"),
        Phase::Draining => ("draining", "draining"),
        Phase::Finished => ("finished", "finished"),
    };
    let code = if status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, status, phase, error)
}

async fn healthz(State(s): State<AdminState>) -> Response {
    let (code, status, phase, error) = health(&s.state);
    // /healthz is open to probes without the token: the error names the
    // file, not where the host keeps it.
    let error = error.map(|e| without_directories(&e));
    let body = json!({ "status": status, "phase": phase, "checkpoint_error": error });
    (code, axum::Json(body)).into_response()
}

/// `text` with every absolute path (a word starting with `/`) cut to its
/// file name.
fn without_directories(text: &str) -> String {
    text.split(' ')
        .map(|word| match word.strip_prefix('/') {
            Some(rest) => rest.rsplit('/').next().unwrap_or(rest),
            None => word,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn livez() -> &'static str {
    "alive\n"
}

async fn model(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Some(refused) = s.refusal(&headers) {
        return refused;
    }
    // Clone the Arc and release the watch at once: the learner never waits.
    let snap = s.snapshots.borrow().clone();
    let Some(snap) = snap else {
        let body =
            json!({ "error": "no model yet: the first model is fitted after the warm-up points" });
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    };
    // Rendered once per snapshot, one rendering at a time, off the runtime
    // that also reads the input (see [`model_cache`]).
    match s.model_cache.get(snap).await {
        // What `inspect --json` prints (and the live alert threshold),
        // final newline included.
        Ok(text) => (
            [(header::CONTENT_TYPE, "application/json")],
            String::clone(&text),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        live::PAGE,
    )
        .into_response()
}

/// `?since=T` of `/history`.
#[derive(Debug, serde::Deserialize)]
struct Since {
    since: Option<f64>,
}

async fn history(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Query(q): Query<Since>,
) -> Response {
    if let Some(refused) = s.refusal(&headers) {
        return refused;
    }
    let body = json!({
        "now": live::now(&s.state, &s.snapshots),
        "samples": s.history.since(q.since.unwrap_or(0.0)),
    });
    axum::Json(body).into_response()
}

async fn recent(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Some(refused) = s.refusal(&headers) {
        return refused;
    }
    let snap = s.snapshots.borrow().clone();
    let state = s.state.clone();
    // Scoring a few thousand points under K components: off the runtime.
    let scored = tokio::task::spawn_blocking(move || {
        let (dim, values) = state.recent().points();
        let learner = snap.as_ref().map(|s| &s.checkpoint.learner);
        let model = learner.and_then(|l| l.mixture().or(l.provisional()));
        let live_threshold = state.learner_counts().alert_threshold;
        live::recent(dim, &values, model, &state.recent().alert(), live_threshold)
    })
    .await;
    match scored {
        Ok(body) => axum::Json(body).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the recent points could not be scored\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn health_errors_name_files_not_directories() {
        assert_eq!(
            super::without_directories(
                "/var/lib/emstream/m.ckpt: cannot write /var/lib/emstream/.m.ckpt.tmp.12: No space left on device (os error 28)"
            ),
            "m.ckpt: cannot write .m.ckpt.tmp.12: No space left on device (os error 28)"
        );
        assert_eq!(super::without_directories("m.ckpt: gone"), "m.ckpt: gone");
    }
}
