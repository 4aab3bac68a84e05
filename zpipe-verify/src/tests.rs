//! Unit tests of the framing library: round trips through [`Encoder`],
//! [`Decoder`] and the pipeline stages, exhaustive damage on small
//! streams, and property tests with random sizes, cuts and mutations.

use crate::format::{self, Record, RECORD_LEN};
use crate::{
    AbortHandle, DecodeStage, Decoder, Digest, EncodeOutcome, EncodeStage, Encoder, RecordFraming,
    VerifyConfig,
};
use proptest::prelude::*;
use std::sync::{Arc, Mutex};
use zpipe_core::cancel::Cancel;
use zpipe_core::exit::{classify, Exit};
use zpipe_core::pipeline::{self, PipelineConfig, Sink, Source, Stage};
use zpipe_core::pool::{Block, BlockPool};

fn cfg(frame_size: usize, workers: usize) -> VerifyConfig {
    VerifyConfig {
        frame_size,
        workers,
        follow_zfs: true,
    }
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

fn encode(input: &[u8], c: &VerifyConfig) -> (Vec<u8>, Digest) {
    let mut out = Vec::new();
    let mut e = Encoder::new(&mut out, c).unwrap();
    e.write_all(input).unwrap();
    let d = e.finish().unwrap();
    (out, d)
}

fn decode(stream: &[u8], workers: usize) -> (Vec<u8>, anyhow::Result<Digest>) {
    let mut out = Vec::new();
    let r = Decoder::new(stream, &cfg(1, workers)).decode_to(&mut out);
    (out, r)
}

/// Offset of frame `k`'s header in a stream of full frames of `fs` bytes.
fn frame_at(k: usize, fs: usize) -> usize {
    RECORD_LEN + k * (RECORD_LEN + fs)
}

#[test]
fn round_trip_small_and_empty() {
    for len in [0, 1, 63, 64, 65, 1000, 4096, 10_000] {
        let input = data(len, len as u64);
        for fs in [1, 7, 64, 1000, 4096] {
            let (stream, d) = encode(&input, &cfg(fs, 2));
            assert_eq!(d.bytes, len as u64);
            assert_eq!(d.frames, len.div_ceil(fs) as u64);
            let (out, r) = decode(&stream, 2);
            assert_eq!(r.unwrap(), d, "len {len} fs {fs}");
            assert_eq!(out, input);
        }
    }
}

#[test]
fn empty_stream_is_header_and_end() {
    let (stream, d) = encode(&[], &cfg(1 << 20, 1));
    assert_eq!(stream.len(), 2 * RECORD_LEN);
    assert_eq!(&stream[..8], &format::MAGIC);
    assert_eq!(d.frames, 0);
    assert!(crate::looks_like_framed(&stream));
    let (out, r) = decode(&stream, 1);
    assert!(out.is_empty());
    assert_eq!(r.unwrap(), d);
}

#[test]
fn framing_does_not_depend_on_write_sizes() {
    let input = data(50_000, 9);
    let c = cfg(4096, 2);
    let (whole, d1) = encode(&input, &c);
    let mut pieces = Vec::new();
    let mut e = Encoder::new(&mut pieces, &c).unwrap();
    for chunk in input.chunks(777) {
        e.write_all(chunk).unwrap();
    }
    let d2 = e.finish().unwrap();
    assert_eq!(whole, pieces);
    assert_eq!(d1, d2);
    let mut read = Vec::new();
    let mut e = Encoder::new(&mut read, &c).unwrap();
    e.copy_from(&mut &input[..]).unwrap();
    assert_eq!(e.finish().unwrap(), d1);
    assert_eq!(read, whole);
}

fn expect_integrity(r: anyhow::Result<Digest>, words: &[&str]) -> String {
    let e = r.expect_err("damage must be detected");
    let line = zpipe_core::exit::one_line(&e);
    assert_eq!(classify(&e), Exit::Integrity, "{line}");
    for w in words {
        assert!(line.contains(w), "{line:?} lacks {w:?}");
    }
    line
}

/// A stream of 4 full frames and one short one, frame size 100.
fn sample() -> (Vec<u8>, Vec<u8>, usize) {
    let fs = 100;
    let input = data(4 * fs + 37, 1);
    let (stream, _) = encode(&input, &cfg(fs, 2));
    (input, stream, fs)
}

/// The payload of the frames before frame `k`.
fn prefix(input: &[u8], fs: usize, k: usize) -> &[u8] {
    &input[..(k * fs).min(input.len())]
}

#[test]
fn every_single_bit_flip_is_detected_and_nothing_damaged_is_written() {
    let (input, stream, fs) = sample();
    let frames = input.len().div_ceil(fs);
    let trailer = stream.len() - RECORD_LEN;
    for bit in 0..stream.len() * 8 {
        let at = bit / 8;
        let mut s = stream.clone();
        s[at] ^= 1 << (bit % 8);
        let (out, r) = decode(&s, 2);
        if at < RECORD_LEN {
            expect_integrity(r, &["stream header"]);
            assert!(out.is_empty());
        } else if at >= trailer {
            expect_integrity(r, &["trailer"]);
            assert_eq!(out, input, "trailer damage leaves every frame verified");
        } else {
            let k = (at - RECORD_LEN) / (RECORD_LEN + fs);
            assert!(k < frames);
            let in_header = (at - frame_at(k, fs)) < RECORD_LEN;
            let words: &[&str] = if in_header {
                &["frame", "checksum mismatch"]
            } else {
                &["payload checksum mismatch"]
            };
            let line = expect_integrity(r, words);
            assert!(
                line.contains(&format!("frame {k} at byte {}", frame_at(k, fs))),
                "{line}"
            );
            assert_eq!(out, prefix(&input, fs, k), "bit {bit}");
        }
    }
}

#[test]
fn every_truncation_is_detected() {
    let (input, stream, fs) = sample();
    for cut in 0..stream.len() {
        let (out, r) = decode(&stream[..cut], 2);
        let line = expect_integrity(r, &[]);
        assert!(
            line.contains("truncated") || line.contains("empty input"),
            "cut {cut}: {line}"
        );
        // Only frames complete before the cut may be written.
        let frames = input.len().div_ceil(fs);
        let complete = (0..frames)
            .take_while(|&k| {
                let len = fs.min(input.len() - k * fs);
                frame_at(k, fs) + RECORD_LEN + len <= cut
            })
            .count();
        assert_eq!(out, prefix(&input, fs, complete), "cut {cut}");
    }
    let (_, r) = decode(&[], 1);
    expect_integrity(r, &["empty input"]);
}

fn frames_of(stream: &[u8], fs: usize) -> (Vec<u8>, Vec<Vec<u8>>, Vec<u8>) {
    let head = stream[..RECORD_LEN].to_vec();
    let tail_at = stream.len() - RECORD_LEN;
    let mut frames = Vec::new();
    let mut at = RECORD_LEN;
    while at < tail_at {
        let len = u32::from_le_bytes(stream[at + 4..at + 8].try_into().unwrap()) as usize;
        frames.push(stream[at..at + RECORD_LEN + len].to_vec());
        at += RECORD_LEN + len;
    }
    let _ = fs;
    (head, frames, stream[tail_at..].to_vec())
}

fn assemble(head: &[u8], frames: &[Vec<u8>], tail: &[u8]) -> Vec<u8> {
    let mut s = head.to_vec();
    for f in frames {
        s.extend_from_slice(f);
    }
    s.extend_from_slice(tail);
    s
}

#[test]
fn dropped_duplicated_and_swapped_frames_are_detected() {
    let (input, stream, fs) = sample();
    let (head, frames, tail) = frames_of(&stream, fs);
    for k in 0..frames.len() {
        let mut dropped = frames.clone();
        dropped.remove(k);
        let (out, r) = decode(&assemble(&head, &dropped, &tail), 2);
        let words: &[&str] = if k == frames.len() - 1 {
            &["END trailer", "frames dropped"]
        } else {
            &["out of sequence", "dropped"]
        };
        expect_integrity(r, words);
        assert_eq!(out, prefix(&input, fs, k));

        let mut dup = frames.clone();
        dup.insert(k, frames[k].clone());
        let (out, r) = decode(&assemble(&head, &dup, &tail), 2);
        expect_integrity(r, &["out of sequence", "repeated"]);
        assert_eq!(out, prefix(&input, fs, k + 1));

        if k + 1 < frames.len() {
            let mut swapped = frames.clone();
            swapped.swap(k, k + 1);
            let (out, r) = decode(&assemble(&head, &swapped, &tail), 2);
            expect_integrity(r, &["out of sequence", &format!("frame {k} at byte")]);
            assert_eq!(out, prefix(&input, fs, k));
        }
    }
}

#[test]
fn concatenated_streams_and_trailing_garbage_are_detected() {
    let (input, stream, _) = sample();
    let mut two = stream.clone();
    two.extend_from_slice(&stream);
    let (out, r) = decode(&two, 2);
    expect_integrity(r, &["two streams concatenated"]);
    assert_eq!(out, input);

    for garbage in [&b"\n"[..], &[0u8; 100][..]] {
        let mut g = stream.clone();
        g.extend_from_slice(garbage);
        let (out, r) = decode(&g, 2);
        expect_integrity(r, &["trailing data"]);
        assert_eq!(out, input);
    }

    // A cut first stream followed by a whole second one.
    let mut cut = stream[..RECORD_LEN + 10].to_vec();
    cut.truncate(RECORD_LEN);
    cut.extend_from_slice(&stream);
    let (out, r) = decode(&cut, 2);
    expect_integrity(r, &["two streams concatenated"]);
    assert!(out.is_empty());
}

fn sealed(mut r: Record) -> Record {
    format::seal(&mut r);
    r
}

#[test]
fn hostile_lengths_are_refused_before_allocation() {
    let (_, stream, _) = sample();
    let head = &stream[..RECORD_LEN];
    for len in [0u32, 101, u32::MAX] {
        let mut rec = [0u8; RECORD_LEN];
        rec[..4].copy_from_slice(&format::TAG_DATA);
        rec[4..8].copy_from_slice(&len.to_le_bytes());
        let mut s = head.to_vec();
        s.extend_from_slice(&sealed(rec));
        let (_, r) = decode(&s, 1);
        expect_integrity(r, &["frame 0 at byte 64", "payload length"]);
    }
    let mut rec = [0u8; RECORD_LEN];
    rec[..4].copy_from_slice(&format::TAG_ABORT);
    rec[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut s = head.to_vec();
    s.extend_from_slice(&sealed(rec));
    let (_, r) = decode(&s, 1);
    expect_integrity(r, &["ABORT", "message length"]);

    let mut h = format::Header { max_frame_len: 100 }.encode();
    h[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    let (_, r) = decode(&sealed(h), 1);
    expect_integrity(r, &["stream header", "frame size"]);
}

#[test]
fn abort_carries_the_senders_message() {
    let input = data(250, 3);
    let mut stream = Vec::new();
    let mut e = Encoder::new(&mut stream, &cfg(100, 2)).unwrap();
    e.write_all(&input).unwrap();
    e.abort("zfs send: cannot open 'pool/fs@snap': dataset does not exist")
        .unwrap();
    let (out, r) = decode(&stream, 2);
    expect_integrity(
        r,
        &["sender aborted", "after 3 frames", "dataset does not exist"],
    );
    assert_eq!(
        out,
        input[..200],
        "frames before the ABORT verified and are written, but the last one"
    );
    // The message cut short is still the sender's abort.
    let (_, r) = decode(&stream[..stream.len() - 5], 2);
    expect_integrity(r, &["sender aborted", "message truncated", "cannot open"]);
}

/// A DRR_BEGIN record with nothing after it: a `zfs send` that died early.
fn lone_drr_begin() -> Vec<u8> {
    const DRR_RECORD: usize = 312;
    const DMU_BACKUP_MAGIC: u64 = 0x2_F5BA_CBAC;
    const DMU_SUBSTREAM: u64 = 1;
    let mut r = vec![0u8; DRR_RECORD];
    // drr_type 0 (BEGIN), drr_payloadlen 0, then drr_begin.drr_magic,
    // drr_versioninfo (header type in the low two bits).
    r[8..16].copy_from_slice(&DMU_BACKUP_MAGIC.to_le_bytes());
    r[16..24].copy_from_slice(&DMU_SUBSTREAM.to_le_bytes());
    r[24..32].copy_from_slice(&1_700_000_000u64.to_le_bytes());
    r
}

#[test]
fn incomplete_zfs_stream_makes_the_encoder_write_abort() {
    let begin = lone_drr_begin();
    let mut stream = Vec::new();
    let mut e = Encoder::new(&mut stream, &cfg(100, 2)).unwrap();
    e.write_all(&begin).unwrap();
    let err = e.finish().unwrap_err();
    assert_eq!(classify(&err), Exit::Integrity);
    assert!(format!("{err:#}").contains("ZFS"), "{err:#}");
    let (out, r) = decode(&stream, 2);
    expect_integrity(r, &["sender aborted", "incomplete"]);
    // The last frame before an ABORT is held back.
    assert_eq!(out, begin[..300]);

    // Not following ZFS: the same bytes are plain data.
    let mut plain = Vec::new();
    let mut c = cfg(100, 1);
    c.follow_zfs = false;
    let mut e = Encoder::new(&mut plain, &c).unwrap();
    e.write_all(&begin).unwrap();
    e.finish().unwrap();
    assert!(decode(&plain, 1).1.is_ok());
}

// ---- stages ----------------------------------------------------------

struct VecSource {
    data: Vec<u8>,
    at: usize,
    cuts: Vec<usize>,
    abort: Option<(AbortHandle, String)>,
}

impl Source for VecSource {
    fn next_block(&mut self, pool: &BlockPool, c: &Cancel) -> anyhow::Result<Option<Block>> {
        if self.at >= self.data.len() {
            if let Some((h, m)) = self.abort.take() {
                h.abort(m);
            }
            return Ok(None);
        }
        let want = self.cuts.get(self.at % self.cuts.len().max(1)).copied();
        let n = want
            .unwrap_or(pool.block_size())
            .clamp(1, pool.block_size())
            .min(self.data.len() - self.at);
        let mut b = pool.get(c)?;
        b.vec_mut()
            .extend_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(Some(b))
    }
}

struct VecSink(Arc<Mutex<Vec<u8>>>);

impl Sink for VecSink {
    fn write_block(&mut self, b: Block, _: &Cancel) -> anyhow::Result<()> {
        self.0.lock().unwrap().extend_from_slice(b.data());
        Ok(())
    }
}

fn run_stages(
    input: Vec<u8>,
    cuts: Vec<usize>,
    stages: Vec<Box<dyn Stage>>,
) -> (Vec<u8>, anyhow::Result<()>) {
    run_stages_with(input, cuts, stages, None)
}

fn run_stages_with(
    input: Vec<u8>,
    cuts: Vec<usize>,
    stages: Vec<Box<dyn Stage>>,
    abort: Option<(AbortHandle, String)>,
) -> (Vec<u8>, anyhow::Result<()>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let pcfg = PipelineConfig {
        block_size: 4096,
        blocks: 4,
        depth: 2,
        headroom: 0,
    };
    let r = pipeline::run(
        &pcfg,
        Box::new(VecSource {
            data: input,
            at: 0,
            cuts,
            abort,
        }),
        stages,
        Box::new(VecSink(got.clone())),
        &Cancel::new(),
    );
    let out = got.lock().unwrap().clone();
    (out, r)
}

#[test]
fn stages_round_trip_and_match_the_plain_encoder() {
    let input = data(100_000, 5);
    let c = cfg(3000, 2);
    let (enc, h) = EncodeStage::new(c.clone());
    let (framed, r) = run_stages(input.clone(), vec![1, 500, 4096, 77], vec![Box::new(enc)]);
    r.unwrap();
    let (plain, d) = encode(&input, &c);
    assert_eq!(framed, plain, "stage and Encoder frame identically");
    assert_eq!(h.outcome(), Some(EncodeOutcome::Ended(d)));

    let (dec, dh) = DecodeStage::new(c.clone());
    let (out, r) = run_stages(framed, vec![1, 63, 64, 65, 4096, 999], vec![Box::new(dec)]);
    r.unwrap();
    assert_eq!(out, input);
    assert_eq!(dh.digest(), Some(d));
    assert_eq!(dh.frames(), d.frames);
}

#[test]
fn stage_abort_handle_turns_end_into_abort() {
    let input = data(10_000, 6);
    let (enc, h) = EncodeStage::new(cfg(1000, 2));
    let (framed, r) = run_stages_with(
        input.clone(),
        vec![4096],
        vec![Box::new(enc)],
        Some((
            h.clone(),
            "zfs send exited with status 1: out of memory".into(),
        )),
    );
    r.unwrap();
    assert!(matches!(h.outcome(), Some(EncodeOutcome::Aborted(m)) if m.contains("out of memory")));
    let (dec, dh) = DecodeStage::new(VerifyConfig::default());
    let (_, r) = run_stages(framed, vec![4096], vec![Box::new(dec)]);
    let e = r.unwrap_err();
    assert_eq!(classify(&e), Exit::Integrity);
    assert!(format!("{e:#}").contains("out of memory"), "{e:#}");
    assert_eq!(dh.digest(), None);
}

#[test]
fn decode_stage_rejects_damage() {
    let (input, stream, fs) = sample();
    let mut s = stream.clone();
    s[frame_at(2, fs) + RECORD_LEN + 5] ^= 0x10;
    let (dec, dh) = DecodeStage::new(VerifyConfig::default());
    let (_, r) = run_stages(s, vec![33], vec![Box::new(dec)]);
    let e = r.unwrap_err();
    assert_eq!(classify(&e), Exit::Integrity);
    assert!(format!("{e:#}").contains("frame 2"), "{e:#}");
    assert_eq!(dh.digest(), None);

    let (dec, _) = DecodeStage::new(VerifyConfig::default());
    let cut = frame_at(3, fs) + 10;
    let (out, r) = run_stages(stream[..cut].to_vec(), vec![4096], vec![Box::new(dec)]);
    assert!(format!("{:#}", r.unwrap_err()).contains("truncated"));
    assert_eq!(out, prefix(&input, fs, 3));
}

#[test]
fn stage_writes_abort_for_an_incomplete_zfs_stream() {
    let begin = lone_drr_begin();
    let (enc, h) = EncodeStage::new(cfg(100, 2));
    let (framed, r) = run_stages(begin.clone(), vec![50], vec![Box::new(enc)]);
    r.unwrap();
    assert!(
        matches!(h.outcome(), Some(EncodeOutcome::Aborted(m)) if m.contains("incomplete")),
        "{:?}",
        h.outcome()
    );
    let (out, r) = decode(&framed, 1);
    expect_integrity(r, &["sender aborted", "incomplete"]);
    assert_eq!(out, begin[..300], "all but the frame before the ABORT");
}

#[test]
fn encode_and_decode_stages_chain_with_tiny_pools() {
    // Many small frames through the smallest pipeline: nothing deadlocks
    // and the stages' own pools stay bounded.
    let input = data(300_000, 8);
    let c = cfg(1024, 3);
    let (enc, _) = EncodeStage::new(c.clone());
    let (dec, dh) = DecodeStage::new(c);
    let got = Arc::new(Mutex::new(Vec::new()));
    let pcfg = PipelineConfig {
        block_size: 700,
        blocks: 1,
        depth: 1,
        headroom: 0,
    };
    pipeline::run(
        &pcfg,
        Box::new(VecSource {
            data: input.clone(),
            at: 0,
            cuts: vec![700],
            abort: None,
        }),
        vec![Box::new(enc), Box::new(dec)],
        Box::new(VecSink(got.clone())),
        &Cancel::new(),
    )
    .unwrap();
    assert_eq!(*got.lock().unwrap(), input);
    assert_eq!(dh.bytes(), input.len() as u64);
}

// ---- properties ------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn round_trip_any_size(len in 0usize..20_000, fs in 1usize..5000, workers in 1usize..4, seed: u64) {
        let input = data(len, seed);
        let (stream, d) = encode(&input, &cfg(fs, workers));
        let (out, r) = decode(&stream, workers);
        prop_assert_eq!(r.unwrap(), d);
        prop_assert_eq!(out, input);
    }

    #[test]
    fn any_flip_or_cut_is_detected(len in 1usize..3000, fs in 1usize..700, pos: prop::sample::Index, bit in 0u8..8, cut: bool, seed: u64) {
        let input = data(len, seed);
        let (stream, _) = encode(&input, &cfg(fs, 2));
        let at = pos.index(stream.len());
        let s = if cut {
            stream[..at].to_vec()
        } else {
            let mut s = stream.clone();
            s[at] ^= 1 << bit;
            s
        };
        let (out, r) = decode(&s, 2);
        let e = r.expect_err("damage detected");
        prop_assert_eq!(classify(&e), Exit::Integrity);
        // What was written is whole frames of the original, ending before
        // the damaged place.
        prop_assert!(input.starts_with(&out));
        prop_assert!(out.len() % fs == 0 || out.len() == input.len());
        let frames_out = out.len().div_ceil(fs);
        prop_assert!(frame_at(frames_out, fs) <= at.max(RECORD_LEN) || out.len() == input.len());
    }

    /// Random mutations (flips, inserted and deleted runs, spliced copies)
    /// never panic, and either decode to the original or fail with exit 2.
    #[test]
    fn mutated_streams_never_panic(len in 0usize..3000, fs in 1usize..700, ops in prop::collection::vec((0u8..4, any::<prop::sample::Index>(), 1usize..200, any::<u8>()), 1..5), seed: u64) {
        let input = data(len, seed);
        let (mut s, _) = encode(&input, &cfg(fs, 2));
        for (op, at, n, byte) in ops {
            let i = at.index(s.len() + 1);
            match op {
                0 if i < s.len() => s[i] ^= byte | 1,
                1 => { let ins = vec![byte; n]; s.splice(i..i, ins); }
                2 => { let end = (i + n).min(s.len()); s.drain(i..end); }
                _ => { let end = (i + n).min(s.len()); let copy = s[i..end].to_vec(); let j = (i * 7 + n) % (s.len() + 1); s.splice(j..j, copy); }
            }
        }
        let (out, r) = decode(&s, 2);
        match r {
            Ok(_) => prop_assert_eq!(out, input),
            Err(e) => {
                prop_assert_eq!(classify(&e), Exit::Integrity);
                prop_assert!(input.starts_with(&out));
            }
        }
    }
}

#[test]
fn in_place_framing_from_a_descriptor_matches_the_plain_encoder() {
    // A pipe source with frame-sized blocks and header headroom: whole
    // frames are framed in place, the short tail is copied; the bytes must
    // be exactly the plain encoder's. With 8 workers the hashing window is
    // larger than the source's 4 blocks: the stage must not hold them all
    // (it did, now and then, and the source waited forever).
    for (len, workers) in [
        (0, 2),
        (1, 2),
        (4096, 2),
        (3 * 4096, 2),
        (3 * 4096 + 5, 2),
        (100_000, 2),
        (100_000, 8),
        (1_000_000, 8),
    ] {
        let input = data(len, 11);
        let c = cfg(4096, workers);
        let (r, w) = rustix::pipe::pipe().unwrap();
        let feed = input.clone();
        let writer = std::thread::spawn(move || {
            let mut f = std::fs::File::from(w);
            std::io::Write::write_all(&mut f, &feed).unwrap();
        });
        let got = Arc::new(Mutex::new(Vec::new()));
        let pcfg = PipelineConfig {
            block_size: 4096,
            blocks: 4,
            depth: 2,
            headroom: RECORD_LEN,
        };
        let (enc, _h) = EncodeStage::new(c.clone());
        pipeline::run(
            &pcfg,
            Box::new(pipeline::FdSource::new(r)),
            vec![Box::new(enc)],
            Box::new(VecSink(got.clone())),
            &Cancel::new(),
        )
        .unwrap();
        writer.join().unwrap();
        let (plain, _) = encode(&input, &c);
        assert!(*got.lock().unwrap() == plain, "len {len}");
    }
}

/// Decodes `stream` read from a pipe one record per block (RecordFraming),
/// so whole data frames are checked in place; returns output and result.
fn decode_framed_from_pipe(
    stream: Vec<u8>,
    block_size: usize,
    blocks: usize,
    workers: usize,
) -> (Vec<u8>, anyhow::Result<()>, u64) {
    let (r, w) = rustix::pipe::pipe().unwrap();
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::File::from(w);
        let _ = std::io::Write::write_all(&mut f, &stream);
    });
    let got = Arc::new(Mutex::new(Vec::new()));
    let pcfg = PipelineConfig {
        block_size,
        blocks,
        depth: 2,
        headroom: 0,
    };
    let (dec, handle) = DecodeStage::new(cfg(4096, workers));
    let res = pipeline::run(
        &pcfg,
        Box::new(pipeline::FdSource::new(r).with_framing(Box::new(RecordFraming::default()))),
        vec![Box::new(dec)],
        Box::new(VecSink(got.clone())),
        &Cancel::new(),
    );
    writer.join().unwrap();
    let out = got.lock().unwrap().clone();
    (out, res, handle.frames_in_place())
}

#[test]
fn one_frame_blocks_are_checked_in_place_and_damage_is_still_caught() {
    // Blocks that fit a frame (in place), blocks too small for one (the
    // copying path), pools too small to lend (copying), many workers over
    // a small pool (must not hold it all), and an END-only stream.
    for (len, block, blocks, workers, in_place) in [
        (0, 8192, 8, 2, 0),
        (1, 8192, 8, 2, 1),
        (4096 * 5, 8192, 8, 2, 5),
        (4096 * 5 + 7, 8192, 8, 2, 6),
        (100_000, 8192, 4, 8, 25),
        (100_000, 8192, 3, 2, 0),
        (100_000, 1000, 8, 2, 0),
    ] {
        let input = data(len, 21);
        let (stream, _) = encode(&input, &cfg(4096, 2));
        let (out, r, n) = decode_framed_from_pipe(stream, block, blocks, workers);
        r.unwrap();
        assert!(out == input, "len {len} block {block} blocks {blocks}");
        assert_eq!(n, in_place, "len {len} block {block} blocks {blocks}");
    }
    let input = data(4096 * 6, 22);
    let (stream, _) = encode(&input, &cfg(4096, 2));
    let fs = 4096;
    // A flipped payload bit: frames before it are delivered, not it.
    let mut s = stream.clone();
    s[frame_at(3, fs) + RECORD_LEN + 100] ^= 1;
    let (out, r, _) = decode_framed_from_pipe(s, 8192, 8, 2);
    let e = r.unwrap_err();
    assert_eq!(classify(&e), Exit::Integrity);
    assert!(format!("{e:#}").contains("frame 3"), "{e:#}");
    assert_eq!(out, prefix(&input, fs, 3));
    // Frames swapped: the sequence check still runs on the in-place path.
    let (head, mut frames, tail) = frames_of(&stream, fs);
    frames.swap(1, 2);
    let (out, r, _) = decode_framed_from_pipe(assemble(&head, &frames, &tail), 8192, 8, 2);
    assert_eq!(classify(&r.unwrap_err()), Exit::Integrity);
    assert_eq!(out, prefix(&input, fs, 1));
    // Cut inside a frame's payload.
    let cut = frame_at(4, fs) + RECORD_LEN + 10;
    let (out, r, _) = decode_framed_from_pipe(stream[..cut].to_vec(), 8192, 8, 2);
    assert!(format!("{:#}", r.unwrap_err()).contains("truncated"));
    assert_eq!(out, prefix(&input, fs, 4));
}

#[test]
fn frames_hashed_as_a_pair_are_judged_each_on_its_own() {
    use crate::parser::{Frame, FrameBuf, PayloadBuf};
    let frame = |seq: u64, payload: &[u8], damage: bool| {
        let mut buf = FrameBuf::default();
        buf.start(payload.len());
        buf.append(payload);
        let mut sha = format::sha256(payload);
        if damage {
            sha[seq as usize % 32] ^= 1;
        }
        Frame {
            seq,
            at: 0,
            sha,
            buf,
        }
    };
    let (a, b) = (vec![7u8; 5000], vec![9u8; 70_000]);
    for (da, db) in [(false, false), (true, false), (false, true), (true, true)] {
        let (fa, fb) = (frame(0, &a, da), frame(1, &b, db));
        assert_eq!(Frame::verify_pair(&fa, &fb), (!da, !db));
        assert_eq!((fa.verify(), fb.verify()), (!da, !db));
    }
}
