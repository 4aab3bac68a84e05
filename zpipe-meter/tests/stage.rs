//! The library API the wrappers use: `MeterStage` inside a
//! `zpipe_core::pipeline`, `MeterHandle` for size and stats, `MeterArgs`
//! flattened into another command, and `run_passthrough_to` with a writer.

use clap::{Args, FromArgMatches};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zpipe_core::cancel::Cancel;
use zpipe_core::pipeline::{self, FdSource, PipelineConfig, Sink};
use zpipe_core::pool::Block;
use zpipe_meter::{MeterConfig, MeterStage, ProgressMode, ProgressTarget};

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

struct Collect(Arc<Mutex<Vec<u8>>>, Duration);

impl Sink for Collect {
    fn write_block(&mut self, b: Block, _: &Cancel) -> anyhow::Result<()> {
        std::thread::sleep(self.1);
        self.0.lock().unwrap().extend_from_slice(b.data());
        Ok(())
    }
}

fn feed(data: Vec<u8>) -> rustix::fd::OwnedFd {
    let (r, w) = rustix::pipe::pipe().unwrap();
    std::thread::spawn(move || {
        let mut f = std::fs::File::from(w);
        let _ = f.write_all(&data);
    });
    r
}

#[test]
fn stage_counts_limits_and_reports() {
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let log = Buf::default();
    let cancel = Cancel::new();
    let cfg = MeterConfig {
        name: Some("stage".into()),
        limit: Some(4 << 20),
        interval: Some(Duration::from_millis(200)),
        signals: false,
        ..MeterConfig::default()
    };
    let (stage, handle) =
        MeterStage::new(cfg, ProgressTarget::Writer(Box::new(log.clone())), &cancel).unwrap();
    handle.set_size(data.len() as u64);
    let got = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let res = pipeline::run(
        &PipelineConfig::default(),
        Box::new(FdSource::new(feed(data.clone()))),
        vec![Box::new(stage)],
        Box::new(Collect(got.clone(), Duration::ZERO)),
        &cancel,
    );
    assert!(res.is_ok(), "{res:?}");
    assert!(handle.stats().bytes == data.len() as u64);
    let stats = handle.finish(Ok(())).unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert!(secs > 0.55, "limit not applied: {secs}s");
    assert_eq!(stats.bytes, data.len() as u64);
    assert_eq!(stats.size, Some(data.len() as u64));
    assert_eq!(stats.exit, "success");
    assert_eq!(*got.lock().unwrap(), data);
    let text = log.text();
    assert!(text.contains("zpipe-meter[stage]: bytes="), "{text}");
    assert!(text.contains("pct="), "{text}");
    assert!(text.contains("status=done"), "{text}");
}

#[test]
fn absurd_size_from_the_wrapper_is_unknown() {
    let cancel = Cancel::new();
    let cfg = MeterConfig {
        progress: ProgressMode::Quiet,
        signals: false,
        ..MeterConfig::default()
    };
    let (_stage, handle) = MeterStage::new(cfg, ProgressTarget::Stderr, &cancel).unwrap();
    handle.set_size(u64::MAX);
    assert_eq!(handle.stats().size, None);
    handle.set_size(0);
    assert_eq!(handle.stats().size, None);
    handle.set_size(12345);
    assert_eq!(handle.stats().size, Some(12345));
}

#[test]
fn stage_watchdog_names_a_silent_upstream() {
    let (r, _w) = rustix::pipe::pipe().unwrap(); // never written
    let cancel = Cancel::new();
    let cfg = MeterConfig {
        stall_timeout: Some(Duration::from_millis(500)),
        progress: ProgressMode::Quiet,
        signals: false,
        ..MeterConfig::default()
    };
    let (stage, handle) = MeterStage::new(cfg, ProgressTarget::Stderr, &cancel).unwrap();
    let err = pipeline::run(
        &PipelineConfig::default(),
        Box::new(FdSource::new(r)),
        vec![Box::new(stage)],
        Box::new(Collect(Arc::default(), Duration::ZERO)),
        &cancel,
    )
    .unwrap_err();
    assert!(err.to_string().contains("no input"), "{err:#}");
    assert_eq!(zpipe_core::exit::classify(&err), zpipe_core::Exit::Io);
    let stats = handle.finish(Err(&err)).unwrap();
    assert_eq!(stats.exit, "io");
}

#[test]
fn stage_watchdog_names_a_blocked_downstream() {
    let cancel = Cancel::new();
    let cfg = MeterConfig {
        stall_timeout: Some(Duration::from_millis(500)),
        progress: ProgressMode::Quiet,
        signals: false,
        ..MeterConfig::default()
    };
    let (stage, _handle) = MeterStage::new(cfg, ProgressTarget::Stderr, &cancel).unwrap();
    let err = pipeline::run(
        &PipelineConfig {
            block_size: 1024,
            blocks: 4,
            depth: 1,
            headroom: 0,
        },
        Box::new(FdSource::new(feed(vec![0u8; 1 << 20]))),
        vec![Box::new(stage)],
        // A sink slower than the timeout: the stage blocks handing blocks on.
        Box::new(Collect(Arc::default(), Duration::from_secs(3))),
        &cancel,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("downstream not reading"),
        "{err:#}"
    );
}

#[test]
fn wrapper_flattens_long_flags_without_short_ones() {
    // The flags a wrapper passes through to zfs stay free.
    let mut cmd = clap::Command::new("wrap");
    for c in "iIwcLeprtsFudox".chars() {
        cmd = cmd.arg(
            clap::Arg::new(&*Box::leak(format!("zfs-{c}").into_boxed_str()))
                .short(c)
                .action(clap::ArgAction::SetTrue),
        );
    }
    let cmd = zpipe_meter::MeterArgs::augment_args(cmd);
    let m = cmd
        .try_get_matches_from([
            "wrap",
            "-L",
            "-s",
            "--limit",
            "5M",
            "--size",
            "1G",
            "--buffer",
            "64M",
            "--progress-name",
            "x",
            "--quiet",
        ])
        .unwrap();
    assert!(m.get_flag("zfs-L") && m.get_flag("zfs-s"));
    let args = zpipe_meter::MeterArgs::from_arg_matches(&m).unwrap();
    let cfg = args.config().unwrap();
    assert_eq!(cfg.limit, Some(5 << 20));
    assert_eq!(cfg.size, Some(1 << 30));
    assert_eq!(cfg.buffer, Some(64 << 20));
    assert_eq!(cfg.name.as_deref(), Some("x"));
    assert_eq!(cfg.progress, ProgressMode::Quiet);
}

#[test]
fn passthrough_to_a_writer_logs_and_counts() {
    let data = vec![9u8; 1 << 20];
    let input = feed(data.clone());
    let (out_r, out_w) = rustix::pipe::pipe().unwrap();
    let drain = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::from(out_r), &mut v).unwrap();
        v
    });
    let log = Buf::default();
    let cfg = MeterConfig {
        signals: false,
        ..MeterConfig::default()
    };
    let stats = zpipe_meter::run_passthrough_to(
        &cfg,
        rustix::fd::AsFd::as_fd(&input),
        rustix::fd::AsFd::as_fd(&out_w),
        &Cancel::new(),
        ProgressTarget::Writer(Box::new(log.clone())),
    )
    .unwrap();
    drop(out_w);
    assert_eq!(drain.join().unwrap(), data);
    assert_eq!(stats.bytes, 1 << 20);
    assert_eq!(stats.spliced_bytes, 1 << 20);
    assert!(
        log.text().contains("status=done bytes=1048576"),
        "{}",
        log.text()
    );
}

#[test]
fn buffer_sink_passes_bytes_and_reports_fill() {
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 253) as u8).collect();
    let (out_r, out_w) = rustix::pipe::pipe().unwrap();
    let drain = std::thread::spawn(move || {
        // A bursty consumer: pause, then read everything.
        std::thread::sleep(Duration::from_millis(300));
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::from(out_r), &mut v).unwrap();
        v
    });
    let cancel = Cancel::new();
    let cfg = MeterConfig {
        buffer: Some(4 << 20),
        fill: 50,
        progress: ProgressMode::Quiet,
        signals: false,
        ..MeterConfig::default()
    };
    let (stage, handle) = MeterStage::new(cfg, ProgressTarget::Stderr, &cancel).unwrap();
    let sink = handle.buffer_sink(out_w).unwrap().expect("--buffer given");
    let res = pipeline::run(
        &PipelineConfig::default(),
        Box::new(FdSource::new(feed(data.clone()))),
        vec![Box::new(stage)],
        Box::new(sink),
        &cancel,
    );
    assert!(res.is_ok(), "{res:?}");
    let stats = handle.finish(Ok(())).unwrap();
    assert_eq!(drain.join().unwrap(), data);
    assert_eq!(stats.bytes, data.len() as u64);
    assert!(stats.peak_fill >= 2 << 20, "{stats:?}");
    assert!(stats.peak_fill <= 4 << 20, "{stats:?}");
}

#[test]
fn buffer_sink_reports_a_closed_output() {
    let (out_r, out_w) = rustix::pipe::pipe().unwrap();
    drop(out_r);
    let cancel = Cancel::new();
    let cfg = MeterConfig {
        buffer: Some(2 << 20),
        progress: ProgressMode::Quiet,
        signals: false,
        ..MeterConfig::default()
    };
    let (stage, _handle) = MeterStage::new(cfg, ProgressTarget::Stderr, &cancel).unwrap();
    let sink = handle_sink(&_handle, out_w);
    let err = pipeline::run(
        &PipelineConfig::default(),
        Box::new(FdSource::new(feed(vec![1u8; 8 << 20]))),
        vec![Box::new(stage)],
        Box::new(sink),
        &cancel,
    )
    .unwrap_err();
    assert!(zpipe_core::exit::is_broken_pipe(&err), "{err:#}");
}

fn handle_sink(h: &zpipe_meter::MeterHandle, fd: rustix::fd::OwnedFd) -> zpipe_meter::BufferSink {
    h.buffer_sink(fd).unwrap().unwrap()
}
