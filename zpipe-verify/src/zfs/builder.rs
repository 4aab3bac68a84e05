//! [`StreamBuilder`]: writes ZFS send streams record by record, laid out and
//! checksummed exactly as OpenZFS 2.x writes them.
//!
//! Tests use it to make streams zfs-fuse cannot (compressed and raw WRITEs,
//! SPILL, WRITE_EMBEDDED, OBJECT_RANGE, REDACT, per-record checksums,
//! big-endian senders), and a stand-in `zfs` can use it to emit OpenZFS-style
//! streams. Every field goes to the offset `include/sys/zfs_ioctl.h` gives it
//! (see [`super::format::off`]); the checksums follow `dump_record()` in
//! `module/zfs/dmu_send.c`: one running Fletcher-4 per substream, reset at
//! BEGIN; each non-BEGIN record's last 32 bytes get the sum over everything
//! before them (when per-record checksums are on); END's `drr_checksum` gets
//! the sum over everything before the END record. The compound (`-R`)
//! header follows `send_prelim_records()` / `send_conclusion_record()` in
//! `lib/libzfs/libzfs_sendrecv.c`: BEGIN + nvlist summed alone, an END with
//! that sum and no per-record checksum, and a final all-zero END.

use std::io::{self, Write};

use zpipe_core::fletcher4::{Fletcher4, WordOrder};

use super::format::{
    off, ByteOrder, RecordType, CHECKSUM_OFFSET, DMU_BACKUP_MAGIC, DMU_COMPOUNDSTREAM,
    DMU_SUBSTREAM, MAXNAMELEN, RECORD_SIZE, UNION_OFFSET,
};

/// Fields of a `drr_begin`.
#[derive(Debug, Clone, Default)]
pub struct BeginFields {
    /// `drr_toname`, e.g. `pool/fs@snap` (at most 255 bytes).
    pub toname: String,
    /// `drr_toguid`; also stamped into every following record's `drr_toguid`.
    pub toguid: u64,
    /// `drr_fromguid` (0 for a full stream).
    pub fromguid: u64,
    /// Feature flags (`DMU_BACKUP_FEATURE_*`, see [`super::format::feature`]).
    pub features: u64,
    /// `drr_flags` (`DRR_FLAG_*`).
    pub flags: u32,
    /// `drr_creation_time`.
    pub creation_time: u64,
    /// `drr_type` (`dmu_objset_type_t`: 2 = ZFS filesystem, 3 = zvol).
    pub objset_type: u32,
}

/// Fields of a `drr_object`.
#[derive(Debug, Clone)]
pub struct ObjectFields {
    /// `drr_object`.
    pub object: u64,
    /// `drr_type` (`dmu_object_type_t`, e.g. 19 = plain file contents).
    pub object_type: u32,
    /// `drr_bonustype` (e.g. 44 = SA).
    pub bonustype: u32,
    /// `drr_blksz`.
    pub blksz: u32,
    /// `drr_bonuslen`.
    pub bonuslen: u32,
    /// `drr_raw_bonuslen` (raw sends only).
    pub raw_bonuslen: u32,
    /// `drr_dn_slots`.
    pub dn_slots: u8,
    /// `drr_checksumtype`.
    pub checksumtype: u8,
    /// `drr_compress`.
    pub compress: u8,
}

impl Default for ObjectFields {
    fn default() -> Self {
        ObjectFields {
            object: 1,
            object_type: 19,
            bonustype: 44,
            blksz: 131_072,
            bonuslen: 0,
            raw_bonuslen: 0,
            dn_slots: 1,
            checksumtype: 7,
            compress: 2,
        }
    }
}

/// Fields of a `drr_write`.
#[derive(Debug, Clone)]
pub struct WriteFields {
    /// `drr_object`.
    pub object: u64,
    /// `drr_type` of the object.
    pub object_type: u32,
    /// `drr_offset`.
    pub offset: u64,
    /// `drr_logical_size`.
    pub logical_size: u64,
    /// `drr_compressiontype` (0 = payload is `logical_size` bytes).
    pub compression: u8,
    /// `drr_compressed_size` (the payload size when `compression` != 0).
    pub compressed_size: u64,
    /// `drr_checksumtype`.
    pub checksumtype: u8,
    /// `drr_salt`, `drr_iv`, `drr_mac` filled with a pattern (raw sends).
    pub crypt_params: bool,
}

impl Default for WriteFields {
    fn default() -> Self {
        WriteFields {
            object: 2,
            object_type: 19,
            offset: 0,
            logical_size: 131_072,
            compression: 0,
            compressed_size: 0,
            checksumtype: 7,
            crypt_params: false,
        }
    }
}

/// Fields of a `drr_spill`.
#[derive(Debug, Clone, Default)]
pub struct SpillFields {
    /// `drr_object`.
    pub object: u64,
    /// `drr_length`.
    pub length: u64,
    /// `drr_compressiontype`.
    pub compression: u8,
    /// `drr_compressed_size` (raw sends; the payload size when nonzero).
    pub compressed_size: u64,
    /// `drr_type` of the spill block.
    pub object_type: u32,
}

/// Fields of a `drr_write_embedded`.
#[derive(Debug, Clone, Default)]
pub struct EmbeddedFields {
    /// `drr_object`.
    pub object: u64,
    /// `drr_offset`.
    pub offset: u64,
    /// `drr_length` (the block size).
    pub length: u64,
    /// `drr_compression`.
    pub compression: u8,
    /// `drr_etype`.
    pub etype: u8,
    /// `drr_lsize`.
    pub lsize: u32,
    /// `drr_psize` (the payload is this rounded up to 8).
    pub psize: u32,
}

/// Writes a ZFS send stream to `W`, record by record.
pub struct StreamBuilder<W: Write = Vec<u8>> {
    out: W,
    order: ByteOrder,
    record_checksums: bool,
    sum: Fletcher4,
    toguid: u64,
    rec: [u8; RECORD_SIZE],
}

impl<W: Write> std::fmt::Debug for StreamBuilder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamBuilder")
            .field("order", &self.order)
            .field("record_checksums", &self.record_checksums)
            .finish()
    }
}

impl StreamBuilder<Vec<u8>> {
    /// A builder into memory; see [`StreamBuilder::to_writer`].
    pub fn new(order: ByteOrder, record_checksums: bool) -> Self {
        StreamBuilder::to_writer(Vec::new(), order, record_checksums)
    }
}

fn word_order(order: ByteOrder) -> WordOrder {
    match order {
        ByteOrder::Little => WordOrder::Little,
        ByteOrder::Big => WordOrder::Big,
    }
}

impl<W: Write> StreamBuilder<W> {
    /// A builder writing to `out` in the byte order of a sender of `order`,
    /// with per-record checksums (OpenZFS ≥ 0.7) or without (older senders).
    pub fn to_writer(out: W, order: ByteOrder, record_checksums: bool) -> Self {
        StreamBuilder {
            out,
            order,
            record_checksums,
            sum: Fletcher4::with_order(word_order(order)),
            toguid: 0,
            rec: [0; RECORD_SIZE],
        }
    }

    /// The writer, after the last record.
    pub fn into_inner(self) -> W {
        self.out
    }

    fn start(&mut self, ty: RecordType) {
        self.rec = [0; RECORD_SIZE];
        self.order.put_u32(&mut self.rec, 0, ty as u32);
    }

    fn u8(&mut self, at: usize, v: u8) {
        self.rec[UNION_OFFSET + at] = v;
    }

    fn u32(&mut self, at: usize, v: u32) {
        self.order.put_u32(&mut self.rec, UNION_OFFSET + at, v);
    }

    fn u64(&mut self, at: usize, v: u64) {
        self.order.put_u64(&mut self.rec, UNION_OFFSET + at, v);
    }

    /// Emits the record in `self.rec` and its payload, the way `dump_record()` does.
    fn emit(&mut self, payload: &[u8], record_checksum: bool) -> io::Result<()> {
        let is_begin = self.order.u32(&self.rec, 0) == RecordType::Begin as u32;
        self.sum.update(&self.rec[..CHECKSUM_OFFSET]);
        if !is_begin && record_checksum {
            let s = self.sum.sums();
            for (i, w) in s.iter().enumerate() {
                self.order
                    .put_u64(&mut self.rec, CHECKSUM_OFFSET + 8 * i, *w);
            }
        }
        self.sum.update(&self.rec[CHECKSUM_OFFSET..]);
        self.sum.update(payload);
        self.out.write_all(&self.rec)?;
        self.out.write_all(payload)
    }

    fn begin_record(&mut self, b: &BeginFields, hdrtype: u64, nvlist: &[u8]) -> io::Result<()> {
        let name = b.toname.as_bytes();
        if name.len() >= MAXNAMELEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "drr_toname longer than 255 bytes",
            ));
        }
        let plen = u32::try_from(nvlist.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "BEGIN payload over 4 GiB"))?;
        self.sum = Fletcher4::with_order(word_order(self.order));
        self.start(RecordType::Begin);
        self.order.put_u32(&mut self.rec, 4, plen);
        self.u64(off::BEGIN_MAGIC, DMU_BACKUP_MAGIC);
        self.u64(off::BEGIN_VERSIONINFO, hdrtype | (b.features << 2));
        self.u64(off::BEGIN_CREATION_TIME, b.creation_time);
        self.u32(off::BEGIN_TYPE, b.objset_type);
        self.u32(off::BEGIN_FLAGS, b.flags);
        self.u64(off::BEGIN_TOGUID, b.toguid);
        self.u64(off::BEGIN_FROMGUID, b.fromguid);
        let at = UNION_OFFSET + off::BEGIN_TONAME;
        self.rec[at..at + name.len()].copy_from_slice(name);
        self.toguid = b.toguid;
        self.emit(nvlist, false)
    }

    /// A substream BEGIN (`DMU_SUBSTREAM`) with its optional nvlist payload;
    /// starts a new running checksum.
    pub fn begin(&mut self, b: &BeginFields, nvlist: &[u8]) -> io::Result<()> {
        self.begin_record(b, DMU_SUBSTREAM, nvlist)
    }

    /// The outer BEGIN of a compound stream (`DMU_COMPOUNDSTREAM`) and its
    /// packed nvlist, followed by the END that checksums them.
    pub fn compound_header(&mut self, b: &BeginFields, nvlist: &[u8]) -> io::Result<()> {
        self.begin_record(b, DMU_COMPOUNDSTREAM, nvlist)?;
        let sum = self.sum.sums();
        self.start(RecordType::End);
        for (i, w) in sum.iter().enumerate() {
            self.u64(off::END_CHECKSUM + 8 * i, *w);
        }
        self.emit(&[], false)
    }

    /// The final all-zero END of a compound stream.
    pub fn final_end(&mut self) -> io::Result<()> {
        self.start(RecordType::End);
        self.emit(&[], false)
    }

    /// The END of a substream: its checksum over everything before it, and the BEGIN's toguid.
    pub fn end(&mut self) -> io::Result<()> {
        let sum = self.sum.sums();
        self.start(RecordType::End);
        for (i, w) in sum.iter().enumerate() {
            self.u64(off::END_CHECKSUM + 8 * i, *w);
        }
        self.u64(off::END_TOGUID, self.toguid);
        self.emit(&[], self.record_checksums)
    }

    /// An OBJECT record; `bonus` is its payload (`DRR_OBJECT_PAYLOAD_SIZE` bytes).
    pub fn object(&mut self, o: &ObjectFields, bonus: &[u8]) -> io::Result<()> {
        self.start(RecordType::Object);
        self.u64(off::OBJECT_OBJECT, o.object);
        self.u32(off::OBJECT_TYPE, o.object_type);
        self.u32(off::OBJECT_BONUSTYPE, o.bonustype);
        self.u32(off::OBJECT_BLKSZ, o.blksz);
        self.u32(off::OBJECT_BONUSLEN, o.bonuslen);
        self.u8(off::OBJECT_CHECKSUMTYPE, o.checksumtype);
        self.u8(off::OBJECT_COMPRESS, o.compress);
        self.u8(off::OBJECT_DN_SLOTS, o.dn_slots);
        self.u32(off::OBJECT_RAW_BONUSLEN, o.raw_bonuslen);
        self.u64(off::OBJECT_TOGUID, self.toguid);
        self.emit(bonus, self.record_checksums)
    }

    /// A FREEOBJECTS record.
    pub fn free_objects(&mut self, firstobj: u64, numobjs: u64) -> io::Result<()> {
        self.start(RecordType::FreeObjects);
        self.u64(off::FREEOBJECTS_FIRSTOBJ, firstobj);
        self.u64(off::FREEOBJECTS_NUMOBJS, numobjs);
        self.u64(off::FREEOBJECTS_TOGUID, self.toguid);
        self.emit(&[], self.record_checksums)
    }

    /// A WRITE record; `data` is its payload (`DRR_WRITE_PAYLOAD_SIZE` bytes).
    pub fn write(&mut self, w: &WriteFields, data: &[u8]) -> io::Result<()> {
        self.start(RecordType::Write);
        self.u64(off::WRITE_OBJECT, w.object);
        self.u32(off::WRITE_TYPE, w.object_type);
        self.u64(off::WRITE_OFFSET, w.offset);
        self.u64(off::WRITE_LOGICAL_SIZE, w.logical_size);
        self.u64(off::WRITE_TOGUID, self.toguid);
        self.u8(off::WRITE_CHECKSUMTYPE, w.checksumtype);
        self.u8(off::WRITE_COMPRESSIONTYPE, w.compression);
        self.u64(off::WRITE_COMPRESSED_SIZE, w.compressed_size);
        if w.crypt_params {
            // drr_salt[8], drr_iv[12], drr_mac[16]: any nonzero pattern.
            for i in off::WRITE_CRYPT {
                self.u8(i, (i as u8).wrapping_mul(37) | 1);
            }
        }
        self.emit(data, self.record_checksums)
    }

    /// A FREE record (`length` = `u64::MAX` frees to the end of the object).
    pub fn free(&mut self, object: u64, offset: u64, length: u64) -> io::Result<()> {
        self.start(RecordType::Free);
        self.u64(off::FREE_OBJECT, object);
        self.u64(off::FREE_OFFSET, offset);
        self.u64(off::FREE_LENGTH, length);
        self.u64(off::FREE_TOGUID, self.toguid);
        self.emit(&[], self.record_checksums)
    }

    /// A WRITE_BYREF record pointing at an earlier block.
    pub fn write_byref(
        &mut self,
        object: u64,
        offset: u64,
        length: u64,
        refobject: u64,
        refoffset: u64,
    ) -> io::Result<()> {
        self.start(RecordType::WriteByref);
        self.u64(off::BYREF_OBJECT, object);
        self.u64(off::BYREF_OFFSET, offset);
        self.u64(off::BYREF_LENGTH, length);
        self.u64(off::BYREF_TOGUID, self.toguid);
        self.u64(off::BYREF_REFGUID, self.toguid);
        self.u64(off::BYREF_REFOBJECT, refobject);
        self.u64(off::BYREF_REFOFFSET, refoffset);
        self.emit(&[], self.record_checksums)
    }

    /// A SPILL record; `data` is its payload (`DRR_SPILL_PAYLOAD_SIZE` bytes).
    pub fn spill(&mut self, s: &SpillFields, data: &[u8]) -> io::Result<()> {
        self.start(RecordType::Spill);
        self.u64(off::SPILL_OBJECT, s.object);
        self.u64(off::SPILL_LENGTH, s.length);
        self.u64(off::SPILL_TOGUID, self.toguid);
        self.u8(off::SPILL_COMPRESSIONTYPE, s.compression);
        self.u64(off::SPILL_COMPRESSED_SIZE, s.compressed_size);
        self.u32(off::SPILL_TYPE, s.object_type);
        self.emit(data, self.record_checksums)
    }

    /// A WRITE_EMBEDDED record; `data` is `drr_psize` rounded up to 8 bytes.
    pub fn write_embedded(&mut self, e: &EmbeddedFields, data: &[u8]) -> io::Result<()> {
        self.start(RecordType::WriteEmbedded);
        self.u64(off::EMBEDDED_OBJECT, e.object);
        self.u64(off::EMBEDDED_OFFSET, e.offset);
        self.u64(off::EMBEDDED_LENGTH, e.length);
        self.u64(off::EMBEDDED_TOGUID, self.toguid);
        self.u8(off::EMBEDDED_COMPRESSION, e.compression);
        self.u8(off::EMBEDDED_ETYPE, e.etype);
        self.u32(off::EMBEDDED_LSIZE, e.lsize);
        self.u32(off::EMBEDDED_PSIZE, e.psize);
        self.emit(data, self.record_checksums)
    }

    /// An OBJECT_RANGE record (raw sends).
    pub fn object_range(&mut self, firstobj: u64, numslots: u64) -> io::Result<()> {
        self.start(RecordType::ObjectRange);
        self.u64(off::RANGE_FIRSTOBJ, firstobj);
        self.u64(off::RANGE_NUMSLOTS, numslots);
        self.u64(off::RANGE_TOGUID, self.toguid);
        self.emit(&[], self.record_checksums)
    }

    /// A REDACT record (redacted sends).
    pub fn redact(&mut self, object: u64, offset: u64, length: u64) -> io::Result<()> {
        self.start(RecordType::Redact);
        self.u64(off::REDACT_OBJECT, object);
        self.u64(off::REDACT_OFFSET, offset);
        self.u64(off::REDACT_LENGTH, length);
        self.u64(off::REDACT_TOGUID, self.toguid);
        self.emit(&[], self.record_checksums)
    }
}
