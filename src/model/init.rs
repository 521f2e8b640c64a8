//! k-means++ seeding and batch EM on the warm-up buffer.
