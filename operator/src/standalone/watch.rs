//! Watching the configuration directory: inotify (through `notify`) events, recursively, turned
//! into a "something changed" signal, plus a slow periodic rescan as a safety net for
//! filesystems whose events go missing. Bursts (an editor's write-rename-chmod, `git checkout`)
//! are coalesced by [`debounce`] so one edit is one reload, within 100 ms.

use std::path::Path;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Quiet time that ends a burst.
const QUIET: Duration = Duration::from_millis(25);
/// A burst never delays a reload longer than this.
const MAX_DELAY: Duration = Duration::from_millis(100);
/// The safety-net rescan period.
const RESCAN: Duration = Duration::from_secs(5);

/// Starts watching `root`. Keep the watcher alive as long as changes are wanted.
///
/// # Errors
///
/// When the directory cannot be watched.
pub fn watch(
    root: &Path,
) -> Result<(notify::RecommendedWatcher, mpsc::UnboundedReceiver<()>), notify::Error> {
    let (tx, rx) = mpsc::unbounded_channel();
    let events = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reads (access events) change nothing; errors may hide a change, so they count.
        if event.is_ok_and(|e| e.kind.is_access()) {
            return;
        }
        let _ = events.send(());
    })?;
    watcher.watch(root, RecursiveMode::Recursive)?;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RESCAN);
        tick.tick().await;
        loop {
            tick.tick().await;
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    Ok((watcher, rx))
}

/// Swallows the rest of a burst: returns after [`QUIET`] without events, or [`MAX_DELAY`].
pub async fn debounce(changes: &mut mpsc::UnboundedReceiver<()>) {
    let deadline = tokio::time::Instant::now() + MAX_DELAY;
    loop {
        let quiet_until = (tokio::time::Instant::now() + QUIET).min(deadline);
        match tokio::time::timeout_at(quiet_until, changes.recv()).await {
            Ok(Some(())) if tokio::time::Instant::now() < deadline => {}
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_write_is_signalled_and_bursts_coalesce_within_the_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_watcher, mut rx) = watch(dir.path()).expect("watch");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        for i in 0..20 {
            std::fs::write(dir.path().join("sub/a.yaml"), format!("n: {i}")).expect("write");
        }
        tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .expect("an event arrives")
            .expect("open");
        let started = tokio::time::Instant::now();
        debounce(&mut rx).await;
        assert!(started.elapsed() <= MAX_DELAY + Duration::from_millis(20));
    }
}
