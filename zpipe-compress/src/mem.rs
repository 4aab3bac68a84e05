//! In-memory runs of the stages, for tests, fuzzing and tools that hold the
//! data already: the input is cut into blocks of a chosen size (so stage
//! code sees arbitrary cut points) and pushed through the real pipeline.

use crate::{CompressConfig, CompressStage, DecompressConfig, DecompressStage};
use std::sync::{Arc, Mutex};
use zpipe_core::cancel::Cancel;
use zpipe_core::pipeline::{self, PipelineConfig, Sink, Source, Stage};
use zpipe_core::pool::{Block, BlockPool};

/// Blocks in the pool of an in-memory run.
const MEM_BLOCKS: usize = 4;

struct SliceSource {
    data: Arc<[u8]>,
    at: usize,
}

impl Source for SliceSource {
    fn next_block(&mut self, pool: &BlockPool, cancel: &Cancel) -> anyhow::Result<Option<Block>> {
        if self.at >= self.data.len() {
            return Ok(None);
        }
        let mut b = pool.get(cancel)?;
        let n = pool.block_size().min(self.data.len() - self.at);
        b.vec_mut()
            .extend_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(Some(b))
    }
}

/// A sink collecting every byte into a shared vector.
pub(crate) struct VecSink(pub(crate) Arc<Mutex<Vec<u8>>>);

impl Sink for VecSink {
    fn write_block(&mut self, block: Block, _cancel: &Cancel) -> anyhow::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(block.data());
        Ok(())
    }
}

/// Runs `stage` over `input` cut into `cut`-byte blocks; returns the output.
pub fn run_stage(input: &[u8], cut: usize, stage: Box<dyn Stage>) -> anyhow::Result<Vec<u8>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let cfg = PipelineConfig {
        block_size: cut.max(1),
        blocks: MEM_BLOCKS,
        depth: 1,
        headroom: 0,
    };
    pipeline::run(
        &cfg,
        Box::new(SliceSource {
            data: input.into(),
            at: 0,
        }),
        vec![stage],
        Box::new(VecSink(Arc::clone(&out))),
        &Cancel::new(),
    )?;
    let v = std::mem::take(&mut *out.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(v)
}

/// Compresses `input` with a [`CompressStage`], fed in `cut`-byte blocks.
pub fn compress_bytes(input: &[u8], cut: usize, cfg: CompressConfig) -> anyhow::Result<Vec<u8>> {
    run_stage(input, cut, Box::new(CompressStage::new(cfg)?))
}

/// Decompresses `input` with a [`DecompressStage`], fed in `cut`-byte blocks.
pub fn decompress_bytes(
    input: &[u8],
    cut: usize,
    cfg: DecompressConfig,
) -> anyhow::Result<Vec<u8>> {
    run_stage(input, cut, Box::new(DecompressStage::new(cfg)?))
}
