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
    work_tx: Option<Sender<Job<I>>>,
    done_rx: Receiver<(u64, O)>,
    done: BTreeMap<u64, O>,
    next_submit: u64,
    next_out: u64,
    window: usize,
    /// Paired mode: the last item submitted, waiting for a partner.
    pending: Option<I>,
    paired: bool,
    handles: Vec<JoinHandle<()>>,
}

/// Work for a worker: an item, or two consecutive ones (`seq`, `seq + 1`).
enum Job<I> {
    One(u64, I),
    Two(u64, I, I),
}

/// A worker's function for one item.
type One<I, O> = Arc<dyn Fn(I) -> O + Send + Sync>;
/// A worker's function for two items at once.
type Two<I, O> = Arc<dyn Fn(I, I) -> (O, O) + Send + Sync>;

/// A worker's loop; ends when the pool or its results are gone.
fn work<I, O>(rx: &Receiver<Job<I>>, tx: &Sender<(u64, O)>, f: &One<I, O>, f2: Option<&Two<I, O>>) {
    for job in rx {
        let sent = match (job, f2) {
            (Job::Two(seq, a, b), Some(f2)) => {
                let (a, b) = f2(a, b);
                tx.send((seq, a)).and_then(|()| tx.send((seq + 1, b)))
            }
            (Job::Two(seq, a, b), None) => {
                tx.send((seq, f(a))).and_then(|()| tx.send((seq + 1, f(b))))
            }
            (Job::One(seq, a), _) => tx.send((seq, f(a))),
        };
        if sent.is_err() {
            break;
        }
    }
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
        Self::start(workers, window, Arc::new(f), None)
    }

    /// Like [`new`](Self::new), but consecutive items go to a worker two
    /// at a time and run through `f2` (for work such as hashing, where two
    /// independent items cost little more than one). An item waits for
    /// its partner until the next one is submitted or until [`next`](Self::next)
    /// has to wait for it; only [`next`](Self::next) runs it alone.
    pub fn new_paired<F, F2>(workers: usize, window: usize, f: F, f2: F2) -> Self
    where
        F: Fn(I) -> O + Send + Sync + 'static,
        F2: Fn(I, I) -> (O, O) + Send + Sync + 'static,
    {
        Self::start(workers, window, Arc::new(f), Some(Arc::new(f2)))
    }

    fn start(workers: usize, window: usize, f: One<I, O>, f2: Option<Two<I, O>>) -> Self {
        let workers = workers.max(1);
        let window = window.max(workers);
        let (work_tx, work_rx) = bounded::<Job<I>>(window);
        let (done_tx, done_rx) = bounded::<(u64, O)>(window);
        let paired = f2.is_some();
        let handles = (0..workers)
            .map(|i| {
                let rx = work_rx.clone();
                let tx = done_tx.clone();
                let (f, f2) = (Arc::clone(&f), f2.clone());
                std::thread::Builder::new()
                    .name(format!("worker-{i}"))
                    .spawn(move || work(&rx, &tx, &f, f2.as_ref()))
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
            pending: None,
            paired,
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
        let seq = self.next_submit;
        self.next_submit += 1;
        if !self.paired {
            return self.send(Job::One(seq, item), cancel);
        }
        match self.pending.take() {
            Some(first) => self.send(Job::Two(seq - 1, first, item), cancel),
            None => {
                self.pending = Some(item);
                Ok(())
            }
        }
    }

    /// Sends a waiting item alone.
    fn flush(&mut self, cancel: &Cancel) -> Result<(), Cancelled> {
        match self.pending.take() {
            Some(item) => self.send(Job::One(self.next_submit - 1, item), cancel),
            None => Ok(()),
        }
    }

    fn send(&mut self, job: Job<I>, cancel: &Cancel) -> Result<(), Cancelled> {
        let tx = self.work_tx.as_ref().ok_or(Cancelled)?;
        let mut msg = job;
        loop {
            match tx.send_timeout(msg, POLL_INTERVAL) {
                Ok(()) => return Ok(()),
                Err(crossbeam_channel::SendTimeoutError::Timeout(m)) => {
                    cancel.check()?;
                    msg = m;
                }
                Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => return Err(Cancelled),
            }
        }
    }

    /// The next result in order if it is ready, without waiting.
    pub fn try_next(&mut self) -> Option<O> {
        while let Ok((seq, out)) = self.done_rx.try_recv() {
            self.done.insert(seq, out);
        }
        self.take_ready()
    }

    /// The next result in order, waiting for it (and sending a waiting
    /// item alone rather than wait for its partner); `Ok(None)` when
    /// nothing is in flight.
    pub fn next(&mut self, cancel: &Cancel) -> Result<Option<O>, Cancelled> {
        if self.in_flight() == 0 {
            return Ok(None);
        }
        loop {
            if let Some(out) = self.try_next() {
                return Ok(Some(out));
            }
            self.flush(cancel)?;
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
    fn paired_pool_runs_consecutive_items_together_and_keeps_the_order() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let cancel = Cancel::new();
        let pairs = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&pairs);
        let mut pool = OrderedPool::new_paired(
            1,
            8,
            |x: u64| {
                if x == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                x * 2
            },
            move |a: u64, b: u64| {
                counted.fetch_add(1, Ordering::Relaxed);
                (a * 2, b * 2)
            },
        );
        for i in 0..8u64 {
            pool.submit(i, &cancel).unwrap();
        }
        let mut out = Vec::new();
        while let Some(o) = pool.next(&cancel).unwrap() {
            out.push(o);
        }
        assert_eq!(out, (0..8).map(|i| i * 2).collect::<Vec<_>>());
        // Submitted back to back: four pairs, nobody alone.
        assert_eq!(pairs.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn a_paired_item_without_a_partner_runs_alone_when_waited_for() {
        let cancel = Cancel::new();
        let mut pool = OrderedPool::new_paired(2, 4, |x: u32| x + 100, |a: u32, b: u32| (a, b));
        for i in 0..3 {
            pool.submit(i, &cancel).unwrap();
        }
        // 0 and 1 ran as a pair; 2 waits for a partner until asked for.
        let mut out = Vec::new();
        while let Some(o) = pool.next(&cancel).unwrap() {
            out.push(o);
        }
        assert_eq!(out, vec![0, 1, 102]);
        assert_eq!(pool.in_flight(), 0);
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
