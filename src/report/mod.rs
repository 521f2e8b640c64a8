//! Everything a person reads: `inspect` (table and JSON), `plot` (SVG),
//! `diff` between checkpoints, per-point score output.

pub mod inspect;
pub mod score;
