//! An order-preserving parallel map: the engine behind parallel hashing,
//! compression and decompression.
//!
//! An [`OrderedPool`] runs a function on worker threads and hands results
//! back in submission order. At most `window` items are in flight, so memory
//! stays bounded however the workers' speeds differ. It is driven from one
//! thread (a pipeline stage): `submit` items, take results with `next`.

use crate::cancel::{Cancel, Cancelled, POLL_INTERVAL};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Runs `f` on `workers` threads and returns results in order.
pub struct OrderedPool<I: Send + 'static, O: Send + 'static> {
    work_tx: Option<Sender<(u64, I)>>,
    done_rx: Receiver<(u64, O)>,
    done: BTreeMap<u64, O>,
    next_submit: u64,
    next_out: u64,
    window: usize,
    handles: Vec<JoinHandle<()>>,
}

/// The number of worker threads to use for `requested` (0 = all cores).
pub fn workers_for(requested: usize) -> usize {
    if requested > 0 {
        requested
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

impl<I: Send + 'static, O: Send + 'static> OrderedPool<I, O> {
    /// Starts `workers` threads running `f`; at most `window` items in flight.
    pub fn new<F>(workers: usize, window: usize, f: F) -> Self
    where
        F: Fn(I) -> O + Send + Sync + 'static,
    {
        let workers = workers.max(1);
        let window = window.max(workers);
        let (work_tx, work_rx) = bounded::<(u64, I)>(window);
        let (done_tx, done_rx) = bounded::<(u64, O)>(window);
        let f = Arc::new(f);
        let handles = (0..workers)
            .map(|i| {
                let rx = work_rx.clone();
                let tx = done_tx.clone();
                let f = Arc::clone(&f);
                std::thread::Builder::new()
                    .name(format!("worker-{i}"))
                    .spawn(move || {
                        for (seq, item) in rx {
                            if tx.send((seq, f(item))).is_err() {
                                break;
                            }
                        }
                    })
                    .expect("spawning a worker thread")
            })
            .collect();
        OrderedPool {
            work_tx: Some(work_tx),
            done_rx,
            done: BTreeMap::new(),
            next_submit: 0,
            next_out: 0,
            window,
            handles,
        }
    }

    /// Items submitted and not yet returned by `next`.
    pub fn in_flight(&self) -> usize {
        (self.next_submit - self.next_out) as usize
    }

    /// True when another item may be submitted without exceeding the window.
    pub fn has_room(&self) -> bool {
        self.in_flight() < self.window
    }

    /// Submits an item; the caller must first make room with `next` when
    /// [`has_room`](Self::has_room) is false.
    pub fn submit(&mut self, item: I, cancel: &Cancel) -> Result<(), Cancelled> {
        debug_assert!(self.has_room());
        let tx = self.work_tx.as_ref().ok_or(Cancelled)?;
        let mut msg = (self.next_submit, item);
        loop {
            match tx.send_timeout(msg, POLL_INTERVAL) {
                Ok(()) => break,
                Err(crossbeam_channel::SendTimeoutError::Timeout(m)) => {
                    cancel.check()?;
                    msg = m;
                }
                Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => return Err(Cancelled),
            }
        }
        self.next_submit += 1;
        Ok(())
    }

    /// The next result in order if it is ready, without waiting.
    pub fn try_next(&mut self) -> Option<O> {
        while let Ok((seq, out)) = self.done_rx.try_recv() {
            self.done.insert(seq, out);
        }
        self.take_ready()
    }

    /// The next result in order, waiting for it; `Ok(None)` when nothing is
    /// in flight.
    pub fn next(&mut self, cancel: &Cancel) -> Result<Option<O>, Cancelled> {
        if self.in_flight() == 0 {
            return Ok(None);
        }
        loop {
            if let Some(out) = self.try_next() {
                return Ok(Some(out));
            }
            match self.done_rx.recv_timeout(POLL_INTERVAL) {
                Ok((seq, out)) => {
                    self.done.insert(seq, out);
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => cancel.check()?,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Err(Cancelled),
            }
        }
    }

    fn take_ready(&mut self) -> Option<O> {
        let out = self.done.remove(&self.next_out)?;
        self.next_out += 1;
        Some(out)
    }
}

impl<I: Send + 'static, O: Send + 'static> Drop for OrderedPool<I, O> {
    fn drop(&mut self) {
        self.work_tx = None;
        // Drain so that no worker stays blocked on a full result channel.
        while self.done_rx.try_recv().is_ok() {}
        for h in self.handles.drain(..) {
            while !h.is_finished() {
                while self.done_rx.try_recv().is_ok() {}
                std::thread::yield_now();
            }
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_order() {
        let cancel = Cancel::new();
        let mut pool = OrderedPool::new(4, 8, |x: u64| {
            std::thread::sleep(std::time::Duration::from_micros((x * 7919) % 500));
            x * 2
        });
        let mut out = Vec::new();
        for i in 0..200u64 {
            while !pool.has_room() {
                out.push(pool.next(&cancel).unwrap().unwrap());
            }
            pool.submit(i, &cancel).unwrap();
            while let Some(o) = pool.try_next() {
                out.push(o);
            }
        }
        while let Some(o) = pool.next(&cancel).unwrap() {
            out.push(o);
        }
        assert_eq!(out, (0..200).map(|i| i * 2).collect::<Vec<_>>());
    }

    #[test]
    fn dropping_with_work_in_flight_does_not_hang() {
        let cancel = Cancel::new();
        let mut pool = OrderedPool::new(2, 4, |x: u32| x);
        for i in 0..4 {
            pool.submit(i, &cancel).unwrap();
        }
        drop(pool);
    }
}
