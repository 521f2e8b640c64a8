//! The `emstream` command line.
fn main() {}
