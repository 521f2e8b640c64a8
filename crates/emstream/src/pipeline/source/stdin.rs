//! Standard input as a source: read on its own thread (`reader.rs`).

use super::{reader, Source, SourceContext, SourceFuture};

/// Points on standard input.
#[derive(Debug)]
pub struct StdinSource;

impl Source for StdinSource {
    fn name(&self) -> String {
        "stdin".into()
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> SourceFuture {
        reader::run_on_thread(std::io::stdin(), self.name(), ctx)
    }
}
