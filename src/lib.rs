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
//! - [`model`]: the numeric core. Synchronous, deterministic, no I/O:
//!   [`model::GaussianMixture`] (weights, means, Cholesky factors, log
//!   densities) and [`model::StepwiseEm`] (warm-up, k-means++ and batch EM
//!   initialisation, stepwise EM updates, re-seeding of dead components).
//! - [`input`]: framing bytes into whole lines in bounded memory and parsing
//!   them into row-major [`input::Batch`]es, with every bad record counted by
//!   reason; one delimiter per input, quoted fields through `csv-core`, the
//!   dimensions' names from the header or the JSON fields
//!   ([`input::Parser::names`]).
//! - [`checkpoint`]: the versioned, CRC-checked, atomically written checkpoint
//!   file and its verified loading with fallback to older generations.
//! - [`config`]: the run configuration (TOML file + flags), validated once.
//! - [`pipeline`]: async wiring only: sources (stdin thread, TCP listener),
//!   parser stage, learner thread, checkpoint writer, score sink, shutdown.
//! - [`report`]: `inspect` (table and JSON), `plot` (SVG), `diff`, score
//!   output formatting.
//!
//! ## Entry points
//!
//! `emstream run` is, in the library, [`config::Config`] (plain data: the
//! defaults, [`config::Config::from_file`] or flags) validated once by
//! [`config::Config::check`] into a [`config::RunConfig`], which
//! [`pipeline::run`]`(config, shutdown)` runs on a tokio runtime (I/O and
//! time enabled; current-thread is enough) until every source ends or the
//! `shutdown` future completes, returning a
//! [`pipeline::RunSummary`]. The other commands are plain functions:
//! [`report::inspect::render_text`] and [`report::inspect::render_json`] of
//! a [`checkpoint::load`]ed file, [`report::score::run_score`],
//! [`report::plot::run_plot`] and [`report::diff::run_diff`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = emstream::config::Config::default(); // points on stdin
//! config.components = 3;
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
//!  stdin reader thread ─┐
//!  TCP connection tasks ┴─► chunks of whole lines ─► parser ─► Batch ─► learner ─► snapshot
//!                                                        checkpoint writer · score sink ◄┘
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

pub mod checkpoint;
pub mod config;
pub mod input;
pub mod model;
pub mod pipeline;
pub mod report;
