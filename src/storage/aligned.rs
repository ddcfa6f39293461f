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
        if let Some(ptr) = pool::take(layout.size()) {
            return AlignedBuf {
                ptr,
                len: 0,
                capacity,
            };
        }
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

    /// The allocation for `capacity` bytes: whole pages, and for sizes the
    /// pool keeps, its size class (a power of two).
    fn layout(capacity: usize) -> Layout {
        let size = capacity
            .max(1)
            .checked_next_multiple_of(PAGE)
            .expect("a buffer size below usize::MAX");
        let size = pool::class_size(size).unwrap_or(size);
        Layout::from_size_align(size, PAGE).expect("a page-aligned layout of a sane size")
    }

    /// The filled bytes as `Bytes`, without copying.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = Self::layout(self.capacity);
        if pool::give(self.ptr, layout.size()) {
            return;
        }
        // SAFETY: `ptr` was allocated with this same layout (by `with_capacity`,
        // or by it for an earlier buffer of the same size class).
        unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) }
    }
}

/// Recycled buffers, per thread. On this project's machine memory the process
/// has not touched before costs a page fault per 4 KiB page and fills at about
/// 1.5 GB/s, against 20 GB/s for memory already in use, so large read buffers
/// are kept for the next response instead of going back to the allocator.
mod pool {
    use std::alloc::{self, Layout};
    use std::cell::RefCell;
    use std::ptr::NonNull;

    use super::PAGE;

    /// Sizes kept: powers of two from 64 KiB to 16 MiB.
    const SMALLEST: usize = 64 << 10;
    const LARGEST: usize = 16 << 20;
    const CLASSES: usize = (LARGEST / SMALLEST).trailing_zeros() as usize + 1;
    /// Bytes kept per thread at most.
    const KEPT_MAX: usize = 64 << 20;

    struct Pool {
        free: [Vec<NonNull<u8>>; CLASSES],
        kept: usize,
    }

    impl Drop for Pool {
        fn drop(&mut self) {
            for (class, list) in self.free.iter_mut().enumerate() {
                let layout = Layout::from_size_align(SMALLEST << class, PAGE).expect("valid");
                for ptr in list.drain(..) {
                    // SAFETY: every pooled pointer was allocated with its class's layout.
                    unsafe { alloc::dealloc(ptr.as_ptr(), layout) }
                }
            }
        }
    }

    thread_local! {
        static POOL: RefCell<Pool> = RefCell::new(Pool {
            free: Default::default(),
            kept: 0,
        });
    }

    /// The size class of a page-rounded size, if the pool keeps such buffers.
    pub fn class_size(size: usize) -> Option<usize> {
        (size > SMALLEST / 2 && size <= LARGEST).then(|| size.next_power_of_two().max(SMALLEST))
    }

    fn class_of(size: usize) -> usize {
        (size / SMALLEST).trailing_zeros() as usize
    }

    /// A kept buffer of exactly `size` (a class size), if there is one.
    pub fn take(size: usize) -> Option<NonNull<u8>> {
        class_size(size)?;
        POOL.try_with(|p| {
            let mut p = p.borrow_mut();
            let ptr = p.free[class_of(size)].pop()?;
            p.kept -= size;
            Some(ptr)
        })
        .ok()
        .flatten()
    }

    /// Bytes this thread's pool holds.
    #[cfg(test)]
    pub fn kept() -> usize {
        POOL.with(|p| p.borrow().kept)
    }

    /// Keeps a buffer of `size` bytes; false if the pool does not want it (the
    /// caller frees it).
    pub fn give(ptr: NonNull<u8>, size: usize) -> bool {
        if class_size(size) != Some(size) {
            return false;
        }
        POOL.try_with(|p| {
            let mut p = p.borrow_mut();
            if p.kept + size > KEPT_MAX {
                return false;
            }
            p.kept += size;
            p.free[class_of(size)].push(ptr);
            true
        })
        .unwrap_or(false)
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

    #[test]
    fn large_buffers_are_recycled_within_the_bound_and_small_ones_are_not() {
        // Each test runs on a thread of its own, so this pool starts empty.
        let address = |b: &AlignedBuf| b.ptr.as_ptr() as usize;
        let a = AlignedBuf::with_capacity(3 << 20);
        let first = address(&a);
        drop(a);
        // The same size class (4 MiB) gets the same memory back.
        let b = AlignedBuf::with_capacity((4 << 20) - 100);
        assert_eq!(address(&b), first);
        assert_eq!(b.capacity, (4 << 20) - 100);
        // Another class does not.
        let c = AlignedBuf::with_capacity(1 << 20);
        assert_ne!(address(&c), first);
        drop((b, c));

        assert_eq!(pool::kept(), (4 << 20) + (1 << 20));

        // At most 64 MiB is kept: of 20 freed 4 MiB buffers, 15 more (with
        // the 1 MiB one still there); taking them empties the 4 MiB class.
        let many: Vec<_> = (0..20)
            .map(|_| AlignedBuf::with_capacity(4 << 20))
            .collect();
        assert_eq!(pool::kept(), 1 << 20);
        drop(many);
        assert_eq!(pool::kept(), (1 << 20) + 15 * (4 << 20));
        let again: Vec<_> = (0..20)
            .map(|_| AlignedBuf::with_capacity(4 << 20))
            .collect();
        assert_eq!(pool::kept(), 1 << 20);
        drop(again);

        // Below 32 KiB and above 16 MiB buffers go back to the allocator,
        // and a recycled buffer exposes none of its earlier bytes.
        let kept = pool::kept();
        drop((
            AlignedBuf::with_capacity(16 << 10),
            AlignedBuf::with_capacity(20 << 20),
        ));
        assert_eq!(pool::kept(), kept);
        assert_eq!(pool::class_size(16 << 10), None);
        assert_eq!(pool::class_size(32 << 20), None);
        assert_eq!(pool::class_size(40 << 10), Some(64 << 10));
        let reused = AlignedBuf::with_capacity(4 << 20);
        assert!(reused.as_init().is_empty());
    }
}
