//! The quorum's storage against openraft's own conformance suite (the same
//! checks openraft's storage implementations pass), on real files.

use std::cell::RefCell;
use std::rc::Rc;

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::StorageError;

use crate::cluster::log_store::LogStore;
use crate::cluster::state_machine::Machine;
use crate::cluster::state_machine::StateMachine;
use crate::cluster::types::TypeConfig;
use crate::io::disk::Disk;
use crate::storage::commit::GroupCommit;

/// A machine that remembers the commands it applied.
#[derive(Default)]
pub(super) struct Commands(pub(super) RefCell<Vec<String>>);

impl Machine for Commands {
    async fn apply(&self, _index: u64, command: &str) -> Result<(), String> {
        if command == "refuse" {
            return Err("refused".to_string());
        }
        self.0.borrow_mut().push(command.to_string());
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&*self.0.borrow()).expect("strings encode")
    }

    async fn restore(&self, _end: u64, snapshot: &[u8]) -> Result<(), String> {
        *self.0.borrow_mut() = serde_json::from_slice(snapshot).map_err(|e| e.to_string())?;
        Ok(())
    }
}

struct OnDisk;

impl StoreBuilder<TypeConfig, LogStore, StateMachine<Commands>, tempfile::TempDir> for OnDisk {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine<Commands>), StorageError<TypeConfig>>
    {
        let dir = tempfile::tempdir().expect("temp dir");
        let fail = |e: std::io::Error| StorageError::read(TypeConfig::err_from_error(&e));
        let commit = Rc::new(GroupCommit::default());
        let log = LogStore::open(dir.path(), &Disk::Real, commit).map_err(fail)?;
        let machine = StateMachine::open(
            &dir.path().join(crate::cluster::log_store::LOG_DIR),
            &Disk::Real,
            Commands::default(),
        )
        .await
        .map_err(fail)?;
        Ok((dir, log, machine))
    }
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    compio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(f)
}

#[test]
fn the_log_store_and_state_machine_pass_openrafts_conformance_suite() {
    run(async {
        Suite::test_all(OnDisk).await.expect("conformance suite");
    });
}

mod restart {
    use std::collections::BTreeSet;

    use openraft::entry::RaftEntry;
    use openraft::storage::{IOFlushed, RaftLogStorage, RaftStateMachine};
    use openraft::{Membership, RaftLogReader, RaftSnapshotBuilder};

    use super::*;
    use crate::cluster::types::{Command, Entry, LogId, Vote};

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(
            openraft::vote::leader_id_std::CommittedLeaderId::new(term),
            index,
        )
    }

    async fn open(dir: &std::path::Path) -> (LogStore, StateMachine<Commands>) {
        let commit = Rc::new(GroupCommit::default());
        let log = LogStore::open(dir, &Disk::Real, commit).expect("log opens");
        let machine = StateMachine::open(
            &dir.join(crate::cluster::log_store::LOG_DIR),
            &Disk::Real,
            Commands::default(),
        )
        .await
        .expect("state machine opens");
        (log, machine)
    }

    async fn indexes(log: &mut LogStore) -> Vec<(u64, u64)> {
        log.try_get_log_entries(0..u64::MAX)
            .await
            .unwrap()
            .iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect()
    }

    /// Entries, vote, a truncated tail, a purge and a snapshot all come back
    /// after the store is dropped and opened again (a restart), and the
    /// machine is restored from the checkpoint.
    #[test]
    fn the_quorums_storage_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let (mut log, mut machine) = open(dir.path()).await;
            let membership = Membership::new_with_defaults(vec![BTreeSet::from([1, 2, 3])], []);
            let mut entries = vec![Entry::new_membership(log_id(1, 0), membership)];
            for i in 1..10 {
                entries.push(Entry::new_normal(log_id(1, i), Command(format!("c{i}"))));
            }
            log.append(entries.clone(), IOFlushed::noop())
                .await
                .unwrap();
            // Entries 8 and 9 were never committed; a new leader replaces them.
            log.truncate_after(Some(log_id(1, 7))).await.unwrap();
            log.append(
                [Entry::new_normal(log_id(2, 8), Command("c8'".into()))],
                IOFlushed::noop(),
            )
            .await
            .unwrap();
            let vote = Vote::new_committed(2, 2);
            log.save_vote(&vote).await.unwrap();
            log.save_committed(Some(log_id(2, 8))).await.unwrap();
            // Apply up to 5, snapshot there, purge up to 3.
            let applied: Vec<_> = entries[..6]
                .iter()
                .cloned()
                .map(|e| Ok((e, None)))
                .collect();
            machine
                .apply(futures_util::stream::iter(applied))
                .await
                .unwrap();
            let snapshot = machine.build_snapshot().await.unwrap();
            assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 5)));
            log.purge(log_id(1, 3)).await.unwrap();
        });
        run(async {
            let (mut log, mut machine) = open(dir.path()).await;
            assert_eq!(
                indexes(&mut log).await,
                [(1, 4), (1, 5), (1, 6), (1, 7), (2, 8)]
            );
            let state = log.get_log_state().await.unwrap();
            assert_eq!(state.last_purged_log_id, Some(log_id(1, 3)));
            assert_eq!(state.last_log_id, Some(log_id(2, 8)));
            assert_eq!(
                log.read_vote().await.unwrap(),
                Some(Vote::new_committed(2, 2))
            );
            assert_eq!(log.read_committed().await.unwrap(), Some(log_id(2, 8)));
            let (applied, membership) = machine.applied_state().await.unwrap();
            assert_eq!(applied, Some(log_id(1, 5)));
            assert_eq!(
                membership.membership().voter_ids().collect::<Vec<_>>(),
                [1, 2, 3]
            );
            assert_eq!(
                *machine.machine().0.borrow(),
                ["c1", "c2", "c3", "c4", "c5"]
            );
            // Purging past the end (a snapshot installed beyond the log)
            // leaves an empty log that goes on after the purge.
            log.purge(log_id(2, 20)).await.unwrap();
            assert!(indexes(&mut log).await.is_empty());
            log.append(
                [Entry::new_normal(log_id(3, 21), Command("c21".into()))],
                IOFlushed::noop(),
            )
            .await
            .unwrap();
        });
        run(async {
            let (mut log, _) = open(dir.path()).await;
            assert_eq!(indexes(&mut log).await, [(3, 21)]);
        });
    }

    /// The start-up replay: the newest checkpoint, then the commands after
    /// it; up to the committed hint, or (a voter alone) all of them.
    #[test]
    fn the_start_up_replay_reads_what_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let (mut log, mut machine) = open(dir.path()).await;
            let membership = Membership::new_with_defaults(vec![BTreeSet::from([1])], []);
            let mut entries = vec![Entry::new_membership(log_id(1, 0), membership)];
            entries.push(Entry::new_blank(log_id(1, 1)));
            for i in 2..8 {
                entries.push(Entry::new_normal(log_id(1, i), Command(format!("c{i}"))));
            }
            log.append(entries.clone(), IOFlushed::noop())
                .await
                .unwrap();
            log.save_committed(Some(log_id(1, 5))).await.unwrap();
            let applied: Vec<_> = entries[..4]
                .iter()
                .cloned()
                .map(|e| Ok((e, None)))
                .collect();
            machine
                .apply(futures_util::stream::iter(applied))
                .await
                .unwrap();
            machine.build_snapshot().await.unwrap();
        });
        let commands = |replay: &crate::cluster::replay::Replay| -> Vec<(u64, String)> {
            replay.commands.clone()
        };
        let replay = crate::cluster::replay::committed(dir.path(), false).unwrap();
        let (end, bytes) = replay.checkpoint.clone().expect("a checkpoint");
        assert_eq!(end, 4);
        assert_eq!(
            serde_json::from_slice::<Vec<String>>(&bytes).unwrap(),
            ["c2", "c3"]
        );
        assert_eq!(
            commands(&replay),
            [(4, "c4".to_string()), (5, "c5".to_string())]
        );
        assert_eq!(replay.end, 6, "up to the committed hint");
        let alone = crate::cluster::replay::committed(dir.path(), true).unwrap();
        assert_eq!(
            commands(&alone).iter().map(|c| c.0).collect::<Vec<_>>(),
            [4, 5, 6, 7]
        );
        assert_eq!(alone.end, 8, "a voter alone: every entry it made durable");
        // No hint and no checkpoint: nothing is known committed but by a leader.
        std::fs::remove_file(
            dir.path()
                .join(crate::cluster::log_store::LOG_DIR)
                .join("committed"),
        )
        .unwrap();
        let unknown = crate::cluster::replay::committed(dir.path(), false).unwrap();
        assert!(unknown.commands.is_empty());
        assert_eq!(unknown.end, 4, "the checkpoint only");
    }
}
