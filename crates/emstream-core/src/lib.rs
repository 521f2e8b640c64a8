//! # emstream-core: the numeric core of emstream
//!
//! The Gaussian mixture, the stepwise (online) EM learner, input parsing,
//! the checkpoint format and scoring, usable as a library: synchronous, no
//! async runtime, no network, no HTTP, no images. Its API takes plain
//! slices in and gives owned results out (row-major `&[f64]` points,
//! `Vec`s and plain structs back), so that a binding to another language can
//! wrap it without lifetimes crossing the boundary. The `emstream` crate
//! builds the command-line program and the streaming pipeline on it.
//!
//! ## Map
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
//!   ([`score::AnomalyDetector`], [`score::Scorer`]).
//! - [`regular_file`]: opening and bounded reading of regular files only
//!   (never a FIFO or a device).
//!
//! ## Dependency direction
//!
//! Modules only use modules listed before them here, never the reverse, so
//! there are no import cycles:
//!
//! ```text
//! model ◄── input ◄── checkpoint ◄── score
//!                         │
//! regular_file ◄──────────┘
//! ```
//!
//! [`regular_file`] depends on nothing else in the crate.
#![deny(missing_docs)]
// `!(x > 0.0)` is written on purpose throughout the numeric code: it is true
// for NaN as well, which is exactly what those guards must catch.
#![allow(clippy::neg_cmp_op_on_partial_ord)]
// Index loops over dimensions and components mirror the formulas they compute.
#![allow(clippy::needless_range_loop)]

pub mod checkpoint;
pub mod input;
#[cfg(any(test, feature = "test-support"))]
pub mod layering;
pub mod model;
pub mod regular_file;
pub mod score;

#[cfg(test)]
mod layering_test {
    //! The dependency direction of the crate root's docs, checked on the
    //! sources: a module names only modules of a lower rank.

    use std::path::Path;

    /// (module, rank): a module may use modules of a lower rank only.
    const RANKS: [(&str, u32); 5] = [
        ("regular_file", 0),
        ("model", 0),
        ("input", 1),
        ("checkpoint", 2),
        ("score", 3),
    ];

    #[test]
    fn modules_use_only_modules_below_them() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let broken = crate::layering::rank_violations(&src, &RANKS, &[]);
        assert!(broken.is_empty(), "{broken:#?}");
    }
}
