//! The pipeline runner: a reader thread, stage threads and a writer thread
//! joined by bounded channels of pooled [`Block`]s.
//!
//! Each part runs on its own thread with its own child of the pipeline's
//! [`Cancel`] token. A failing part records its error (the first real error
//! wins) and stops every part *upstream* of it, which see their tokens within
//! [`POLL_INTERVAL`]; the parts *downstream* of it drain what it already
//! passed on and finish, so what a stage verified before a failure still
//! reaches the sink (a truncated stream delivers its verified prefix, which
//! `zfs recv -s` keeps for a resume). If the drain takes longer than
//! [`DRAIN_GRACE`], or the pipeline's own token is cancelled (a stall
//! watchdog, a signal), every part stops at once. End of input flows down as
//! channel disconnection: the source returns `None`, each stage's `finish`
//! runs, then the sink's.

use crate::cancel::{Cancel, Cancelled, POLL_INTERVAL};
use crate::fdio::{self, Idle, NoIdle};
use crate::pool::{Block, BlockPool};
use anyhow::Context;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, SendTimeoutError, Sender};
use rustix::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the runner waits, after a cancellation, for parts stuck in the
/// kernel before returning the error anyway (the process exits after it).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How long the parts downstream of a failure may take to drain what they
/// hold before the whole pipeline is cancelled.
pub const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// Produces the pipeline's input blocks.
pub trait Source: Send {
    /// The next block of input, or `None` at end of input.
    fn next_block(&mut self, pool: &BlockPool, cancel: &Cancel) -> anyhow::Result<Option<Block>>;
}

/// Transforms blocks; may emit any number of blocks per input block.
pub trait Stage: Send {
    /// Handles one block.
    fn process(&mut self, block: Block, out: &mut Emitter<'_>) -> anyhow::Result<()>;
    /// Called once at end of input, to flush what the stage holds.
    fn finish(&mut self, _out: &mut Emitter<'_>) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Consumes the pipeline's output blocks.
pub trait Sink: Send {
    /// Writes one block.
    fn write_block(&mut self, block: Block, cancel: &Cancel) -> anyhow::Result<()>;
    /// Called once after the last block, only when everything before succeeded.
    fn finish(&mut self, _cancel: &Cancel) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Hands a stage's output to the next part of the pipeline.
pub struct Emitter<'a> {
    tx: &'a Sender<Block>,
    cancel: &'a Cancel,
}

impl Emitter<'_> {
    /// Sends a block downstream, waiting while the channel is full.
    pub fn emit(&mut self, block: Block) -> anyhow::Result<()> {
        send(self.tx, block, self.cancel)
    }

    /// The pipeline's token (stages waiting on their own pools use it).
    pub fn cancel(&self) -> &Cancel {
        self.cancel
    }
}

/// Sizes of a pipeline's pool and channels.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Size of each source block.
    pub block_size: usize,
    /// How many source blocks may exist at once.
    pub blocks: usize,
    /// Capacity of each channel between parts, in blocks.
    pub depth: usize,
    /// Free bytes in front of each source block's data, for a stage that
    /// prepends a header in place (see [`Block::expose_headroom`]).
    pub headroom: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            block_size: crate::DEFAULT_BLOCK_SIZE,
            blocks: 8,
            depth: 2,
            headroom: 0,
        }
    }
}

fn send(tx: &Sender<Block>, block: Block, cancel: &Cancel) -> anyhow::Result<()> {
    let mut b = block;
    loop {
        match tx.send_timeout(b, POLL_INTERVAL) {
            Ok(()) => return Ok(()),
            Err(SendTimeoutError::Timeout(back)) => {
                cancel.check()?;
                b = back;
            }
            Err(SendTimeoutError::Disconnected(_)) => return Err(Cancelled.into()),
        }
    }
}

fn recv(rx: &Receiver<Block>, cancel: &Cancel) -> anyhow::Result<Option<Block>> {
    loop {
        match rx.recv_timeout(POLL_INTERVAL) {
            Ok(b) => return Ok(Some(b)),
            Err(RecvTimeoutError::Timeout) => cancel.check()?,
            Err(RecvTimeoutError::Disconnected) => {
                // Upstream ended: cleanly only if nobody cancelled.
                cancel.check()?;
                return Ok(None);
            }
        }
    }
}

/// The body of one pipeline part, given its own token.
type PartFn = Box<dyn FnOnce(&Cancel) -> anyhow::Result<()> + Send>;

/// Runs `source → stages… → sink` to completion; returns the first error.
pub fn run(
    cfg: &PipelineConfig,
    mut source: Box<dyn Source>,
    stages: Vec<Box<dyn Stage>>,
    mut sink: Box<dyn Sink>,
    cancel: &Cancel,
) -> anyhow::Result<()> {
    let pool = BlockPool::with_headroom(cfg.block_size, cfg.blocks, cfg.headroom);
    let parts = stages.len() + 2;
    let tokens: Arc<Vec<Cancel>> = Arc::new((0..parts).map(|_| cancel.child()).collect());
    let (done_tx, done_rx) = bounded::<()>(parts);
    let mut spawned = 0usize;

    // Part `index` runs `f` with its own token; on failure it records the
    // error and stops the parts upstream of it.
    let spawn = |index: usize, name: String, f: PartFn| {
        let done = done_tx.clone();
        let tokens = Arc::clone(&tokens);
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                if let Err(e) = f(&tokens[index]) {
                    tokens[index].record(e);
                    for t in &tokens[..index] {
                        t.cancel();
                    }
                }
                let _ = done.send(());
            })
            .map(|_| ())
    };

    let (first_tx, mut rx) = bounded::<Block>(cfg.depth);
    {
        let pool = pool.clone();
        spawn(
            0,
            "reader".into(),
            Box::new(move |c| {
                let result = (|| {
                    while let Some(b) = source.next_block(&pool, c)? {
                        send(&first_tx, b, c)?;
                    }
                    Ok(())
                })();
                record_before_closing(result, c, first_tx)
            }),
        )?;
        spawned += 1;
    }
    for (i, mut stage) in stages.into_iter().enumerate() {
        let (tx, next_rx) = bounded::<Block>(cfg.depth);
        let input = std::mem::replace(&mut rx, next_rx);
        spawn(
            i + 1,
            format!("stage-{i}"),
            Box::new(move |c| {
                let result = (|| {
                    let mut out = Emitter { tx: &tx, cancel: c };
                    while let Some(b) = recv(&input, c)? {
                        stage.process(b, &mut out)?;
                    }
                    stage.finish(&mut out)
                })();
                record_before_closing(result, c, tx)
            }),
        )?;
        spawned += 1;
    }
    spawn(
        parts - 1,
        "writer".into(),
        Box::new(move |c| {
            while let Some(b) = recv(&rx, c)? {
                sink.write_block(b, c)?;
            }
            sink.finish(c)
        }),
    )?;
    spawned += 1;
    drop(done_tx);

    let mut finished = 0;
    let mut drain_deadline: Option<Instant> = None;
    let mut stop_deadline: Option<Instant> = None;
    while finished < spawned {
        match done_rx.recv_timeout(POLL_INTERVAL) {
            Ok(()) => finished += 1,
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
        if cancel.has_error() {
            let d = *drain_deadline.get_or_insert_with(|| Instant::now() + DRAIN_GRACE);
            if Instant::now() >= d {
                cancel.cancel();
            }
        }
        if cancel.is_cancelled() {
            let d = *stop_deadline.get_or_insert_with(|| Instant::now() + SHUTDOWN_GRACE);
            if Instant::now() >= d {
                break;
            }
        }
    }
    match cancel.take_error() {
        Some(e) => Err(e),
        None if cancel.is_cancelled() => Err(Cancelled.into()),
        None => Ok(()),
    }
}

/// Records a part's error before its output channel closes (then closes
/// it): the part downstream sees the end of its input only once the cause
/// is known, so its own follow-on error ("truncated", "empty input") can
/// never win over it, however long the part's other captures take to drop.
fn record_before_closing(
    result: anyhow::Result<()>,
    cancel: &Cancel,
    tx: Sender<Block>,
) -> anyhow::Result<()> {
    let failed = result.is_err();
    if let Err(e) = result {
        cancel.record(e);
    }
    drop(tx);
    if failed {
        // Recorded above; this only makes the runner stop the upstream.
        Err(Cancelled.into())
    } else {
        Ok(())
    }
}

/// How a [`FdSource`] cuts its input into units (a frame each), so a stage
/// downstream finds one whole frame per block and can use it in place
/// instead of copying frames out of blocks cut anywhere.
pub trait Framing: Send {
    /// Bytes to read before [`Framing::unit_len`] can tell a unit's length.
    fn head_len(&self) -> usize;
    /// The whole length of the unit that starts with `head` (its first
    /// [`head_len`](Framing::head_len) bytes); `None` when `head` is nothing
    /// this framing knows: the source then reads a plain block and the
    /// stage's own parser decides. A unit larger than the pool's blocks is
    /// read as plain blocks too (the stage copies it out of them).
    fn unit_len(&mut self, head: &[u8]) -> Option<usize>;
}

/// A [`Source`] reading a descriptor into full blocks, or into one unit of
/// a [`Framing`] each.
pub struct FdSource {
    fd: OwnedFd,
    idle: Box<dyn Idle + Send>,
    prefix: Vec<u8>,
    framing: Option<Box<dyn Framing>>,
    eof: bool,
}

impl FdSource {
    /// Reads from `fd` (often a dup of stdin); a pipe is grown to
    /// [`fdio::DEFAULT_PIPE_SIZE`], so each read and wake-up moves more.
    pub fn new(fd: OwnedFd) -> Self {
        fdio::grow_pipe(fd.as_fd(), fdio::DEFAULT_PIPE_SIZE);
        FdSource {
            fd,
            idle: Box::new(NoIdle),
            prefix: Vec::new(),
            framing: None,
            eof: false,
        }
    }

    /// Delivers `prefix` (bytes already read from `fd`, e.g. to sniff the
    /// stream's kind) before the rest of `fd`.
    pub fn with_prefix(mut self, prefix: Vec<u8>) -> Self {
        self.prefix = prefix;
        self
    }

    /// Cuts the input into `framing`'s units, one per block.
    pub fn with_framing(mut self, framing: Box<dyn Framing>) -> Self {
        self.framing = Some(framing);
        self
    }

    /// Reads from a duplicate of standard input.
    pub fn stdin() -> anyhow::Result<Self> {
        let fd = rustix::io::dup(fdio::stdin_fd()).context("duplicating stdin")?;
        Ok(FdSource::new(fd))
    }

    /// Calls `idle` while waiting for input.
    pub fn with_idle(mut self, idle: Box<dyn Idle + Send>) -> Self {
        self.idle = idle;
        self
    }

    /// Fills `b` to `len` bytes, from the prefix first; notes the end of
    /// input when it comes first.
    fn fill(&mut self, b: &mut Block, len: usize, cancel: &Cancel) -> anyhow::Result<()> {
        if !self.prefix.is_empty() && b.len() < len {
            let take = self.prefix.len().min(len - b.len());
            b.append(&self.prefix[..take]);
            self.prefix.drain(..take);
        }
        if b.len() < len {
            b.fill_to(self.fd.as_fd(), len, cancel, self.idle.as_mut())?;
            if b.len() < len {
                self.eof = true;
            }
        }
        Ok(())
    }
}

impl Source for FdSource {
    fn next_block(&mut self, pool: &BlockPool, cancel: &Cancel) -> anyhow::Result<Option<Block>> {
        if self.eof {
            return Ok(None);
        }
        let mut b = pool.get(cancel)?;
        let size = pool.block_size();
        let head = self.framing.as_ref().map_or(0, |f| f.head_len().min(size));
        let mut len = size;
        if head > 0 {
            self.fill(&mut b, head, cancel)?;
            if self.eof {
                return Ok(if b.is_empty() { None } else { Some(b) });
            }
            // A unit larger than a block is read as plain blocks too.
            if let Some(n) = self.framing.as_mut().and_then(|f| f.unit_len(b.data())) {
                if n <= size {
                    len = n.max(head);
                }
            }
        }
        self.fill(&mut b, len, cancel)?;
        Ok(if b.is_empty() { None } else { Some(b) })
    }
}

/// A [`Sink`] writing blocks to a descriptor.
pub struct FdSink {
    pub(crate) fd: OwnedFd,
    pub(crate) idle: Box<dyn Idle + Send>,
}

impl FdSink {
    /// Writes to `fd` (often a dup of stdout); a pipe is grown to
    /// [`fdio::DEFAULT_PIPE_SIZE`].
    pub fn new(fd: OwnedFd) -> Self {
        fdio::grow_pipe(fd.as_fd(), fdio::DEFAULT_PIPE_SIZE);
        FdSink {
            fd,
            idle: Box::new(NoIdle),
        }
    }

    /// Writes to a duplicate of standard output.
    pub fn stdout() -> anyhow::Result<Self> {
        let fd = rustix::io::dup(fdio::stdout_fd()).context("duplicating stdout")?;
        Ok(FdSink::new(fd))
    }

    /// Calls `idle` while the output is not accepting data.
    pub fn with_idle(mut self, idle: Box<dyn Idle + Send>) -> Self {
        self.idle = idle;
        self
    }
}

impl Sink for FdSink {
    fn write_block(&mut self, block: Block, cancel: &Cancel) -> anyhow::Result<()> {
        fdio::Writer::new(self.fd.as_fd()).write_all(block.data(), cancel, self.idle.as_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting(u32);
    impl Source for Counting {
        fn next_block(&mut self, pool: &BlockPool, c: &Cancel) -> anyhow::Result<Option<Block>> {
            if self.0 == 0 {
                return Ok(None);
            }
            self.0 -= 1;
            let mut b = pool.get(c)?;
            b.vec_mut().extend_from_slice(&self.0.to_le_bytes());
            Ok(Some(b))
        }
    }

    struct Double;
    impl Stage for Double {
        fn process(&mut self, b: Block, out: &mut Emitter<'_>) -> anyhow::Result<()> {
            let v = u32::from_le_bytes(b.data().try_into().unwrap());
            let mut b = b;
            b.vec_mut().clear();
            b.vec_mut()
                .extend_from_slice(&v.wrapping_mul(2).to_le_bytes());
            out.emit(b)
        }
    }

    struct Collect(std::sync::Arc<std::sync::Mutex<Vec<u32>>>, Option<u32>);
    impl Sink for Collect {
        fn write_block(&mut self, b: Block, _: &Cancel) -> anyhow::Result<()> {
            let v = u32::from_le_bytes(b.data().try_into().unwrap());
            if Some(v) == self.1 {
                anyhow::bail!("sink refused {v}");
            }
            self.0.lock().unwrap().push(v);
            Ok(())
        }
    }

    fn cfg() -> PipelineConfig {
        PipelineConfig {
            block_size: 16,
            blocks: 3,
            depth: 1,
            headroom: 0,
        }
    }

    #[test]
    fn blocks_flow_through_in_order() {
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        run(
            &cfg(),
            Box::new(Counting(100)),
            vec![Box::new(Double), Box::new(Double)],
            Box::new(Collect(got.clone(), None)),
            &Cancel::new(),
        )
        .unwrap();
        let want: Vec<u32> = (0..100).rev().map(|v| v * 4).collect();
        assert_eq!(*got.lock().unwrap(), want);
    }

    #[test]
    fn sink_error_wins_and_stops_everything() {
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let err = run(
            &cfg(),
            Box::new(Counting(u32::MAX)),
            vec![Box::new(Double)],
            Box::new(Collect(got, Some((u32::MAX - 50).wrapping_mul(2)))),
            &Cancel::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("sink refused"), "{err:#}");
    }

    #[test]
    fn what_a_failing_stage_passed_on_still_reaches_the_sink() {
        struct FailAt(u32);
        impl Stage for FailAt {
            fn process(&mut self, b: Block, out: &mut Emitter<'_>) -> anyhow::Result<()> {
                let v = u32::from_le_bytes(b.data().try_into().unwrap());
                if v == self.0 {
                    anyhow::bail!("damaged block {v}");
                }
                out.emit(b)
            }
        }
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let err = run(
            &cfg(),
            Box::new(Counting(u32::MAX)),
            vec![Box::new(FailAt(u32::MAX - 40)), Box::new(Double)],
            Box::new(Collect(got.clone(), None)),
            &Cancel::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("damaged block"), "{err:#}");
        let want: Vec<u32> = (u32::MAX - 39..u32::MAX)
            .rev()
            .map(|v| v.wrapping_mul(2))
            .collect();
        assert_eq!(*got.lock().unwrap(), want);
    }

    #[test]
    fn a_failing_stage_error_wins_over_the_end_of_input_it_causes_downstream() {
        // The failing stage takes long to drop (as one that joins worker
        // threads); the stage after it fails on an empty input.
        struct SlowDropFail;
        impl Stage for SlowDropFail {
            fn process(&mut self, _: Block, _: &mut Emitter<'_>) -> anyhow::Result<()> {
                anyhow::bail!("corrupt frame")
            }
        }
        impl Drop for SlowDropFail {
            fn drop(&mut self) {
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        struct NeedsInput(bool);
        impl Stage for NeedsInput {
            fn process(&mut self, b: Block, out: &mut Emitter<'_>) -> anyhow::Result<()> {
                self.0 = true;
                out.emit(b)
            }
            fn finish(&mut self, _: &mut Emitter<'_>) -> anyhow::Result<()> {
                if !self.0 {
                    anyhow::bail!("empty input");
                }
                Ok(())
            }
        }
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let err = run(
            &cfg(),
            Box::new(Counting(10)),
            vec![Box::new(SlowDropFail), Box::new(NeedsInput(false))],
            Box::new(Collect(got, None)),
            &Cancel::new(),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "corrupt frame");
    }

    #[test]
    fn idle_reader_is_stopped_by_a_failing_sink() {
        // The reader waits on a pipe that never delivers; the sink fails.
        let (r, _w) = rustix::pipe::pipe().unwrap();
        struct Fail;
        impl Sink for Fail {
            fn write_block(&mut self, _: Block, _: &Cancel) -> anyhow::Result<()> {
                Ok(())
            }
        }
        struct FailStage;
        impl Stage for FailStage {
            fn process(&mut self, _: Block, _: &mut Emitter<'_>) -> anyhow::Result<()> {
                Ok(())
            }
        }
        let cancel = Cancel::new();
        let c2 = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            c2.fail(anyhow::anyhow!("downstream closed"));
        });
        let start = Instant::now();
        let err = run(
            &cfg(),
            Box::new(FdSource::new(r)),
            vec![Box::new(FailStage)],
            Box::new(Fail),
            &cancel,
        )
        .unwrap_err();
        assert!(err.to_string().contains("downstream closed"));
        assert!(start.elapsed() < SHUTDOWN_GRACE);
    }

    /// Units of one length byte and that many bytes; 0xff is not a unit.
    struct LenByte;

    impl Framing for LenByte {
        fn head_len(&self) -> usize {
            1
        }
        fn unit_len(&mut self, head: &[u8]) -> Option<usize> {
            (head[0] != 0xff).then_some(1 + head[0] as usize)
        }
    }

    #[test]
    fn a_framing_cuts_one_unit_per_block_from_prefix_and_descriptor() {
        let (r, w) = rustix::pipe::pipe().unwrap();
        // Units 3+"abc", 0, 5+"hello" (prefix ends inside it), then a
        // non-unit: a plain block of the pool's size, then the short rest.
        let mut all = b"\x03abc\x00\x05hello".to_vec();
        all.extend_from_slice(b"\xff0123456789");
        rustix::io::write(&w, &all[6..]).unwrap();
        drop(w);
        let mut src = FdSource::new(r)
            .with_prefix(all[..6].to_vec())
            .with_framing(Box::new(LenByte));
        let pool = BlockPool::new(8, 4);
        let c = Cancel::new();
        let mut got = Vec::new();
        while let Some(b) = src.next_block(&pool, &c).unwrap() {
            got.push(b.data().to_vec());
        }
        let want: Vec<&[u8]> = vec![b"\x03abc", b"\x00", b"\x05hello", b"\xff0123456", b"789"];
        assert_eq!(got, want);
    }

    #[test]
    fn a_unit_cut_short_by_the_end_of_input_is_delivered_as_it_is() {
        let (r, w) = rustix::pipe::pipe().unwrap();
        rustix::io::write(&w, b"\x09abc").unwrap();
        drop(w);
        let mut src = FdSource::new(r).with_framing(Box::new(LenByte));
        let pool = BlockPool::new(64, 2);
        let c = Cancel::new();
        assert_eq!(
            src.next_block(&pool, &c).unwrap().unwrap().data(),
            b"\x09abc"
        );
        assert!(src.next_block(&pool, &c).unwrap().is_none());
    }
}
