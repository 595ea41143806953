//! A connector's stdout and stderr: each complete line goes to the host's
//! log through `tracing`, labelled with the call that printed it, and the
//! last lines of the call are kept so a crash can say what the guest printed
//! before it died (a Rust panic prints its message there).
//!
//! One [`GuestLog`] serves an instance for its whole life; each call on it
//! begins with [`GuestLog::begin`] and ends with [`GuestLog::finish`], so a
//! reused instance never reports an earlier call's lines as its own.

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};

use tokio::io::AsyncWrite;
use wasmtime_wasi::{
    async_trait,
    cli::{IsTerminal, StdoutStream},
    p2::{OutputStream, Pollable, StreamError},
};

/// Longest line logged as is; longer ones are cut.
const MAX_LINE: usize = 8 * 1024;
/// How many recent lines are kept for crash reports.
const KEPT_LINES: usize = 8;

#[derive(Default)]
struct State {
    /// The guest function of the call running now.
    operation: &'static str,
    partial: Vec<u8>,
    recent: VecDeque<String>,
}

/// One instance's guest output. Clones share the same buffer.
#[derive(Clone)]
pub(in crate::runtime) struct GuestLog {
    connector: Arc<str>,
    state: Arc<Mutex<State>>,
}

impl GuestLog {
    pub(in crate::runtime) fn new(connector: Arc<str>) -> Self {
        Self {
            connector,
            state: Arc::default(),
        }
    }

    /// Starts the output of a call of guest function `operation`.
    pub(in crate::runtime) fn begin(&self, operation: &'static str) {
        let mut state = self.lock();
        state.operation = operation;
        state.partial.clear();
        state.recent.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while logging leaves nothing half-updated that matters.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `text` as the guest wrote it (`waits.log` of the async world).
    pub(in crate::runtime) fn write_text(&self, text: &str) {
        self.write(text.as_bytes());
    }

    fn write(&self, bytes: &[u8]) {
        let mut state = self.lock();
        for &byte in bytes {
            if byte == b'\n' {
                let line = std::mem::take(&mut state.partial);
                self.emit(&mut state, &line);
            } else if state.partial.len() < MAX_LINE {
                state.partial.push(byte);
            }
        }
    }

    fn emit(&self, state: &mut State, line: &[u8]) {
        let line = String::from_utf8_lossy(line).trim_end().to_owned();
        if line.is_empty() {
            return;
        }
        tracing::info!(target: "connector", connector = %self.connector, operation = state.operation, "{line}");
        if state.recent.len() == KEPT_LINES {
            state.recent.pop_front();
        }
        state.recent.push_back(line);
    }

    /// Ends the call's output: flushes a trailing unterminated line and
    /// returns the last lines the call printed.
    pub(in crate::runtime) fn finish(&self) -> Vec<String> {
        let mut state = self.lock();
        let line = std::mem::take(&mut state.partial);
        self.emit(&mut state, &line);
        state.recent.drain(..).collect()
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    // Written straight through, not via a buffering adapter, so nothing the
    // guest printed is lost when it traps right after.
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestLog {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        GuestLog::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[async_trait]
impl Pollable for GuestLog {
    async fn ready(&mut self) {}
}

impl AsyncWrite for GuestLog {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
