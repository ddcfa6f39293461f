//! A chain of bytes to send, some in memory and some still in segment files.
//!
//! A Fetch reads a partition as a chain: record data large enough to be worth it
//! stays in the segment file as a [`FileSlice`] and goes from the page cache to
//! the socket with splice; the rest, and every response header, is in memory.
//! A chain is `Send`, so an owner shard can hand its reads to the shard that
//! holds the connection. A slice holds its file open, so a segment deleted by
//! retention or replaced by the cleaner stays readable until every response
//! that refers to it has been sent.

use std::fs::File;
use std::sync::Arc;

use bytes::Bytes;

/// `len` bytes of `file` from `position`.
#[derive(Debug, Clone)]
pub struct FileSlice {
    pub file: Arc<File>,
    pub position: u64,
    pub len: usize,
}

/// One piece of a chain.
#[derive(Debug, Clone)]
pub enum Piece {
    Memory(Bytes),
    File(FileSlice),
}

impl Piece {
    pub fn len(&self) -> usize {
        match self {
            Piece::Memory(bytes) => bytes.len(),
            Piece::File(slice) => slice.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Pieces in order, with their total length.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    pieces: Vec<Piece>,
    len: usize,
}

impl Chain {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    pub fn into_pieces(self) -> Vec<Piece> {
        self.pieces
    }

    /// Appends a piece (empty ones are dropped).
    pub fn push(&mut self, piece: Piece) {
        if piece.is_empty() {
            return;
        }
        self.len += piece.len();
        self.pieces.push(piece);
    }

    pub fn append(&mut self, other: Chain) {
        for piece in other.pieces {
            self.push(piece);
        }
    }

    /// Whether any piece is still in a file.
    pub fn has_file_pieces(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::File(_)))
    }

    /// The whole chain in memory: memory pieces are copied, file pieces read
    /// with pread. For tests and for paths that cannot splice.
    pub fn to_vec(&self) -> std::io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut out = Vec::with_capacity(self.len);
        for piece in &self.pieces {
            match piece {
                Piece::Memory(bytes) => out.extend_from_slice(bytes),
                Piece::File(slice) => {
                    let start = out.len();
                    out.resize(start + slice.len, 0);
                    slice
                        .file
                        .read_exact_at(&mut out[start..], slice.position)?;
                }
            }
        }
        Ok(out)
    }
}

impl Chain {
    /// [`Chain::to_vec`] as `Bytes`.
    pub fn to_bytes(&self) -> std::io::Result<Bytes> {
        self.to_vec().map(Bytes::from)
    }
}

impl From<Bytes> for Chain {
    fn from(bytes: Bytes) -> Chain {
        let mut chain = Chain::default();
        chain.push(Piece::Memory(bytes));
        chain
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_chain_reads_back_in_order() {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(b"0123456789").unwrap();
        let file = Arc::new(File::open(tmp.path()).unwrap());
        let mut chain = Chain::default();
        chain.push(Piece::Memory(Bytes::from_static(b"ab")));
        chain.push(Piece::Memory(Bytes::new()));
        chain.push(Piece::File(FileSlice {
            file: file.clone(),
            position: 3,
            len: 4,
        }));
        chain.append(Chain::from(Bytes::from_static(b"z")));
        assert_eq!(chain.len(), 7);
        assert_eq!(chain.pieces().len(), 3);
        assert!(chain.has_file_pieces());
        assert_eq!(chain.to_vec().unwrap(), b"ab3456z");
        // The file may go away: the slice keeps it open.
        let path = tmp.path().to_path_buf();
        drop(tmp);
        assert!(!path.exists());
        assert_eq!(chain.to_vec().unwrap(), b"ab3456z");
    }
}
