//! Log capture for tests that check what the processes under test log (and that no secret ever
//! reaches the log). The subscriber is global, so a test binary that captures holds one test.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// Everything logged since [`install`](Self::install), as plain text in memory.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Installs the global subscriber (no colours, `filter` as for `RUST_LOG`) writing into a new
    /// capture. Panics if a subscriber is already installed.
    pub fn install(filter: &str) -> Self {
        let logs = Self::default();
        let writer = logs.clone();
        tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).with_env_filter(filter).init();
        logs
    }

    /// What was logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
