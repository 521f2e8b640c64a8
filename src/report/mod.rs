//! inspect (table and JSON), plot (SVG), diff, score output.
