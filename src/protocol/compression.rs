//! Record batch compression: [`compress`] for the batches the log cleaner
//! rewrites, and bounded decompression of record batches.
//!
//! Produce stores compressed batches as received, without decompressing them,
//! so a batch within `max.message.bytes` can be a "zip bomb": 1 GiB of zeros
//! is tens of KiB under zstd (48 KiB in `tests/decompression_bomb.rs`) and
//! about 1 MiB under gzip. Everything that
//! decompresses a whole batch (ListOffsets by timestamp, the log cleaner, the
//! key check of Produce to a compacted topic, the replay of internal logs)
//! goes through [`decompress`] with a limit: the codec is read as a stream
//! into a buffer that never grows past `limit + 1` bytes, and decoding stops
//! with [`DecompressError::TooLarge`] as soon as the output passes the limit.
//! Each caller decides what a too-large batch means for it.
//!
//! kafka-protocol's own decompressors (behind `RecordBatchDecoder::decode`)
//! have no bound: they decode everything into memory, and the snappy one
//! allocates whatever length a block header claims (up to 4 GiB) before
//! decoding a byte. Sluice does not call them on stored data.
//!
//! Memory held by the codec libraries themselves (in C) is bounded too: zstd's
//! window by [`zstd_window_log_max`], lz4's by its largest block (4 MiB), gzip
//! and snappy keep at most 32 KiB and a block's output.

use std::io::{self, Read};

use bytes::{Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};

/// Compresses `records` (a records area) with the batch codec `codec` (the
/// attribute bits 0-2) and appends the result to `out`.
pub fn compress(codec: u8, records: &[u8], out: &mut BytesMut) -> Result<(), String> {
    let fill = |tmp: &mut BytesMut| -> anyhow::Result<()> {
        tmp.extend_from_slice(records);
        Ok(())
    };
    let result = match codec {
        0 => {
            out.extend_from_slice(records);
            return Ok(());
        }
        1 => <Gzip as Compressor<BytesMut>>::compress(out, fill),
        2 => <Snappy as Compressor<BytesMut>>::compress(out, fill),
        3 => <Lz4 as Compressor<BytesMut>>::compress(out, fill),
        4 => <Zstd as Compressor<BytesMut>>::compress(out, fill),
        other => return Err(format!("unknown compression codec {other}")),
    };
    result.map_err(|e| format!("compressing: {e}"))
}

/// The smallest decompression limit. 64 MiB is 64 times the default
/// `max.message.bytes` (1 MiB): clients bound a batch by its *uncompressed*
/// size (librdkafka's `batch.size` and `message.max.bytes`, the Java
/// producer's `batch.size` and `max.request.size`, all at most about 1 MB by
/// default), so a real batch decompresses to a few MB at most, while 64 MiB
/// per decompression, one at a time per shard thread and per cleaner, is memory
/// a broker can always spare.
pub const DECOMPRESSED_BYTES_FLOOR: usize = 64 << 20;
/// The largest decompression limit, whatever `max.message.bytes` says.
pub const DECOMPRESSED_BYTES_CEILING: usize = 1 << 30;
/// First capacity of the output buffer. Output that does not fit gets one
/// reservation of `limit + 1` bytes: growing step by step instead would hold
/// the old and the new buffer at once while reallocating (up to 1.5 times the
/// limit). The reservation is address space; only the pages written count.
const OUTPUT_BYTES_INITIAL: usize = 64 << 10;

/// The limit for a topic: four times its `max.message.bytes` (a topic that
/// accepts bigger batches gets room for their records uncompressed, with
/// slack for clients whose uncompressed limit is above the broker's), within
/// [`DECOMPRESSED_BYTES_FLOOR`] and [`DECOMPRESSED_BYTES_CEILING`].
pub fn decompressed_bytes_max(max_message_bytes: i32) -> usize {
    usize::try_from(max_message_bytes)
        .unwrap_or(0)
        .saturating_mul(4)
        .clamp(DECOMPRESSED_BYTES_FLOOR, DECOMPRESSED_BYTES_CEILING)
}

/// The largest zstd window (log2 bytes) accepted under `limit`: the window
/// the frame asks for is allocated by the decoder whatever the output, so it
/// is bounded by the limit, but never below 2^23 (8 MiB), the window of zstd's
/// levels 1-19 for streams of unknown size, nor above 2^27, zstd's own default.
pub fn zstd_window_log_max(limit: usize) -> u32 {
    let floor_log2 = usize::BITS - 1 - limit.max(1).leading_zeros();
    floor_log2.clamp(23, 27)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    #[error("records decompress to more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("unknown compression codec {0}")]
    UnknownCodec(u8),
    #[error("corrupt {codec} data: {message}")]
    Corrupt {
        codec: &'static str,
        message: String,
    },
}

fn corrupt(codec: &'static str) -> impl Fn(io::Error) -> DecompressError {
    move |e| DecompressError::Corrupt {
        codec,
        message: e.to_string(),
    }
}

/// Decompresses `compressed` (the records area of a batch) with Kafka's codec
/// `codec` (1 gzip, 2 snappy, 3 lz4, 4 zstd; 0 returns the bytes as they are),
/// refusing output beyond `limit` bytes.
pub fn decompress(codec: u8, compressed: &Bytes, limit: usize) -> Result<Bytes, DecompressError> {
    let out = match codec {
        0 if compressed.len() > limit => return Err(DecompressError::TooLarge { limit }),
        0 => return Ok(compressed.clone()),
        1 => read_bounded("gzip", flate2::read::GzDecoder::new(&compressed[..]), limit)?,
        2 => snappy(compressed, limit)?,
        3 => {
            let mut decoder = lz4::Decoder::new(&compressed[..]).map_err(corrupt("lz4"))?;
            let out = read_bounded("lz4", &mut decoder, limit)?;
            // The reader ends quietly at the end of its input, even mid-frame.
            decoder.finish().1.map_err(|_| DecompressError::Corrupt {
                codec: "lz4",
                message: "truncated frame".to_string(),
            })?;
            out
        }
        4 => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(&compressed[..])
                .map_err(corrupt("zstd"))?;
            decoder
                .window_log_max(zstd_window_log_max(limit))
                .map_err(corrupt("zstd"))?;
            read_bounded("zstd", decoder, limit)?
        }
        other => return Err(DecompressError::UnknownCodec(other)),
    };
    Ok(Bytes::from(out))
}

/// Makes room for `needed` bytes (at most `limit + 1`) in `out`: first
/// [`OUTPUT_BYTES_INITIAL`], then `limit + 1` at once.
fn grow(out: &mut Vec<u8>, needed: usize, limit: usize) {
    if needed <= out.capacity() {
        return;
    }
    let ceiling = limit.saturating_add(1);
    let target = if needed <= OUTPUT_BYTES_INITIAL {
        OUTPUT_BYTES_INITIAL.min(ceiling)
    } else {
        ceiling
    };
    out.reserve_exact(target.max(needed) - out.len());
}

/// Reads `reader` to its end into memory; TooLarge once more than `limit`
/// bytes came out (reading `limit + 1` is how that is known).
fn read_bounded(
    codec: &'static str,
    mut reader: impl Read,
    limit: usize,
) -> Result<Vec<u8>, DecompressError> {
    let mut out: Vec<u8> = Vec::new();
    let mut filled = 0usize;
    loop {
        if filled == out.len() {
            if filled > limit {
                return Err(DecompressError::TooLarge { limit });
            }
            // Zero-filled (and so touched) a doubling at a time, not all at once.
            let next = filled
                .saturating_mul(2)
                .max(OUTPUT_BYTES_INITIAL)
                .min(limit.saturating_add(1));
            grow(&mut out, next, limit);
            out.resize(next, 0);
        }
        match reader.read(&mut out[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(corrupt(codec)(e)),
        }
    }
    out.truncate(filled);
    Ok(out)
}

/// The header of Kafka's (xerial) snappy framing: magic, version 1, compatible version 1.
const XERIAL_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";

/// Snappy as Kafka writes it: xerial framing (blocks, each a big-endian u32
/// length and a raw snappy block), or one raw snappy block without it. Each
/// block states its decompressed length up front; the sum is checked against
/// the limit before anything is allocated for it.
fn snappy(compressed: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    let bad = |message: &str| DecompressError::Corrupt {
        codec: "snappy",
        message: message.to_string(),
    };
    if compressed.is_empty() {
        return Err(bad("empty input"));
    }
    let mut blocks: Vec<&[u8]> = Vec::new();
    if compressed.len() >= XERIAL_HEADER.len()
        && compressed[..XERIAL_HEADER.len()] == XERIAL_HEADER[..]
    {
        let mut rest = &compressed[XERIAL_HEADER.len()..];
        while !rest.is_empty() {
            let length: [u8; 4] = rest
                .get(..4)
                .and_then(|l| l.try_into().ok())
                .ok_or_else(|| bad("truncated block length"))?;
            let length = u32::from_be_bytes(length) as usize;
            let block = rest
                .get(4..4 + length)
                .ok_or_else(|| bad("truncated block"))?;
            blocks.push(block);
            rest = &rest[4 + length..];
        }
    } else {
        blocks.push(compressed);
    }
    let mut out: Vec<u8> = Vec::new();
    let mut decoder = snap::raw::Decoder::new();
    for block in blocks {
        let claimed = snap::raw::decompress_len(block).map_err(|e| bad(&e.to_string()))?;
        let end = out.len().saturating_add(claimed);
        if end > limit {
            return Err(DecompressError::TooLarge { limit });
        }
        let start = out.len();
        grow(&mut out, end, limit);
        out.resize(end, 0);
        let written = decoder
            .decompress(block, &mut out[start..])
            .map_err(|e| bad(&e.to_string()))?;
        if written != claimed {
            return Err(bad("block shorter than its stated length"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;
    use std::io::Write;

    /// Counts the heap bytes live on threads that opt in, and their peak: the
    /// tests below check that decompressing a bomb never holds more than the
    /// limit (plus a little for the codecs' Rust-side state).
    struct CountingAllocator;

    thread_local! {
        static COUNTING: Cell<bool> = const { Cell::new(false) };
        static LIVE_BYTES: Cell<usize> = const { Cell::new(0) };
        static PEAK_BYTES: Cell<usize> = const { Cell::new(0) };
    }

    fn note_alloc(bytes: usize) {
        // try_with: no panic during thread teardown.
        let _ = COUNTING.try_with(|counting| {
            if counting.get() {
                let live = LIVE_BYTES.with(|l| {
                    l.set(l.get() + bytes);
                    l.get()
                });
                PEAK_BYTES.with(|p| p.set(p.get().max(live)));
            }
        });
    }

    fn note_dealloc(bytes: usize) {
        let _ = COUNTING.try_with(|counting| {
            if counting.get() {
                LIVE_BYTES.with(|l| l.set(l.get().saturating_sub(bytes)));
            }
        });
    }

    // SAFETY: every method forwards to the system allocator with the caller's
    // layout unchanged; the bookkeeping only touches const-initialised
    // thread-locals without destructors, which never allocate.
    unsafe impl GlobalAlloc for CountingAllocator {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note_alloc(layout.size());
            // SAFETY: the caller's contract for `alloc` is passed on unchanged.
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            note_alloc(layout.size());
            // SAFETY: as for `alloc`.
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            note_dealloc(layout.size());
            // SAFETY: `ptr` came from `System` with this layout (all allocations go through it).
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            note_alloc(new_size);
            note_dealloc(layout.size());
            // SAFETY: as for `dealloc`; `new_size` is the caller's, per the realloc contract.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: CountingAllocator = CountingAllocator;

    /// Runs `f` and returns its result with the peak of heap bytes it held.
    fn peak_heap<T>(f: impl FnOnce() -> T) -> (T, usize) {
        LIVE_BYTES.with(|l| l.set(0));
        PEAK_BYTES.with(|p| p.set(0));
        COUNTING.with(|c| c.set(true));
        let result = f();
        COUNTING.with(|c| c.set(false));
        (result, PEAK_BYTES.with(|p| p.get()))
    }

    const MIB: usize = 1 << 20;
    /// The limit in these tests; the bombs decompress to 64 times as much.
    const LIMIT: usize = 4 * MIB;
    const BOMB_BYTES: usize = 256 * MIB;
    /// The codecs' own Rust-side state (lz4's 32 KiB buffer, flate2's window
    /// and tables), measured at 32 KiB and 75 KiB.
    const CODEC_STATE_BYTES: usize = 128 << 10;

    /// Feeds `total` zero bytes to `write`, 1 MiB at a time, so that a bomb is
    /// built without holding its decompressed form.
    fn zeros(total: usize, mut write: impl FnMut(&[u8])) {
        let chunk = vec![0u8; MIB];
        for _ in 0..total / MIB {
            write(&chunk);
        }
    }

    fn gzip(total: usize) -> Bytes {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        zeros(total, |c| encoder.write_all(c).unwrap());
        Bytes::from(encoder.finish().unwrap())
    }

    fn zstd_bomb(total: usize) -> Bytes {
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        zeros(total, |c| encoder.write_all(c).unwrap());
        Bytes::from(encoder.finish().unwrap())
    }

    fn lz4_bomb(total: usize) -> Bytes {
        let mut encoder = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
        zeros(total, |c| encoder.write_all(c).unwrap());
        let (out, result) = encoder.finish();
        result.unwrap();
        Bytes::from(out)
    }

    /// Xerial-framed snappy, 32 KiB blocks as Kafka's Java client writes them.
    fn snappy_bomb(total: usize) -> Bytes {
        let block = snap::raw::Encoder::new()
            .compress_vec(&[0u8; 32 << 10])
            .unwrap();
        let mut out = XERIAL_HEADER.to_vec();
        for _ in 0..total / (32 << 10) {
            out.extend_from_slice(&(block.len() as u32).to_be_bytes());
            out.extend_from_slice(&block);
        }
        Bytes::from(out)
    }

    /// A bomb is refused, and decompressing it never held more than the limit
    /// (plus the first small buffer while it is moved, and the codec's state).
    fn assert_refused(codec: u8, bomb: Bytes) {
        let (result, peak) = peak_heap(|| decompress(codec, &bomb, LIMIT));
        assert_eq!(result, Err(DecompressError::TooLarge { limit: LIMIT }));
        assert!(
            peak <= LIMIT + 1 + OUTPUT_BYTES_INITIAL + CODEC_STATE_BYTES,
            "codec {codec}: {peak} bytes held for a {LIMIT}-byte limit"
        );
    }

    #[test]
    fn gzip_bomb_is_refused_within_the_limit() {
        let bomb = gzip(BOMB_BYTES);
        assert!(bomb.len() < BOMB_BYTES / 500, "{} bytes", bomb.len());
        assert_refused(1, bomb);
    }

    #[test]
    fn snappy_bomb_is_refused_within_the_limit() {
        assert_refused(2, snappy_bomb(BOMB_BYTES));
        // A block that claims 1 GiB in six bytes: refused before allocating
        // (kafka-protocol's decoder allocates the claimed length first).
        let claim = [0x80, 0x80, 0x80, 0x80, 0x04, 0x00];
        let mut liar = XERIAL_HEADER.to_vec();
        liar.extend_from_slice(&(claim.len() as u32).to_be_bytes());
        liar.extend_from_slice(&claim);
        assert_refused(2, Bytes::from(liar));
        assert_refused(2, Bytes::copy_from_slice(&claim));
    }

    #[test]
    fn lz4_bomb_is_refused_within_the_limit() {
        let bomb = lz4_bomb(BOMB_BYTES);
        assert!(bomb.len() < BOMB_BYTES / 200, "{} bytes", bomb.len());
        assert_refused(3, bomb);
    }

    #[test]
    fn zstd_bomb_is_refused_within_the_limit() {
        let bomb = zstd_bomb(BOMB_BYTES);
        assert!(bomb.len() < BOMB_BYTES / 1000, "{} bytes", bomb.len());
        assert_refused(4, bomb);
    }

    #[test]
    fn output_up_to_the_limit_comes_back_whole() {
        let data: Vec<u8> = (0..LIMIT).map(|i| (i * 7 % 251) as u8).collect();
        for codec in [1u8, 2, 3, 4] {
            let compressed = match codec {
                1 => {
                    let mut e =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    e.write_all(&data).unwrap();
                    e.finish().unwrap()
                }
                2 => snap::raw::Encoder::new().compress_vec(&data).unwrap(),
                3 => {
                    let mut e = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
                    e.write_all(&data).unwrap();
                    let (out, result) = e.finish();
                    result.unwrap();
                    out
                }
                _ => zstd::stream::encode_all(&data[..], 3).unwrap(),
            };
            let compressed = Bytes::from(compressed);
            let exact = decompress(codec, &compressed, LIMIT).unwrap();
            assert!(exact[..] == data[..], "codec {codec}");
            assert_eq!(
                decompress(codec, &compressed, LIMIT - 1),
                Err(DecompressError::TooLarge { limit: LIMIT - 1 }),
                "codec {codec}: one byte over"
            );
        }
        let plain = Bytes::from_static(b"records");
        assert_eq!(decompress(0, &plain, 7).unwrap(), plain);
        assert!(decompress(0, &plain, 6).is_err());
        assert_eq!(
            decompress(5, &plain, 7),
            Err(DecompressError::UnknownCodec(5))
        );
    }

    #[test]
    fn kafka_protocol_compressed_batches_decompress() {
        use kafka_protocol::records::Compression;
        for compression in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let records: Vec<_> = (0..20)
                .map(|i| {
                    crate::protocol::encode::record(
                        i,
                        1000 + i,
                        Some(Bytes::from(format!("key-{i}"))),
                        Some(Bytes::from(vec![b'v'; 100])),
                        None,
                    )
                })
                .collect();
            let plain = crate::protocol::encode::encode_batch(&records, Compression::None);
            let batch = crate::protocol::encode::encode_batch(&records, compression);
            let codec = crate::protocol::batch::BatchHeader::parse(&batch)
                .unwrap()
                .compression();
            let area = decompress(codec, &batch.slice(61..), DECOMPRESSED_BYTES_FLOOR).unwrap();
            assert_eq!(area, plain.slice(61..), "{compression:?}");
        }
    }

    #[test]
    fn garbage_and_truncated_streams_are_errors() {
        let data = vec![7u8; 100_000];
        for codec in [1u8, 2, 3, 4] {
            let garbage = Bytes::from_static(b"not compressed at all, not at all");
            assert!(
                matches!(
                    decompress(codec, &garbage, LIMIT),
                    Err(DecompressError::Corrupt { .. })
                ),
                "codec {codec}: garbage"
            );
            let whole = match codec {
                1 => {
                    let mut e =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    e.write_all(&data).unwrap();
                    e.finish().unwrap()
                }
                2 => snappy_bomb(96 << 10).to_vec(),
                3 => {
                    let mut e = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
                    e.write_all(&data).unwrap();
                    e.finish().0
                }
                _ => zstd::stream::encode_all(&data[..], 3).unwrap(),
            };
            let cut = Bytes::copy_from_slice(&whole[..whole.len() - 3]);
            assert!(
                matches!(
                    decompress(codec, &cut, LIMIT),
                    Err(DecompressError::Corrupt { .. })
                ),
                "codec {codec}: truncated"
            );
        }
    }

    #[test]
    fn limits() {
        assert_eq!(decompressed_bytes_max(1_048_588), DECOMPRESSED_BYTES_FLOOR);
        assert_eq!(decompressed_bytes_max(-1), DECOMPRESSED_BYTES_FLOOR);
        assert_eq!(decompressed_bytes_max(100 << 20), 400 << 20);
        assert_eq!(decompressed_bytes_max(i32::MAX), DECOMPRESSED_BYTES_CEILING);
        assert_eq!(zstd_window_log_max(DECOMPRESSED_BYTES_FLOOR), 26);
        assert_eq!(zstd_window_log_max(1), 23);
        assert_eq!(zstd_window_log_max(usize::MAX), 27);
    }
}
