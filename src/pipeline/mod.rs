//! Async wiring only: sources, parser stage, learner thread, checkpoint writer, shutdown.
