//! A file as a source: opened before the run starts, read on its own thread
//! (`reader.rs`).

use std::path::{Path, PathBuf};

use super::{reader, Source, SourceContext, SourceFuture};
use crate::pipeline::PipelineError;

/// Points in a file.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    file: std::fs::File,
}

impl FileSource {
    /// Opens `path`.
    ///
    /// # Errors
    ///
    /// [`PipelineError::Open`] naming the file.
    pub fn open(path: &Path) -> Result<Self, PipelineError> {
        let file = std::fs::File::open(path).map_err(|e| PipelineError::Open {
            path: path.to_path_buf(),
            source: e,
        })?;
        Ok(FileSource {
            path: path.to_path_buf(),
            file,
        })
    }
}

impl Source for FileSource {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> SourceFuture {
        let name = self.name();
        reader::run_on_thread(self.file, name, ctx)
    }
}
