//! Everything a person reads: `inspect` (table and JSON), `plot` (SVG),
//! `diff` between checkpoints, per-point score output.

pub mod diff;
mod error;
pub mod inspect;
pub mod plot;
pub mod score;

pub use error::ReportError;
