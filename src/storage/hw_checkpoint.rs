//! The high watermarks of a broker's replicated partitions, kept in one file
//! of the data dir (Kafka's `replication-offset-checkpoint`), so that after a
//! restart a partition's high watermark starts where it was rather than at
//! its log start: consumers of a leader read at once, without waiting for
//! its followers to fetch again.
//!
//! Only ever behind the truth: each watermark written was committed (in the
//! ISR) when it was read, and one read back is capped at the log's end.
//! Partitions are named by topic id, not name, so that a topic deleted and
//! created again under its name never takes the old one's watermarks.
//!
//! Text, as Kafka's: a version line, a count line, then one line per
//! partition: `<topic id> <partition> <high watermark>`. The file is
//! replaced whole (written aside, synced, renamed), so a crash leaves the old
//! one or the new one.

use std::collections::HashMap;
use std::path::Path;

use uuid::Uuid;

/// The file's name in the data dir.
pub const FILE: &str = "replication-offset-checkpoint";
/// Version 0 is Kafka's (topic names); this one names topics by id.
const VERSION: u32 = 1;

/// A partition by topic id and index.
pub type Key = (Uuid, i32);

/// The checkpoint in `data_dir`: empty when there is none. Every byte is
/// checked; a file that does not parse is an error (the caller starts
/// without it, as if there were none).
pub fn read(data_dir: &Path) -> Result<HashMap<Key, i64>, String> {
    let text = match std::fs::read_to_string(data_dir.join(FILE)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e.to_string()),
    };
    parse(&text)
}

fn parse(text: &str) -> Result<HashMap<Key, i64>, String> {
    let mut lines = text.lines();
    match lines.next().map(str::parse::<u32>) {
        Some(Ok(VERSION)) => {}
        other => return Err(format!("unknown version line {other:?}")),
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.parse().ok())
        .ok_or("no count line")?;
    let mut entries = HashMap::with_capacity(count.min(1 << 20));
    for (i, line) in lines.enumerate() {
        let mut fields = line.split(' ');
        let parsed = (|| {
            let id = Uuid::parse_str(fields.next()?).ok()?;
            let partition: i32 = fields.next()?.parse().ok()?;
            let hw: i64 = fields.next()?.parse().ok()?;
            (fields.next().is_none() && partition >= 0 && hw >= 0).then_some(((id, partition), hw))
        })();
        let (key, hw) = parsed.ok_or_else(|| format!("line {}: `{line}`", i + 3))?;
        entries.insert(key, hw);
    }
    if entries.len() != count {
        return Err(format!(
            "{} entries, the count line says {count}",
            entries.len()
        ));
    }
    Ok(entries)
}

fn render(entries: &HashMap<Key, i64>) -> String {
    let mut sorted: Vec<(&Key, &i64)> = entries.iter().collect();
    sorted.sort();
    let mut text = format!("{VERSION}\n{}\n", sorted.len());
    for ((id, partition), hw) in sorted {
        text.push_str(&format!("{id} {partition} {hw}\n"));
    }
    text
}

/// Replaces the checkpoint in `data_dir` with `entries`, durably.
pub fn write(data_dir: &Path, entries: &HashMap<Key, i64>) -> std::io::Result<()> {
    crate::io::fs::write_durably(&data_dir.join(FILE), render(entries).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_round_trips_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_empty(), "no file: no entries");
        let entries: HashMap<Key, i64> = [
            ((Uuid::from_u128(7), 0), 120),
            ((Uuid::from_u128(7), 3), 0),
            ((Uuid::from_u128(9), 1), 5_000_000_000),
        ]
        .into_iter()
        .collect();
        write(dir.path(), &entries).unwrap();
        assert_eq!(read(dir.path()).unwrap(), entries);
        let good = render(&entries);
        for damaged in [
            good.replacen("1\n", "0\n", 1),
            good.replacen("\n3\n", "\n4\n", 1),
            good.replace(" 120", " -120"),
            good.replace(" 120", " 12x"),
            good.replace(" 120", " 120 1"),
            good.lines().take(4).collect::<Vec<_>>().join("\n"),
            String::new(),
        ] {
            assert!(parse(&damaged).is_err(), "accepted: {damaged:?}");
        }
    }
}
