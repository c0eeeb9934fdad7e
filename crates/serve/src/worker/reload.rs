//! The model thread's view of the index files: reopened when they change on disk, or refused
//! (503) with the reason while they do not open.

use std::time::{Duration, Instant};

use super::{Failure, Worker};

/// How long a failed reopen of a changed index holds before the next try.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

impl Worker<'_> {
    /// The error index-reading requests get while the index is not served.
    pub(super) fn unavailable(&self) -> Option<Failure> {
        let problem = self.problem.lock().ok()?.clone()?;
        Some(Failure::Unavailable(format!(
            "the index is not being served: {problem}. Replace an index under a running server \
             by renaming a complete new folder into place (see docs/serve.md)"
        )))
    }

    /// Opens the index again when its files changed since it was opened (or when the last
    /// attempt failed and [`REOPEN_EVERY`] has passed); records why it cannot be served.
    pub(super) fn refresh_index(&mut self) {
        let retry = self.failed_at.is_some_and(|t| t.elapsed() >= REOPEN_EVERY);
        let Ok(index) = self.retriever.index() else {
            return;
        };
        let changed = index.changed_on_disk();
        if self.failed_at.is_some() && !retry {
            return;
        }
        let Some(why) = changed.or_else(|| retry.then(String::new)) else {
            return;
        };
        let outcome = match index.reopen() {
            Ok(index) if index.meta().fingerprint == self.fingerprint => Ok(index),
            Ok(index) => Err(format!(
                "the index in {} was replaced by one built with another model ({}): restart \
                 the server with that model",
                index.dir().display(),
                index.meta().model.display()
            )),
            Err(e) => Err(if why.is_empty() {
                e.to_string()
            } else {
                format!("{why}, and it does not open: {e}")
            }),
        };
        let reason = match outcome {
            Ok(index) => {
                tracing::info!(
                    documents = index.len(),
                    "the index's files changed ({why}): opened again and serving it"
                );
                self.retriever.replace_index(index);
                self.failed_at = None;
                None
            }
            Err(reason) => {
                if self.failed_at.is_none() {
                    tracing::warn!("{reason}: index requests get 503 until it opens");
                }
                self.failed_at = Some(Instant::now());
                Some(reason)
            }
        };
        if let Ok(mut p) = self.problem.lock() {
            *p = reason;
        }
    }
}
