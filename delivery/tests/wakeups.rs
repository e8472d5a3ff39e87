//! The wake-up protocol of [`BoundedQueue`] driven the way its IO wrappers will drive it: a real
//! producer thread and a real consumer thread, the queue behind a mutex, and one
//! one-permit signal per side (what `tokio::sync::Notify` is to the async wrappers). The producer
//! wakes the consumer only on [`Pushed::Wake`] and the consumer wakes the producer only on
//! `wake_producer`; with any signal missing, a side would sleep forever (here: fail after a
//! timeout), and with nothing lost, every item arrives once and in order.

use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use gw_delivery::{BoundedQueue, Len, Limits, Pushed};

/// A one-permit signal: `notify` leaves a permit that the next `wait` takes (like `Notify`).
#[derive(Default)]
struct Signal {
    permit: Mutex<bool>,
    cond: Condvar,
}

impl Signal {
    fn notify(&self) {
        *self.permit.lock().unwrap() = true;
        self.cond.notify_one();
    }

    /// Waits for the permit; fails the test if none comes (a lost wake-up).
    fn wait(&self, who: &str) {
        let permit = self.permit.lock().unwrap();
        let (mut permit, timeout) = self.cond.wait_timeout_while(permit, Duration::from_secs(20), |p| !*p).unwrap();
        assert!(!timeout.timed_out(), "{who} was never woken: a wake-up was lost");
        *permit = false;
    }
}

struct Shared {
    queue: Mutex<BoundedQueue<Vec<u8>, Len>>,
    ready: Signal,
    space: Signal,
}

#[test]
fn each_side_is_woken_exactly_when_it_must_be() {
    const ITEMS: u32 = 20_000;
    let shared = Arc::new(Shared {
        queue: Mutex::new(BoundedQueue::new(Limits::items(8).with_bytes(24))),
        ready: Signal::default(),
        space: Signal::default(),
    });
    let producer = {
        let s = shared.clone();
        thread::spawn(move || {
            let mut waits = 0u32;
            for i in 0..ITEMS {
                // Items of 1 to 4 bytes: the queue fills by bytes as often as by items.
                let mut item = i.to_be_bytes()[..1 + (i % 4) as usize].to_vec();
                item[0] = (i % 251) as u8;
                loop {
                    let pushed = s.queue.lock().unwrap().push(item);
                    match pushed {
                        Ok(Pushed::Wake) => {
                            s.ready.notify();
                            break;
                        }
                        Ok(Pushed::Quiet) => break,
                        Err(refused) => {
                            assert!(refused.reason.is_full(), "{}", refused.reason);
                            item = refused.item;
                            waits += 1;
                            s.space.wait("the producer");
                        }
                    }
                }
            }
            waits
        })
    };
    let mut received = Vec::with_capacity(ITEMS as usize);
    while received.len() < ITEMS as usize {
        let popped = shared.queue.lock().unwrap().pop();
        match popped {
            Some(p) => {
                if p.wake_producer {
                    shared.space.notify();
                }
                received.push(p.item);
            }
            None => shared.ready.wait("the consumer"),
        }
    }
    let waits = producer.join().unwrap();
    for (i, item) in received.iter().enumerate() {
        assert_eq!((item.len(), item[0]), (1 + i % 4, (i % 251) as u8), "item {i} out of order or changed");
    }
    let q = shared.queue.lock().unwrap();
    assert!(q.is_empty() && q.bytes() == 0);
    // The producer really was held back, so the room signal was exercised.
    assert!(waits > 0, "the queue never filled");
}
