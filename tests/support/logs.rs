//! The library's own tracing output, captured for tests that call bastion's library in-process
//! (the IMDS client): assert on warnings, and that no secret is ever logged.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing::level_filters::LevelFilter;
use tracing::subscriber::DefaultGuard;

/// What was logged on this thread while the guard from [`Logs::capture`] lived.
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Capture this thread's events up to `max_level` (plain text, no colours) until the guard
    /// drops. Current-thread runtimes only: other threads log elsewhere.
    pub fn capture(max_level: impl Into<LevelFilter>) -> (Logs, DefaultGuard) {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(max_level)
            .with_writer(move || LogWriter(writer.clone()))
            .finish();
        (Logs(buf), tracing::subscriber::set_default(subscriber))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
