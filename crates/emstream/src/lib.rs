//! # emstream: a Gaussian mixture learned from a never-ending stream
//!
//! emstream reads points (CSV per RFC 4180, whitespace-separated, or JSON
//! lines of arrays or objects) from stdin
//! or TCP, learns a Gaussian mixture model from them by stepwise (online) EM
//! in one pass with memory that does not grow, and keeps the model in
//! crash-safe checkpoints that can be inspected, plotted, diffed and used to
//! score new points.
//!
//! ## Map
//!
//! [`model`], [`input`], [`checkpoint`] and [`score`] are the numeric core,
//! the `emstream-core` crate (no tokio, no network), re-exported here so
//! that `emstream::model::…` and the other paths name the same items.
//!
//! - [`model`]: the numeric core. Synchronous, deterministic, no I/O:
//!   [`model::GaussianMixture`] (weights, means, Cholesky factors, log
//!   densities), [`model::em`] (the public EM engine: E-step statistics of a
//!   batch against a mixture, mergeable across disjoint batches; blend with
//!   a step size; M-step returning a `Result`) and [`model::StepwiseEm`]
//!   (warm-up, k-means++ and batch EM initialisation, stepwise EM updates,
//!   re-seeding of dead components), all built from the engine's steps.
//! - [`input`]: framing bytes into whole lines in bounded memory, the
//!   checked column selection ([`input::Columns`]), and parsing into
//!   row-major [`input::Batch`]es, with every bad record counted by reason;
//!   [`input::BatchReader`] is the one read-frame-parse loop over a whole
//!   input; one delimiter per input, quoted fields through `csv-core`, the
//!   dimensions' names from the header or the JSON fields
//!   ([`input::Parser::names`]).
//! - [`checkpoint`]: the versioned, CRC-checked, atomically written checkpoint
//!   file: an explicit on-disk schema (older formats migrated on load)
//!   converted to and from the in-memory [`checkpoint::Checkpoint`],
//!   validated as a whole, loaded with fallback to older generations.
//! - [`score`]: per-point score lines and anomaly detection
//!   ([`score::AnomalyDetector`], [`score::Scorer`]), shared by `run --score`
//!   and `score`.
//! - [`config`]: the run configuration (TOML file + flags), validated once;
//!   each learner option is declared once there, and one parser reads every
//!   enum flag ([`config::enum_value`]).
//! - [`pipeline`]: async wiring only: sources behind one contract
//!   ([`pipeline::Source`]: stdin, file, TCP, MQTT, NATS JetStream read
//!   exactly once), parser stage, learner thread,
//!   the run state ([`pipeline::RunState`]), the live snapshot
//!   ([`pipeline::Snapshot`]) and its durability hook, checkpoint writer,
//!   score sink, two-phase shutdown. Its module docs say where a new source,
//!   counter or endpoint goes.
//! - [`group`]: several processes learning one model from a partitioned
//!   JetStream stream: `emstream worker` publishes E-step statistics of
//!   leased partitions, `emstream reducer` applies them by the rules of
//!   [`group::reduce`] and commits the model to a KV entry with
//!   compare-and-set.
//! - [`report`]: `inspect` (table and JSON), `plot` (SVG), `diff`, and the
//!   `score` command.
//! - [`admin`]: the admin HTTP server of a running pipeline (`/metrics`,
//!   `/healthz`, `/livez`, `/model`), reading its run state and live
//!   snapshot only.
//! - [`logging`]: the `tracing` subscriber of the binary (text or JSON on
//!   stderr) and the periodic stats line.
//! - [`security`]: who may use a listening port (TLS with rustls/ring,
//!   client certificates, a token compared in constant time:
//!   [`security::Guard`]) and bounded reads of regular files only
//!   ([`security::read_regular`]). It uses no other module.
//!
//! ## Dependency direction
//!
//! Modules only use modules listed before them here, never the reverse, so
//! there are no import cycles:
//!
//! ```text
//! model ◄── input ◄── checkpoint ◄── score ◄── config ◄── pipeline
//!                                        ▲                   (binary: main.rs uses all)
//!                                        └──── report (uses model, input, checkpoint, score, config)
//!
//! admin (uses pipeline, report, security)      logging (uses config, pipeline)
//! group (uses model, input, checkpoint, config; beside pipeline and report)
//! ```
//!
//! [`security`] depends on nothing else in the crate and may be used by any
//! module. The numeric core ([`model`]) depends on nothing else in the crate;
//! [`report`] and [`pipeline`] do not use each other.
//!
//! ## Entry points
//!
//! `emstream run` is, in the library, [`config::Config`] (plain data: the
//! defaults, [`config::Config::from_file`] or flags) validated once by
//! [`config::Config::check`] into a [`config::RunConfig`], which
//! [`pipeline::run`]`(config, shutdown)` runs on a tokio runtime (I/O and
//! time enabled; current-thread is enough) until every source ends or the
//! `shutdown` future completes, returning a
//! [`pipeline::RunSummary`]. [`pipeline::Pipeline`] is the same run with its
//! state, live snapshot and durability hook in hand before it starts. The
//! other commands are plain functions: [`report::inspect::render_text`] and
//! [`report::inspect::render_json`] of a [`checkpoint::load`]ed file,
//! [`report::score::run_score`], [`report::plot::run_plot`] and
//! [`report::diff::run_diff`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = emstream::config::Config::default(); // points on stdin
//! config.components = emstream::model::ComponentCount::Fixed(3); // or ComponentCount::Auto
//! config.checkpoint = Some("model.ckpt".into());
//! let run = config.check()?;
//! // Stop only at the end of the input.
//! let summary = emstream::pipeline::run(run, std::future::pending()).await?;
//! assert!(summary.line().contains("points used"));
//! # Ok(())
//! # }
//! ```
//!
//! ## Data flow
//!
//! ```text
//!  Source: stdin thread ─┐
//!  Source: file thread  ─┼─► chunks of whole lines ─► parser ─► Batch ─► learner ─► Arc<Snapshot> (watch)
//!  Source: TCP tasks    ─┘   (+ source positions)                  │          │
//!                                                     score lines ◄┘          ├─► checkpoint writer ─► durable hook
//!                                                                             └─► any reader (/model, /metrics)
//! ```
//!
//! Every channel is bounded and carries chunks or batches, never single
//! points, so a slow learner slows the readers and memory stays flat.
#![deny(missing_docs)]
// `!(x > 0.0)` is written on purpose throughout the numeric code: it is true
// for NaN as well, which is exactly what those guards must catch.
#![allow(clippy::neg_cmp_op_on_partial_ord)]
// Index loops over dimensions and components mirror the formulas they compute.
#![allow(clippy::needless_range_loop)]

pub use emstream_core::{checkpoint, input, model, score};

pub mod admin;
pub mod config;
pub mod group;
pub mod logging;
pub mod pipeline;
pub mod report;
pub mod security;

#[cfg(test)]
mod layering {
    //! The dependency direction of the crate root's docs, checked on the
    //! sources: a module names only modules of a lower rank. The core
    //! modules' sources are in `emstream-core`, which checks them; here they
    //! are only names the crate's own modules may use.

    use std::path::Path;

    /// The modules re-exported from `emstream-core`.
    const CORE: [&str; 4] = ["model", "input", "checkpoint", "score"];

    /// (module, rank): a module may use modules of a lower rank only.
    const RANKS: [(&str, u32); 11] = [
        ("security", 0),
        ("model", 0),
        ("input", 1),
        ("checkpoint", 2),
        ("score", 3),
        ("config", 4),
        ("report", 5),
        ("pipeline", 5),
        ("group", 5),
        ("admin", 6),
        ("logging", 6),
    ];

    #[test]
    fn modules_use_only_modules_below_them() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let broken = emstream_core::layering::rank_violations(&src, &RANKS, &CORE);
        assert!(broken.is_empty(), "{broken:#?}");
    }
}
