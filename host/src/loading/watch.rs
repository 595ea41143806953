//! Hot reload: runs the [`Reloader`] when a plugin folder changes (file
//! events through `notify`), on a periodic rescan (for file systems without
//! events, and folders created later), and on SIGHUP (load now, without
//! waiting for files to settle). With automatic reload off, SIGHUP still
//! reloads.

use std::{path::PathBuf, time::Duration};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, watch},
    time::{Instant, MissedTickBehavior},
};

use super::reload::{Reloader, SETTLE_TIME, Trigger};

/// Quiet time after a file event before scanning, so a burst of events (a
/// file being written) makes one scan.
const EVENT_DEBOUNCE: Duration = Duration::from_millis(50);

/// Reloads until `stop` turns true: on file events and every `rescan_every`
/// when it is set, and on SIGHUP.
pub async fn run(
    mut reloader: Reloader,
    rescan_every: Option<Duration>,
    mut stop: watch::Receiver<bool>,
) {
    let mut stopped = std::pin::pin!(async move {
        // An error means the sender is gone, which also means stop.
        let _ = stop.wait_for(|stop| *stop).await;
    });
    let (events_tx, mut events) = mpsc::channel::<()>(1);
    // Kept alive for as long as the loop runs; `None` leaves the periodic rescan.
    let _watcher = rescan_every.and_then(|_| watch_folders(reloader.folders(), events_tx));
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => Some(hangup),
        Err(err) => {
            tracing::warn!("cannot listen for SIGHUP, so it cannot force a reload: {err}");
            None
        }
    };
    let mut rescan = rescan_every.map(|every| {
        let mut rescan = tokio::time::interval_at(Instant::now() + every, every);
        rescan.set_missed_tick_behavior(MissedTickBehavior::Delay);
        rescan
    });
    let mut settle_at: Option<Instant> = None;

    loop {
        let trigger = tokio::select! {
            () = &mut stopped => break,
            Some(_) = async { Some(rescan.as_mut()?.tick().await) } => Trigger::Watch,
            Some(()) = events.recv() => {
                tokio::time::sleep(EVENT_DEBOUNCE).await;
                while events.try_recv().is_ok() {}
                Trigger::Watch
            }
            Some(()) = async { hangup.as_mut()?.recv().await } => {
                tracing::info!("received SIGHUP: reloading the plugin folders");
                Trigger::Forced
            }
            () = async {
                match settle_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => Trigger::Watch,
        };
        let report = reloader.reload(trigger).await;
        settle_at = report.unsettled.then(|| Instant::now() + SETTLE_TIME);
    }
}

/// Watches each existing folder for changes; events are coalesced into one
/// pending notice on `events`.
fn watch_folders(folders: &[PathBuf], events: mpsc::Sender<()>) -> Option<RecommendedWatcher> {
    let handler = move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            // Full means a scan is already due.
            let _ = events.try_send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(watcher) => watcher,
        Err(err) => {
            tracing::warn!("cannot watch plugin folders, rescanning them periodically: {err}");
            return None;
        }
    };
    for folder in folders {
        if let Err(err) = watcher.watch(folder, RecursiveMode::NonRecursive) {
            tracing::warn!(
                folder = %folder.display(),
                "cannot watch plugin folder, rescanning it periodically: {err}"
            );
        }
    }
    Some(watcher)
}
