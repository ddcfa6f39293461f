//! Page-aligned read buffers.
//!
//! Measured on this project's machine: the kernel copies page-cache data into a
//! page-aligned buffer at ~10 GB/s and into one 16 bytes off a page at ~2 GB/s.
//! `Vec`/`BytesMut` memory comes from malloc, 16 bytes off a page, so reads of
//! record data for Fetch go into these instead, and start at a page-aligned
//! file position so that source and destination line up.

use std::alloc::{self, Layout};
use std::mem::MaybeUninit;
use std::ptr::NonNull;

use bytes::Bytes;
use compio::buf::{IoBuf, IoBufMut, SetLen};

pub const PAGE: usize = 4096;

/// An owned, page-aligned byte buffer with a fixed capacity.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    capacity: usize,
}

// SAFETY: the buffer owns its allocation exclusively (like a `Vec<u8>`); nothing
// else points into it, so moving it to another thread or sharing `&` access is safe.
unsafe impl Send for AlignedBuf {}
// SAFETY: see `Send`: `&AlignedBuf` only gives read access to initialized bytes.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A buffer that holds exactly `capacity` bytes (at least one page is allocated).
    pub fn with_capacity(capacity: usize) -> AlignedBuf {
        let layout = Self::layout(capacity);
        // SAFETY: the layout has a non-zero size (at least one page).
        let ptr = unsafe { alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            alloc::handle_alloc_error(layout)
        };
        AlignedBuf {
            ptr,
            len: 0,
            capacity,
        }
    }

    fn layout(capacity: usize) -> Layout {
        let size = capacity
            .max(1)
            .checked_next_multiple_of(PAGE)
            .expect("a buffer size below usize::MAX");
        Layout::from_size_align(size, PAGE).expect("a page-aligned layout of a sane size")
    }

    /// The filled bytes as `Bytes`, without copying.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` was allocated in `with_capacity` with this same layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.capacity)) }
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_init()
    }
}

impl IoBuf for AlignedBuf {
    fn as_init(&self) -> &[u8] {
        // SAFETY: the first `len` bytes were initialized (by a read that reported
        // them through `set_len`) and the allocation outlives the borrow.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl SetLen for AlignedBuf {
    unsafe fn set_len(&mut self, len: usize) {
        debug_assert!(len <= self.capacity);
        self.len = len;
    }
}

impl IoBufMut for AlignedBuf {
    fn as_uninit(&mut self) -> &mut [MaybeUninit<u8>] {
        // SAFETY: the allocation holds at least `capacity` bytes; `MaybeUninit`
        // makes no claim about their contents; the borrow is tied to `&mut self`.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.ptr.as_ptr().cast::<MaybeUninit<u8>>(),
                self.capacity,
            )
        }
    }
}

/// Reads `len` bytes at `position` of `file` into a page-aligned buffer. The
/// read starts at the page boundary at or before `position` (up to a page more
/// is read) so that file and buffer offsets agree modulo the page size.
pub async fn read_at(file: &compio::fs::File, position: u64, len: usize) -> std::io::Result<Bytes> {
    use compio::io::AsyncReadAtExt;
    let lead = (position % PAGE as u64) as usize;
    let buf = AlignedBuf::with_capacity(lead + len);
    let compio::BufResult(result, buf) = file.read_exact_at(buf, position - lead as u64).await;
    result?;
    Ok(Bytes::slice(&buf.freeze(), lead..))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn buffers_are_page_aligned_and_reads_land_at_the_right_bytes() {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        tmp.write_all(&data).unwrap();
        let runtime = compio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let file = compio::fs::File::open(tmp.path()).await.unwrap();
            for (position, len) in [
                (0u64, 10usize),
                (1, 4095),
                (4095, 2),
                (4096, 8192),
                (5000, 15_000),
                (19_999, 1),
            ] {
                let bytes = read_at(&file, position, len).await.unwrap();
                assert_eq!(
                    &bytes[..],
                    &data[position as usize..position as usize + len]
                );
                assert_eq!(
                    (bytes.as_ptr() as usize) % PAGE,
                    (position as usize) % PAGE,
                    "buffer and file offsets agree modulo a page"
                );
            }
            // Past the end: an error, not a short buffer.
            assert!(read_at(&file, 19_990, 20).await.is_err());
        });
        let empty = AlignedBuf::with_capacity(0);
        assert!(empty.freeze().is_empty());
    }
}
