//! Reading an internal log back at start-up: every record of every batch, in
//! offset order, with plain blocking reads (before the shards serve).
//!
//! Used by the metadata log and the group offsets logs. A torn tail is ignored
//! here (opening the log for appends truncates it); corruption elsewhere is an
//! error, because replaying past it would rebuild the wrong state.

use std::fs;
use std::path::Path;

use bytes::Bytes;
use kafka_protocol::records::{Record, RecordBatchDecoder};

use crate::protocol::batch::BatchIter;
use crate::storage::segment::{parse_segment_file_name, segment_file_name};

/// Calls `on_record` for each record of the log in `dir` (a missing dir is an empty log).
pub fn for_each_record(
    dir: &Path,
    mut on_record: impl FnMut(Record) -> Result<(), String>,
) -> Result<(), String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    let mut bases: Vec<i64> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| parse_segment_file_name(&e.file_name().to_string_lossy()))
        .collect();
    bases.sort_unstable();
    for base in bases {
        let path = dir.join(segment_file_name(base, "log"));
        let bytes = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for item in BatchIter::new(&bytes, true) {
            let (_, range) = item.map_err(|e| format!("{}: {e}", path.display()))?;
            let mut batch = Bytes::copy_from_slice(&bytes[range]);
            let set = RecordBatchDecoder::decode(&mut batch)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            for record in set.records {
                let offset = record.offset;
                on_record(record)
                    .map_err(|e| format!("{} offset {offset}: {e}", path.display()))?;
            }
        }
    }
    Ok(())
}
