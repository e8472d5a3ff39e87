//! The routing index feed: a worker or gateway client that sends `WatchIndex` on its link gets
//! every uid and group this gateway holds (a snapshot), then each uid or group that appears or
//! disappears, so it can route uid and group calls only to the gateways that hold them.
//!
//! Changes are collected per link in a [`Watcher`] by the index itself (under the index lock,
//! see [`crate::index::Indexes`]) and written out by one task per link ([`run`]), batched. A link
//! that does not keep up loses nothing silently: past [`BACKLOG_BYTES`] its backlog is dropped,
//! counted in `index_resyncs`, and replaced by a fresh snapshot once the link has room again.
//!
//! Every update carries `applied`: how many index writes (bind, unbind, join, leave, ungroup)
//! from this very link the gateway had applied, so the sender knows which of its own writes the
//! index already reflects (read-your-writes, see `gw_gateway_links`'s routing index).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use gw_proto::{FromGateway, IndexChange, IndexUpdate};
use tokio::sync::{Notify, mpsc};

use crate::clients::Clients;
use crate::metrics::Metrics;

/// Backlog of changes a link may have waiting before it is replaced by a snapshot.
pub(crate) const BACKLOG_BYTES: usize = 4 << 20;

/// One link's share of the index feed: its waiting changes and its count of applied writes.
#[derive(Debug, Default)]
pub(crate) struct Watcher {
    backlog: Mutex<Backlog>,
    wake: Notify,
    /// Index writes received on this link and applied to the index.
    applied: AtomicU64,
}

#[derive(Debug, Default)]
struct Backlog {
    changes: Vec<IndexChange>,
    bytes: usize,
    /// Changes were dropped: the next update must be a snapshot.
    overflowed: bool,
}

impl Watcher {
    /// Queues a change (called under the index lock).
    pub(crate) fn push(&self, change: IndexChange) {
        let mut b = self.backlog.lock().expect("backlog lock");
        if b.overflowed {
            return;
        }
        b.bytes += change.weight();
        if b.bytes > BACKLOG_BYTES {
            b.changes = Vec::new();
            b.bytes = 0;
            b.overflowed = true;
        } else {
            b.changes.push(change);
        }
        drop(b);
        self.wake.notify_one();
    }

    /// Forgets the backlog (a snapshot is being taken under the index lock).
    pub(crate) fn clear(&self) {
        *self.backlog.lock().expect("backlog lock") = Backlog::default();
    }

    /// Takes the waiting changes, and whether some were dropped.
    pub(crate) fn take(&self) -> (Vec<IndexChange>, bool) {
        let b = std::mem::take(&mut *self.backlog.lock().expect("backlog lock"));
        (b.changes, b.overflowed)
    }

    /// An index write from this link was applied (after its changes were pushed).
    pub(crate) fn applied_one(&self) {
        self.applied.fetch_add(1, Ordering::Release);
        self.wake.notify_one();
    }
}

/// Writes the index feed of one link to `tx`: a snapshot, then changes, until the link's queue
/// closes. The caller stops it (and unwatches) when the link ends.
pub(crate) async fn run(
    watcher: std::sync::Arc<Watcher>,
    clients: &Clients,
    tx: mpsc::Sender<FromGateway>,
    part_bytes: usize,
) {
    let mut snapshot_due = true;
    let mut sent_applied = 0;
    loop {
        if snapshot_due {
            let (applied, changes) = {
                let mut ix = clients.index_mut();
                (watcher.applied.load(Ordering::Acquire), ix.watch(watcher.clone()))
            };
            if !send_parts(&tx, sent_applied, applied, true, changes, part_bytes).await {
                return;
            }
            Metrics::inc(&clients.metrics.index_updates);
            sent_applied = applied;
            snapshot_due = false;
            continue;
        }
        // `applied` first: every write it counts pushed its changes before being counted, so
        // they are in what `take` returns now or were sent before.
        let applied = watcher.applied.load(Ordering::Acquire);
        let (changes, overflowed) = watcher.take();
        if overflowed {
            Metrics::inc(&clients.metrics.index_resyncs);
            tracing::warn!(
                backlog_bytes = BACKLOG_BYTES,
                "routing index feed fell behind: sending a fresh snapshot instead of the backlog"
            );
            snapshot_due = true;
            continue;
        }
        if changes.is_empty() && applied == sent_applied {
            watcher.wake.notified().await;
            continue;
        }
        if !send_parts(&tx, sent_applied, applied, false, changes, part_bytes).await {
            return;
        }
        Metrics::inc(&clients.metrics.index_updates);
        sent_applied = applied;
    }
}

/// Sends `changes` in updates of at most about `part_bytes` each; the last one carries
/// `applied` (earlier ones the previous count), and a snapshot's first one `reset`, its last one
/// `complete`. False once the link is gone.
async fn send_parts(
    tx: &mpsc::Sender<FromGateway>,
    previous: u64,
    applied: u64,
    snapshot: bool,
    changes: Vec<IndexChange>,
    part_bytes: usize,
) -> bool {
    let mut parts: Vec<Vec<IndexChange>> = Vec::new();
    let mut part = Vec::new();
    let mut bytes = 0;
    for change in changes {
        bytes += change.weight();
        part.push(change);
        if bytes >= part_bytes {
            parts.push(std::mem::take(&mut part));
            bytes = 0;
        }
    }
    if !part.is_empty() || parts.is_empty() {
        parts.push(part);
    }
    let last = parts.len() - 1;
    for (i, changes) in parts.into_iter().enumerate() {
        let update = IndexUpdate {
            applied: if i == last { applied } else { previous },
            reset: snapshot && i == 0,
            complete: !snapshot || i == last,
            changes,
        };
        if tx.send(FromGateway::Index(update)).await.is_err() {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backlog_past_its_limit_is_dropped_and_marked_for_a_snapshot() {
        let w = Watcher::default();
        let big = "x".repeat(1 << 16);
        for _ in 0..(BACKLOG_BYTES >> 16) + 2 {
            w.push(IndexChange::UidOn(big.clone()));
        }
        let (changes, overflowed) = w.take();
        assert!(overflowed && changes.is_empty());
        w.push(IndexChange::UidOn("after".into()));
        assert_eq!(w.take(), (vec![IndexChange::UidOn("after".into())], false), "taking resets it");
    }

    /// Applies updates as a sender does: the uids the gateway holds, as far as it said.
    fn apply(held: &mut std::collections::BTreeSet<String>, update: IndexUpdate) {
        if update.reset {
            held.clear();
        }
        for change in update.changes {
            match change {
                IndexChange::UidOn(u) => {
                    held.insert(u);
                }
                IndexChange::UidOff(u) => {
                    held.remove(&u);
                }
                _ => {}
            }
        }
    }

    #[tokio::test]
    async fn a_link_that_fell_behind_gets_a_snapshot_and_ends_up_with_the_truth() {
        let clients = Clients::new(1 << 20, false);
        let watcher = std::sync::Arc::new(Watcher::default());
        let (tx, mut rx) = mpsc::channel(1);
        let feed = run(watcher.clone(), &clients, tx, 1 << 16);
        tokio::pin!(feed);
        let mut held = std::collections::BTreeSet::new();
        // The snapshot of an empty index.
        let first = tokio::select! {
            () = &mut feed => panic!("the feed ended"),
            m = rx.recv() => m.unwrap(),
        };
        let FromGateway::Index(first) = first else { panic!("not an index update: {first:?}") };
        assert!(first.reset && first.complete && first.changes.is_empty());
        // While nobody reads, one client rebinds through uids with long names: every rebind is
        // an Off and an On, far past the backlog limit.
        let long = |i: usize| format!("{i}{}", "x".repeat(1 << 16));
        for i in 0..(BACKLOG_BYTES >> 16) + 8 {
            clients.index_mut().bind_uid(1, long(i));
            watcher.applied_one();
            // Let the feed take what it can (it blocks on the full channel after one update).
            tokio::select! {
                biased;
                () = &mut feed => panic!("the feed ended"),
                () = tokio::task::yield_now() => {}
            }
        }
        // Now read everything: what the reader ends with is exactly what the index holds.
        let truth: std::collections::BTreeSet<String> = clients.index().uids().map(str::to_string).collect();
        let mut saw_reset = false;
        loop {
            let update = tokio::select! {
                () = &mut feed => panic!("the feed ended"),
                m = rx.recv() => m.unwrap(),
                () = tokio::time::sleep(std::time::Duration::from_secs(10)) => panic!("the reader never caught up: it holds {} uids", held.len()),
            };
            let FromGateway::Index(update) = update else { panic!("not an index update") };
            saw_reset |= update.reset;
            let (complete, applied) = (update.complete, update.applied);
            apply(&mut held, update);
            if complete && held == truth && applied == watcher.applied.load(Ordering::Acquire) {
                break;
            }
        }
        assert!(saw_reset, "the backlog was replaced by a snapshot");
        assert_eq!(clients.metrics.index_resyncs.load(Ordering::Relaxed), 1);
        assert_eq!(held, [long((BACKLOG_BYTES >> 16) + 7)].into_iter().collect());
    }

    #[tokio::test]
    async fn large_updates_are_split_and_only_the_last_part_carries_the_new_count() {
        let (tx, mut rx) = mpsc::channel(16);
        let changes: Vec<IndexChange> = (0..10).map(|i| IndexChange::UidOn(format!("uid-{i}"))).collect();
        assert!(send_parts(&tx, 3, 9, true, changes.clone(), 40).await);
        drop(tx);
        let mut got = Vec::new();
        while let Some(FromGateway::Index(u)) = rx.recv().await {
            got.push(u);
        }
        assert!(got.len() > 1);
        assert!(got[0].reset && got[1..].iter().all(|u| !u.reset));
        assert!(got.iter().rev().skip(1).all(|u| !u.complete && u.applied == 3));
        let last = got.last().unwrap();
        assert!(last.complete && last.applied == 9);
        assert_eq!(got.into_iter().flat_map(|u| u.changes).collect::<Vec<_>>(), changes);
    }
}
