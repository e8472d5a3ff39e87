//! Every PHP connection of a gateway in one task, like PHP's one event loop.
//!
//! A web backend's `GatewayClient` opens a new connection per call, so `bindUid` then `sendToUid`
//! are two connections, and only one loop handles them in the order they arrived: as tasks of
//! their own on tokio's multi-threaded scheduler, the second could run first and its message
//! would miss the binding. Driving them all from one task keeps that order (each connection runs
//! when it is woken, in the order of the wake-ups, never two at once), while the task itself runs
//! on the gateway's runtime. There, a client's message reaches its PHP worker's link and the
//! worker's answer reaches the client's writer on the same thread, where a thread of the PHP
//! side's own cost a hand-off each way (a single client's round trip, one message at a time, at
//! 0.64× all-PHP GatewayWorker's; BENCHMARKS.md).

use std::future::Future;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

/// Where the PHP side's connections are started; the loop ends once this is dropped and every
/// connection it started has ended.
pub(super) struct OneLoop {
    tx: mpsc::UnboundedSender<BoxFuture<'static, ()>>,
}

impl OneLoop {
    /// Starts the loop's task on `tasks`.
    pub fn start(tasks: &TaskTracker) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tasks.spawn(drive(rx));
        Self { tx }
    }

    /// Runs `conn` on the loop.
    pub fn spawn(&self, conn: impl Future<Output = ()> + Send + 'static) {
        // The receiver lives as long as the task, which ends only after every sender is gone;
        // it is gone early only when the runtime shuts down, and then the connection with it.
        let _ = self.tx.send(Box::pin(conn));
    }
}

async fn drive(mut started: mpsc::UnboundedReceiver<BoxFuture<'static, ()>>) {
    let mut running = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            conn = started.recv() => match conn {
                Some(conn) => running.push(conn),
                None if running.is_empty() => return,
                None => {
                    while running.next().await.is_some() {}
                    return;
                }
            },
            Some(()) = running.next(), if !running.is_empty() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::sync::Notify;

    use super::*;

    /// Connections run one at a time, in the order they were woken, on whatever thread the loop is.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_run_in_the_order_they_are_woken_and_the_loop_ends_after_the_last() {
        let tasks = TaskTracker::new();
        let one = OneLoop::start(&tasks);
        let order = Arc::new(Mutex::new(Vec::new()));
        let gates: Vec<Arc<Notify>> = (0..50).map(|_| Arc::new(Notify::new())).collect();
        let (parked_tx, mut parked) = mpsc::unbounded_channel();
        for (i, gate) in gates.iter().enumerate() {
            let (order, gate, parked_tx) = (order.clone(), gate.clone(), parked_tx.clone());
            one.spawn(async move {
                let opened = gate.notified();
                tokio::pin!(opened);
                opened.as_mut().enable();
                parked_tx.send(()).unwrap();
                opened.await;
                order.lock().unwrap().push(i);
            });
        }
        for _ in 0..50 {
            parked.recv().await.unwrap();
        }
        // Woken in reverse: each runs when its gate opens, and they finish in that order.
        for gate in gates.iter().rev() {
            gate.notify_one();
        }
        drop(one);
        tasks.close();
        tasks.wait().await;
        let got = order.lock().unwrap().clone();
        assert_eq!(got, (0..50).rev().collect::<Vec<_>>());
    }
}
