//! The I/O floor: what moves bytes between memory, files and sockets, below
//! the storage engine and the server.
//!
//! - `chain.rs`: a chain of bytes to send, some in memory, some still in
//!   segment files (file slices that keep their file open).
//! - `clock.rs`: the wall clock, from one place, which tests can move.
//! - `disk.rs`: the storage engine's file operations behind one seam, with a
//!   twin for tests that injects faults and takes crash images.
//! - `fs.rs`: durable file-system operations (durable replace, directory
//!   fsync, durable directory creation and removal).
//! - `aligned.rs`: page-aligned read buffers and a process-wide pool of them.
//! - `rpc.rs`: framed request/response over TCP between brokers (the
//!   metadata quorum's messages, later the replica fetcher's).
//! - `send.rs`: a chain to a socket: vectored writes, and splice through a
//!   per-shard pool of pipes for file slices.

pub mod aligned;
pub mod chain;
pub mod clock;
pub mod disk;
pub mod fs;
pub mod rpc;
pub mod send;
