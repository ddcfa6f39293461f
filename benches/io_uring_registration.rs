//! Does registering the segment file and the write buffers with io_uring make
//! appends cheaper? Writes of 16 KiB (a typical batch), 16 per submission as a
//! busy shard submits them, through three rings side by side:
//! - `plain`: a file descriptor and an ordinary buffer, what Sluice does
//!   (compio's write operations);
//! - `fixed_file`: the file registered (`IORING_REGISTER_FILES`), saving the
//!   kernel's per-operation file lookup and reference count;
//! - `fixed_file_and_buffer`: also the buffer registered
//!   (`IORING_REGISTER_BUFFERS`, `WRITE_FIXED`), saving the per-operation page
//!   pinning of the user buffer.
//!
//! The writes cycle over the first 64 MiB of the file, so the page cache pages
//! exist after the first pass and the figures compare the submission paths
//! rather than page allocation. Throughput in bytes written per second.
//!
//! Run: `cargo bench --bench io_uring_registration`.

use std::os::fd::AsRawFd;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use io_uring::{opcode, types, IoUring};

const WRITE_BYTES: usize = 16 * 1024;
const PER_SUBMIT: usize = 16;
const SPAN: u64 = 64 << 20;

#[derive(Clone, Copy)]
enum Mode {
    Plain,
    FixedFile,
    FixedFileAndBuffer,
}

struct Writer {
    ring: IoUring,
    fd: i32,
    buf: Vec<u8>,
    offset: u64,
    mode: Mode,
}

impl Writer {
    fn new(file: &std::fs::File, mode: Mode) -> Writer {
        let ring = IoUring::new(64).expect("io_uring is available");
        let buf = vec![b'x'; WRITE_BYTES * PER_SUBMIT];
        let fd = file.as_raw_fd();
        if !matches!(mode, Mode::Plain) {
            ring.submitter().register_files(&[fd]).unwrap();
        }
        if matches!(mode, Mode::FixedFileAndBuffer) {
            let iov = libc::iovec {
                iov_base: buf.as_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            };
            // SAFETY: `buf` lives in this Writer as long as the ring (dropped
            // together), is never reallocated, and the kernel only reads it.
            unsafe { ring.submitter().register_buffers(&[iov]).unwrap() };
        }
        Writer {
            ring,
            fd,
            buf,
            offset: 0,
            mode,
        }
    }

    /// Submits PER_SUBMIT writes at once and waits for all of them.
    fn round(&mut self) {
        for i in 0..PER_SUBMIT {
            let ptr = self.buf[i * WRITE_BYTES..].as_ptr();
            let len = WRITE_BYTES as u32;
            let entry = match self.mode {
                Mode::Plain => opcode::Write::new(types::Fd(self.fd), ptr, len)
                    .offset(self.offset)
                    .build(),
                Mode::FixedFile => opcode::Write::new(types::Fixed(0), ptr, len)
                    .offset(self.offset)
                    .build(),
                Mode::FixedFileAndBuffer => opcode::WriteFixed::new(types::Fixed(0), ptr, len, 0)
                    .offset(self.offset)
                    .build(),
            };
            self.offset = (self.offset + WRITE_BYTES as u64) % SPAN;
            // SAFETY: the buffer outlives the operation (we wait for every
            // completion below before returning) and the fd stays open.
            unsafe {
                self.ring
                    .submission()
                    .push(&entry)
                    .expect("room in the ring")
            };
        }
        self.ring.submit_and_wait(PER_SUBMIT).unwrap();
        let mut done = 0;
        while done < PER_SUBMIT {
            for cqe in self.ring.completion() {
                assert_eq!(cqe.result(), WRITE_BYTES as i32, "a full write");
                done += 1;
            }
            if done < PER_SUBMIT {
                self.ring.submit_and_wait(1).unwrap();
            }
        }
    }
}

fn registration(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("io_uring_write_16x16KiB");
    group
        .sample_size(20)
        .measurement_time(std::time::Duration::from_secs(3));
    group.throughput(Throughput::Bytes((WRITE_BYTES * PER_SUBMIT) as u64));
    for (name, mode) in [
        ("plain", Mode::Plain),
        ("fixed_file", Mode::FixedFile),
        ("fixed_file_and_buffer", Mode::FixedFileAndBuffer),
    ] {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.path().join(name))
            .unwrap();
        let mut writer = Writer::new(&file, mode);
        // First pass over the span: allocate the page cache pages.
        for _ in 0..(SPAN as usize / (WRITE_BYTES * PER_SUBMIT)) {
            writer.round();
        }
        group.bench_function(name, |b| b.iter(|| writer.round()));
    }
    group.finish();
}

criterion_group!(benches, registration);
criterion_main!(benches);
