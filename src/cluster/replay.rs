//! The committed part of the quorum's log read back at start-up, before the
//! shards run, with plain blocking reads: the broker builds its first
//! metadata image from it exactly as the state machine would, so that the
//! shards open their partitions' logs from it; Raft then starts on shard 0
//! and the machine skips what was replayed here.

use std::io;
use std::path::Path;

use openraft::EntryPayload;

use crate::cluster::log_store::{read_committed_hint, read_last_purged, LOG_DIR};
use crate::cluster::state_machine::newest_checkpoint;
use crate::cluster::types::Entry;
use crate::storage::replay;

/// What the log says is committed.
#[derive(Debug, Default)]
pub struct Replay {
    /// The newest checkpoint: the index after what it covers, and the
    /// machine's bytes.
    pub checkpoint: Option<(u64, Vec<u8>)>,
    /// The committed commands after it, in log order: (index, command).
    pub commands: Vec<(u64, String)>,
    /// The index after the last entry covered (checkpoint or log).
    pub end: u64,
}

/// Reads the newest checkpoint and the committed entries after it. A voter
/// alone commits every entry it made durable (a majority of one), so `alone`
/// replays the whole log; otherwise the entries up to the committed index the
/// node last knew (the rest is applied once a leader confirms it).
pub fn committed(data_dir: &Path, alone: bool) -> io::Result<Replay> {
    let dir = data_dir.join(LOG_DIR);
    let mut out = Replay::default();
    if let Some(checkpoint) = newest_checkpoint(&dir)? {
        out.end = checkpoint.end();
        out.checkpoint = Some((out.end, checkpoint.data));
    }
    let limit = if alone {
        u64::MAX
    } else {
        read_committed_hint(&dir).map_or(0, |id| id.index + 1)
    };
    let purged_end = read_last_purged(&dir)?.map_or(0, |id| id.index + 1);
    let from = out.end.max(purged_end);
    replay::for_each_record(&dir, |record| {
        let index = u64::try_from(record.offset).map_err(|_| "a negative offset")?;
        if index < from || index >= limit {
            return Ok(());
        }
        let value = record.value.ok_or("an entry without a value")?;
        let entry: Entry = serde_json::from_slice(&value).map_err(|e| e.to_string())?;
        if entry.log_id.index != index {
            return Err(format!(
                "entry {} stored at offset {index}",
                entry.log_id.index
            ));
        }
        if let EntryPayload::Normal(command) = entry.payload {
            out.commands.push((index, command.0));
        }
        out.end = index + 1;
        Ok(())
    })
    .map_err(io::Error::other)?;
    Ok(out)
}
