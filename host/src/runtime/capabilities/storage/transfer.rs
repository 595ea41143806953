//! Moving a file or directory from an SSH host to an object store, in the
//! background, host side and streamed: nothing passes through a guest's
//! memory, an object appears only complete (one PUT, or a completed
//! multipart upload), and a transfer outlives the call that started it.
//!
//! Transfers are keyed by their destination URI, per plugin: a later call
//! (of any instance of the plugin on this server) joins the transfer in
//! flight, learns how far it is, and takes its outcome once. Another
//! server finds the destination complete, or starts a transfer of its own;
//! both write the same bytes, and a reader sees either's complete object.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::{io::AsyncReadExt, sync::Semaphore};

use super::{
    StorageError,
    metrics::StorageMetrics,
    stores::{Located, Stores},
    uri::ObjectUri,
};
use crate::runtime::capabilities::ssh::{Found, RemoteFiles, SshError};

/// Bytes read from the source and sent as one part: S3's smallest part.
/// A transfer holds about three of them at once.
const CHUNK: usize = 5 << 20;
/// Parts in flight per file.
const PARTS_IN_FLIGHT: usize = 2;
/// How long a finished transfer's outcome waits for a call to take it.
const KEPT_FOR: Duration = Duration::from_secs(30 * 60);
/// How long opening a source file may take.
const OPEN_WITHIN: Duration = Duration::from_secs(60);

/// Where a transfer stands, as the guest learns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TransferState {
    Moving { moved: u64, total: u64 },
    Done(u64),
    Missing,
    TooLarge(u64),
    Failed(String),
}

/// One transfer in flight or finished.
struct Transfer {
    total: u64,
    moved: AtomicU64,
    finished: Mutex<Option<(Instant, Result<u64, String>)>>,
}

/// A plugin's transfers.
pub(super) struct Transfers {
    by_uri: Mutex<HashMap<String, Arc<Transfer>>>,
    slots: Arc<Semaphore>,
    timeout: Duration,
}

/// What a call asks to move.
pub(super) struct Move<'a> {
    pub(super) files: RemoteFiles,
    pub(super) path: &'a str,
    pub(super) uri: &'a ObjectUri,
    pub(super) max_bytes: Option<u64>,
    pub(super) connector: &'a str,
}

impl Transfers {
    /// At most `concurrent` transfers run at once; each ends within
    /// `timeout`.
    pub(super) fn new(concurrent: usize, timeout: Duration) -> Self {
        Self {
            by_uri: Mutex::default(),
            slots: Arc::new(Semaphore::new(concurrent)),
            timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Transfer>>> {
        self.by_uri.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where the transfer of `asked` stands, starting it when none runs
    /// and the destination is not complete; the source is looked at, and
    /// the destination checked, by `deadline`.
    pub(super) async fn copy(
        &self,
        stores: &Stores,
        metrics: &StorageMetrics,
        asked: Move<'_>,
        deadline: Instant,
    ) -> Result<TransferState, StorageError> {
        if let Some(state) = self.joined(asked.uri, metrics, asked.connector) {
            return Ok(state);
        }
        let found = asked
            .files
            .find(asked.path, deadline)
            .await
            .map_err(source_error)?;
        let (files, total) = match found {
            Found::Nothing => return Ok(TransferState::Missing),
            Found::Directory(files) if files.is_empty() => return Ok(TransferState::Missing),
            Found::File(size) => (vec![(String::new(), size)], size),
            Found::Directory(files) => {
                let total = files.iter().map(|(_, size)| size).sum();
                (files, total)
            }
        };
        if asked.max_bytes.is_some_and(|max| total >= max) {
            return Ok(TransferState::TooLarge(total));
        }
        let located: Vec<(Located, String, u64)> = files
            .iter()
            .map(|(relative, size)| {
                let uri = if relative.is_empty() {
                    asked.uri.clone()
                } else {
                    asked.uri.join(relative)
                };
                let source = if relative.is_empty() {
                    asked.path.to_owned()
                } else {
                    format!("{}/{relative}", asked.path.trim_end_matches('/'))
                };
                Ok((stores.locate(&uri)?, source, *size))
            })
            .collect::<Result<_, StorageError>>()?;
        if tokio::time::timeout_at(deadline.into(), complete(&located))
            .await
            .unwrap_or(Ok(false))?
        {
            return Ok(TransferState::Done(total));
        }
        let transfer = {
            let mut running = self.lock();
            if let Some(transfer) = running.get(&asked.uri.text) {
                // Another call started it meanwhile.
                return Ok(progress(transfer));
            }
            let transfer = Arc::new(Transfer {
                total,
                moved: AtomicU64::new(0),
                finished: Mutex::new(None),
            });
            running.insert(asked.uri.text.clone(), Arc::clone(&transfer));
            transfer
        };
        metrics.started(asked.connector);
        tracing::info!(
            connector = asked.connector,
            "moving {} ({total} bytes) from {} to {}",
            asked.path,
            asked.files.shown(),
            asked.uri.text
        );
        let slots = Arc::clone(&self.slots);
        let timeout = self.timeout;
        let remote = asked.files.clone();
        let shown = asked.uri.text.clone();
        let connector = asked.connector.to_owned();
        let metrics = metrics.clone();
        let running = Arc::clone(&transfer);
        tokio::spawn(async move {
            let outcome = match slots.acquire_owned().await {
                Ok(_slot) => tokio::time::timeout(timeout, move_all(&remote, &located, &running))
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!(
                            "moving to {shown} took longer than {}s",
                            timeout.as_secs()
                        ))
                    }),
                Err(_) => Err("the server is stopping".to_owned()),
            };
            match &outcome {
                Ok(bytes) => {
                    metrics.finished(&connector, "done", *bytes);
                    tracing::info!(connector, "moved {bytes} bytes to {shown}");
                }
                Err(why) => {
                    metrics.finished(&connector, "failed", 0);
                    tracing::warn!(connector, "moving to {shown} failed: {why}");
                }
            }
            *running
                .finished
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), outcome));
        });
        Ok(progress(&transfer))
    }

    /// The state of a transfer to `uri` this server runs or ran; a
    /// finished one's outcome is taken (a failure is told once, and the
    /// next call starts anew). Outcomes no call took are forgotten after
    /// [`KEPT_FOR`].
    fn joined(
        &self,
        uri: &ObjectUri,
        metrics: &StorageMetrics,
        connector: &str,
    ) -> Option<TransferState> {
        let mut running = self.lock();
        running.retain(|_, transfer| {
            transfer
                .finished
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .is_none_or(|(at, _)| at.elapsed() < KEPT_FOR)
        });
        let transfer = running.get(&uri.text)?;
        let finished = transfer
            .finished
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match finished {
            None => {
                metrics.joined(connector);
                Some(progress(transfer))
            }
            Some((_, outcome)) => {
                running.remove(&uri.text);
                Some(match outcome {
                    Ok(bytes) => TransferState::Done(bytes),
                    Err(why) => TransferState::Failed(why),
                })
            }
        }
    }
}

fn progress(transfer: &Transfer) -> TransferState {
    TransferState::Moving {
        moved: transfer.moved.load(Ordering::Relaxed),
        total: transfer.total,
    }
}

fn source_error(err: SshError) -> StorageError {
    match err {
        SshError::Unreachable(m) | SshError::Timeout(m) => StorageError::Unavailable(m),
        other => StorageError::Invalid(other.to_string()),
    }
}

/// Whether every file is at its destination with its size.
async fn complete(files: &[(Located, String, u64)]) -> Result<bool, StorageError> {
    for (located, _, size) in files {
        match located.store.head(&located.path).await {
            Ok(meta) if meta.size == *size => {}
            Ok(_) | Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(err) => return Err(StorageError::Unavailable(err.to_string())),
        }
    }
    Ok(true)
}

/// Moves every file, counting bytes into `transfer`; the bytes moved.
async fn move_all(
    remote: &RemoteFiles,
    files: &[(Located, String, u64)],
    transfer: &Transfer,
) -> Result<u64, String> {
    let mut total = 0;
    for (located, source, _) in files {
        total += move_file(remote, source, located, transfer).await?;
    }
    Ok(total)
}

/// Streams `source` to `located`: one PUT when it fits a chunk, else a
/// multipart upload completed at its end (aborted on failure).
async fn move_file(
    remote: &RemoteFiles,
    source: &str,
    located: &Located,
    transfer: &Transfer,
) -> Result<u64, String> {
    let mut reader = remote
        .open(source, OPEN_WITHIN)
        .await
        .map_err(|err| err.to_string())?;
    let read_error = |err: std::io::Error| format!("reading {source} on {}: {err}", remote.shown());
    let mut first = vec![0; CHUNK];
    let filled = fill(&mut reader.file, &mut first)
        .await
        .map_err(read_error)?;
    transfer.moved.fetch_add(filled as u64, Ordering::Relaxed);
    if filled < CHUNK {
        first.truncate(filled);
        located
            .store
            .put(&located.path, PutPayload::from(first))
            .await
            .map_err(|err| format!("writing {}: {err}", located.path))?;
        return Ok(filled as u64);
    }
    let upload = located
        .store
        .put_multipart(&located.path)
        .await
        .map_err(|err| format!("starting the upload of {}: {err}", located.path))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, CHUNK);
    let mut moved = filled as u64;
    writer.write(&first);
    let streamed: Result<(), String> = async {
        loop {
            writer
                .wait_for_capacity(PARTS_IN_FLIGHT)
                .await
                .map_err(|err| format!("uploading {}: {err}", located.path))?;
            let filled = fill(&mut reader.file, &mut first)
                .await
                .map_err(read_error)?;
            if filled == 0 {
                return Ok(());
            }
            writer.write(&first[..filled]);
            moved += filled as u64;
            transfer.moved.fetch_add(filled as u64, Ordering::Relaxed);
        }
    }
    .await;
    match streamed {
        Ok(()) => {
            writer
                .finish()
                .await
                .map_err(|err| format!("completing the upload of {}: {err}", located.path))?;
            Ok(moved)
        }
        Err(why) => {
            let _ = writer.abort().await;
            Err(why)
        }
    }
}

/// Reads into `buffer` until it is full or the file ends; the bytes read.
async fn fill(
    file: &mut (impl tokio::io::AsyncRead + Unpin),
    buffer: &mut [u8],
) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        let read = file.read(&mut buffer[filled..]).await?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    Ok(filled)
}

/// Whether anything is at `located`: an object, or objects under it.
pub(super) async fn exists(located: &Located) -> Result<bool, StorageError> {
    match located.store.head(&located.path).await {
        Ok(_) => return Ok(true),
        Err(object_store::Error::NotFound { .. }) => {}
        Err(err) => return Err(StorageError::Unavailable(err.to_string())),
    }
    let mut listed = located.store.list(Some(&located.path));
    match listed.next().await {
        None | Some(Err(object_store::Error::NotFound { .. })) => Ok(false),
        Some(Ok(_)) => Ok(true),
        Some(Err(err)) => Err(StorageError::Unavailable(err.to_string())),
    }
}
