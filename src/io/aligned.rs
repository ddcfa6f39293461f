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
        if let Some(ptr) = pool::global().take(layout.size()) {
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
        if pool::global().give(self.ptr, layout.size()) {
            return;
        }
        // SAFETY: `ptr` was allocated with this same layout (by `with_capacity`,
        // or by it for an earlier buffer of the same size class).
        unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) }
    }
}

/// Recycled buffers. On this project's machine memory the process has not
/// touched before costs a page fault per 4 KiB page and fills at about 1.5
/// GB/s, against 20 GB/s for memory already in use, so large read buffers are
/// kept for the next read instead of going back to the allocator.
///
/// One pool for the whole process, lock-free: a Fetch reads on the shard that
/// owns a partition and the response is dropped on the connection's shard, so
/// per-thread pools would fill on one shard and stay empty on the other.
mod pool {
    use std::alloc::{self, Layout};
    use std::ptr::NonNull;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::OnceLock;

    use crossbeam_queue::ArrayQueue;

    use super::PAGE;

    /// Sizes kept: powers of two from 64 KiB to 16 MiB (a page-rounded size
    /// above 32 KiB is allocated as the next of these).
    const SMALLEST: usize = 64 << 10;
    const LARGEST: usize = 16 << 20;
    const CLASSES: usize = (LARGEST / SMALLEST).trailing_zeros() as usize + 1;
    /// Bytes kept at most, over all classes.
    pub const KEPT_MAX: usize = 64 << 20;

    /// A pointer to a free buffer of one class, owned by the pool.
    struct Free(NonNull<u8>);

    // SAFETY: a `Free` is the only handle to an allocation nobody else uses;
    // handing it to another thread moves that ownership, as with a `Box`.
    unsafe impl Send for Free {}

    pub struct Pool {
        free: Vec<ArrayQueue<Free>>,
        kept: AtomicUsize,
        /// Per class, the fewest buffers it held since the last trim: that
        /// many sat unused all along (approximate under races: the pool is
        /// a cache, and a miss only allocates).
        low: Vec<AtomicUsize>,
    }

    impl Pool {
        pub fn new() -> Pool {
            Pool {
                free: (0..CLASSES)
                    .map(|class| ArrayQueue::new((KEPT_MAX / (SMALLEST << class)).max(1)))
                    .collect(),
                kept: AtomicUsize::new(0),
                low: (0..CLASSES).map(|_| AtomicUsize::new(0)).collect(),
            }
        }

        /// A kept buffer of exactly `size` (a class size), if there is one.
        pub fn take(&self, size: usize) -> Option<NonNull<u8>> {
            class_size(size)?;
            let class = class_of(size);
            let taken = self.free[class].pop();
            self.low[class].fetch_min(self.free[class].len(), Ordering::Relaxed);
            let Free(ptr) = taken?;
            self.kept.fetch_sub(size, Ordering::Relaxed);
            Some(ptr)
        }

        /// Frees the buffers no take needed since the last trim (each
        /// class's low-water mark); returns the bytes freed. Called every
        /// few seconds, it gives back to the system what a burst of large
        /// requests left behind once the traffic has gone.
        pub fn trim(&self) -> usize {
            let mut freed = 0;
            for (class, queue) in self.free.iter().enumerate() {
                let size = SMALLEST << class;
                let unused = self.low[class].load(Ordering::Relaxed);
                for _ in 0..unused {
                    let Some(Free(ptr)) = queue.pop() else {
                        break;
                    };
                    self.kept.fetch_sub(size, Ordering::Relaxed);
                    // SAFETY: every pooled pointer was allocated with its
                    // class's layout, and popping it made it ours alone.
                    unsafe { alloc::dealloc(ptr.as_ptr(), layout_of(size)) }
                    freed += size;
                }
                self.low[class].store(queue.len(), Ordering::Relaxed);
            }
            freed
        }

        /// Keeps a buffer of `size` bytes allocated with `layout_of(size)`;
        /// false if the pool does not want it (the caller frees it).
        pub fn give(&self, ptr: NonNull<u8>, size: usize) -> bool {
            if class_size(size) != Some(size) {
                return false;
            }
            // Reserve the bytes first, so that concurrent gives stay within the bound.
            let reserved = self
                .kept
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |kept| {
                    (kept + size <= KEPT_MAX).then_some(kept + size)
                });
            if reserved.is_err() {
                return false;
            }
            if self.free[class_of(size)].push(Free(ptr)).is_err() {
                self.kept.fetch_sub(size, Ordering::Relaxed);
                return false;
            }
            true
        }

        /// Bytes held.
        pub fn kept(&self) -> usize {
            self.kept.load(Ordering::Relaxed)
        }
    }

    impl Drop for Pool {
        fn drop(&mut self) {
            for (class, queue) in self.free.iter().enumerate() {
                let layout = layout_of(SMALLEST << class);
                while let Some(Free(ptr)) = queue.pop() {
                    // SAFETY: every pooled pointer was allocated with its class's layout.
                    unsafe { alloc::dealloc(ptr.as_ptr(), layout) }
                }
            }
        }
    }

    /// The process's pool.
    pub fn global() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(Pool::new)
    }

    /// The size class of a page-rounded size, if the pool keeps such buffers.
    pub fn class_size(size: usize) -> Option<usize> {
        (size > SMALLEST / 2 && size <= LARGEST).then(|| size.next_power_of_two().max(SMALLEST))
    }

    fn class_of(size: usize) -> usize {
        (size / SMALLEST).trailing_zeros() as usize
    }

    fn layout_of(size: usize) -> Layout {
        Layout::from_size_align(size, PAGE).expect("a page-aligned layout of a sane size")
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn alloc(size: usize) -> NonNull<u8> {
            // SAFETY: class sizes are non-zero.
            NonNull::new(unsafe { alloc::alloc(layout_of(size)) }).unwrap()
        }

        #[test]
        fn buffers_come_back_by_class_within_the_bound() {
            let pool = Pool::new();
            let a = alloc(4 << 20);
            assert!(pool.give(a, 4 << 20));
            assert_eq!(pool.kept(), 4 << 20);
            // Another class does not get it; its own class does.
            assert_eq!(pool.take(1 << 20), None);
            assert_eq!(pool.take(4 << 20), Some(a));
            assert_eq!(pool.kept(), 0);

            // At most KEPT_MAX over all classes: sixteen 4 MiB buffers, then
            // no room for a 64 KiB one either.
            let many: Vec<_> = (0..17).map(|_| alloc(4 << 20)).collect();
            let kept = many.iter().filter(|&&p| pool.give(p, 4 << 20)).count();
            assert_eq!(kept, 16);
            assert_eq!(pool.kept(), KEPT_MAX);
            let small = alloc(64 << 10);
            assert!(!pool.give(small, 64 << 10));
            // SAFETY: the pool refused these, so they are still ours.
            unsafe {
                alloc::dealloc(many[16].as_ptr(), layout_of(4 << 20));
                alloc::dealloc(small.as_ptr(), layout_of(64 << 10));
            }

            // Sizes outside the classes are refused; the rest is freed on drop.
            let odd = alloc(48 << 10);
            assert!(!pool.give(odd, 48 << 10));
            // SAFETY: refused, still ours.
            unsafe { alloc::dealloc(odd.as_ptr(), layout_of(48 << 10)) }
            assert_eq!(class_size(16 << 10), None);
            assert_eq!(class_size(32 << 20), None);
            assert_eq!(class_size(40 << 10), Some(64 << 10));
            assert_eq!(class_size(LARGEST), Some(LARGEST));
        }

        #[test]
        fn a_trim_frees_what_no_take_needed_since_the_last() {
            let pool = Pool::new();
            for _ in 0..4 {
                assert!(pool.give(alloc(1 << 20), 1 << 20));
            }
            // Given after the last trim (none yet): not counted as unused.
            assert_eq!(pool.trim(), 0);
            assert_eq!(pool.kept(), 4 << 20);
            // One taken and given back: the queue went down to 3, so 3 sat
            // unused the whole interval.
            let a = pool.take(1 << 20).unwrap();
            assert!(pool.give(a, 1 << 20));
            assert_eq!(pool.trim(), 3 << 20);
            assert_eq!(pool.kept(), 1 << 20);
            // Nothing taken since: the last one goes too.
            assert_eq!(pool.trim(), 1 << 20);
            assert_eq!(pool.kept(), 0);
            assert_eq!(pool.take(1 << 20), None);
        }

        #[test]
        fn a_buffer_freed_on_another_thread_is_reused() {
            let pool = std::sync::Arc::new(Pool::new());
            let a = alloc(1 << 20);
            let address = a.as_ptr() as usize;
            let other = pool.clone();
            std::thread::spawn(move || {
                let a = NonNull::new(address as *mut u8).unwrap();
                assert!(other.give(a, 1 << 20));
            })
            .join()
            .unwrap();
            assert_eq!(
                pool.take(1 << 20).map(|p| p.as_ptr() as usize),
                Some(address)
            );
            // SAFETY: taken back from the pool, ours again.
            unsafe { alloc::dealloc(address as *mut u8, layout_of(1 << 20)) }
        }
    }
}

/// Bytes of read buffers the process keeps for reuse (at most 64 MiB).
pub fn pooled_bytes() -> usize {
    pool::global().kept()
}

/// Frees the kept read buffers no request needed since the last call;
/// returns the bytes freed.
pub fn trim_idle_buffers() -> usize {
    pool::global().trim()
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
    fn a_dropped_large_buffer_is_handed_out_again() {
        // The 16 MiB class (8-16 MiB), which no other test of this process uses.
        let a = AlignedBuf::with_capacity(12 << 20);
        let first = a.ptr.as_ptr() as usize;
        drop(a);
        let b = AlignedBuf::with_capacity(10 << 20);
        assert_eq!(b.ptr.as_ptr() as usize, first);
        assert_eq!(b.capacity, 10 << 20);
        assert!(b.as_init().is_empty(), "a recycled buffer starts empty");
    }
}
