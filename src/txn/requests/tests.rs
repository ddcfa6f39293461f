use super::*;

fn tp(topic: &str, partition: i32) -> TopicPartition {
    (topic.to_string(), partition)
}

/// A transactional id initialised at `epoch` (producer id 7), idle.
fn idle(epoch: i16) -> TxnMetadata {
    let mut meta = TxnMetadata::new("t", 7, 60_000, 0);
    meta.producer_epoch = epoch;
    meta
}

/// Completes what a decision wrote.
fn apply(meta: &mut TxnMetadata, t: &Transit) {
    meta.complete(t);
}

fn ongoing(epoch: i16) -> TxnMetadata {
    let mut meta = idle(epoch);
    let AddDecision::Write(t) = add_partitions(&mut meta, 7, epoch, &[tp("a", 0)], 10, TV_CLASSIC)
    else {
        panic!("adds")
    };
    apply(&mut meta, &t);
    meta
}

/// Runs a classic or TV2 EndTxn to its completion (prepare, re-check, complete).
fn end(meta: &mut TxnMetadata, epoch: i16, commit: bool, tv: i16) -> (i64, i16) {
    let EndDecision::Prepare(prepare) =
        end_txn(meta, meta.producer_id, epoch, commit, tv, 20, None)
    else {
        panic!("prepares")
    };
    apply(meta, &prepare);
    let (complete, answer) =
        after_prepare(meta, prepare.producer_id, epoch, commit, tv, 21).unwrap();
    apply(meta, &complete);
    answer
}

#[test]
fn init_bumps_the_epoch_or_rotates_an_exhausted_one() {
    let mut meta = TxnMetadata::new("t", 7, 60_000, 0);
    let InitDecision::Write(t) = init_producer_id(&mut meta, 60_000, None, 1, None, TV_CLASSIC)
    else {
        panic!()
    };
    assert_eq!((t.producer_id, t.producer_epoch), (7, 0));
    apply(&mut meta, &t);
    // The same client again (KIP-360, naming its id and epoch): epoch 1.
    let InitDecision::Write(t) =
        init_producer_id(&mut meta, 60_000, Some((7, 0)), 2, None, TV_CLASSIC)
    else {
        panic!()
    };
    assert_eq!(t.producer_epoch, 1);
    apply(&mut meta, &t);
    // Naming another producer id: fenced.
    assert_eq!(
        init_producer_id(&mut meta, 60_000, Some((99, 0)), 3, None, TV_CLASSIC),
        InitDecision::Error(ErrorCode::ProducerFenced)
    );
    // Exhausted: a fresh id is needed, then it is used at epoch 0.
    meta.producer_epoch = EPOCH_EXHAUSTED;
    let expected = Some((7, EPOCH_EXHAUSTED));
    assert_eq!(
        init_producer_id(&mut meta, 60_000, expected, 4, None, TV_CLASSIC),
        InitDecision::NeedProducerId
    );
    let InitDecision::Write(t) =
        init_producer_id(&mut meta, 60_000, expected, 4, Some(8), TV_CLASSIC)
    else {
        panic!()
    };
    assert_eq!((t.producer_id, t.producer_epoch), (8, 0));
    apply(&mut meta, &t);
    // A retry of that request (the client never saw the answer) gets the
    // new id again, at the same epoch.
    let InitDecision::Write(t) = init_producer_id(&mut meta, 60_000, expected, 5, None, TV_CLASSIC)
    else {
        panic!()
    };
    assert_eq!((t.producer_id, t.producer_epoch), (8, 0));
    apply(&mut meta, &t);
    // Without an identity, an exhausted epoch rotates too (no retry memory).
    meta.producer_epoch = EPOCH_EXHAUSTED;
    let InitDecision::Write(t) = init_producer_id(&mut meta, 60_000, None, 6, Some(10), TV_CLASSIC)
    else {
        panic!()
    };
    assert_eq!(
        (t.producer_id, t.producer_epoch, t.last_producer_epoch),
        (10, 0, -1)
    );
}

#[test]
fn init_on_an_open_transaction_fences_and_aborts_it() {
    for tv in [TV_CLASSIC, TV_EPOCH_BUMP] {
        let mut meta = ongoing(3);
        let InitDecision::FenceAndAbort(abort) =
            init_producer_id(&mut meta, 60_000, None, 30, None, tv)
        else {
            panic!("fences")
        };
        assert_eq!(abort.state, TxnState::PrepareAbort);
        assert_eq!(
            abort.producer_epoch, 4,
            "one bump, whatever the version (tv {tv})"
        );
        apply(&mut meta, &abort);
        // Until the abort completes, a retry is told to wait.
        assert_eq!(
            init_producer_id(&mut meta, 60_000, None, 31, None, tv),
            InitDecision::Error(ErrorCode::ConcurrentTransactions)
        );
        let (complete, _) = after_prepare(&mut meta, 7, 4, false, tv, 32).unwrap();
        apply(&mut meta, &complete);
        // The retry then bumps again, past the fenced epoch.
        let InitDecision::Write(t) = init_producer_id(&mut meta, 60_000, None, 33, None, tv) else {
            panic!()
        };
        assert_eq!(t.producer_epoch, 5);
    }
}

#[test]
fn a_failed_classic_fence_is_not_bumped_twice() {
    let mut meta = ongoing(3);
    let first = fence_and_prepare_abort(&mut meta, TV_CLASSIC, 1).unwrap();
    assert_eq!(first.producer_epoch, 4);
    fence_write_failed(&mut meta, TV_CLASSIC);
    let second = fence_and_prepare_abort(&mut meta, TV_CLASSIC, 2).unwrap();
    assert_eq!(second.producer_epoch, 4);
}

#[test]
fn add_partitions_checks_in_kafkas_order() {
    let mut meta = ongoing(3);
    assert_eq!(
        add_partitions(&mut meta, 8, 3, &[tp("b", 0)], 11, TV_CLASSIC),
        AddDecision::Error(ErrorCode::InvalidProducerIdMapping)
    );
    assert_eq!(
        add_partitions(&mut meta, 7, 2, &[tp("b", 0)], 11, TV_CLASSIC),
        AddDecision::Error(ErrorCode::ProducerFenced)
    );
    assert_eq!(
        add_partitions(&mut meta, 7, 3, &[tp("a", 0)], 11, TV_CLASSIC),
        AddDecision::Done
    );
    let AddDecision::Write(t) = add_partitions(&mut meta, 7, 3, &[tp("b", 0)], 11, TV_CLASSIC)
    else {
        panic!()
    };
    // While that write is pending: concurrent, before any other check.
    assert_eq!(
        add_partitions(&mut meta, 8, 0, &[tp("c", 0)], 11, TV_CLASSIC),
        AddDecision::Error(ErrorCode::ConcurrentTransactions)
    );
    apply(&mut meta, &t);
    assert_eq!(meta.partitions.len(), 2);
    assert_eq!(
        verify_partitions(&meta, 7, 3, &[tp("a", 0), tp("z", 0)]),
        Ok(vec![None, Some(ErrorCode::TransactionAbortable)])
    );
    assert_eq!(
        verify_partitions(&meta, 7, 2, &[tp("a", 0)]),
        Err(ErrorCode::ProducerFenced)
    );
}

/// Kafka's EndTxn table for the classic protocol (TV0/1), every state and result.
#[test]
fn classic_end_txn_table() {
    use TxnState::*;
    let expect = |state: TxnState, commit: bool| -> Result<&'static str, ErrorCode> {
        match (state, commit) {
            (Ongoing, _) => Ok("prepare"),
            (CompleteCommit, true) | (CompleteAbort, false) => Ok("done"),
            (PrepareCommit, true) | (PrepareAbort, false) => Err(ErrorCode::ConcurrentTransactions),
            _ => Err(ErrorCode::InvalidTxnState),
        }
    };
    for state in [
        Empty,
        Ongoing,
        PrepareCommit,
        PrepareAbort,
        CompleteCommit,
        CompleteAbort,
    ] {
        for commit in [true, false] {
            let mut meta = idle(3);
            meta.state = state;
            let got = match end_txn(&mut meta, 7, 3, commit, TV_CLASSIC, 1, None) {
                EndDecision::Prepare(t) => {
                    assert_eq!(t.producer_epoch, 3, "no bump");
                    Ok("prepare")
                }
                EndDecision::Done(-1, -1) => Ok("done"),
                EndDecision::Error(code) => Err(code),
                other => panic!("{other:?}"),
            };
            assert_eq!(got, expect(state, commit), "{state:?} commit={commit}");
        }
    }
    // A wrong epoch is fenced; a wrong id is not this id's.
    let mut meta = ongoing(3);
    assert_eq!(
        end_txn(&mut meta, 7, 2, true, TV_CLASSIC, 1, None),
        EndDecision::Error(ErrorCode::ProducerFenced)
    );
    assert_eq!(
        end_txn(&mut meta, 8, 3, true, TV_CLASSIC, 1, None),
        EndDecision::Error(ErrorCode::InvalidProducerIdMapping)
    );
    assert_eq!(end(&mut meta, 3, true, TV_CLASSIC), (-1, -1));
    assert_eq!(meta.state, CompleteCommit);
}

/// Kafka's TV2 table for the idle states ("Retry" = the epoch before the
/// current one, "Current" = the current one).
#[test]
fn tv2_end_txn_idle_table() {
    use TxnState::*;
    // (state, commit, retry?) -> outcome
    let cases: [(TxnState, bool, bool, Result<&str, ErrorCode>); 12] = [
        (Empty, false, true, Err(ErrorCode::ProducerFenced)),
        (Empty, false, false, Ok("bump")),
        (Empty, true, true, Err(ErrorCode::ProducerFenced)),
        (Empty, true, false, Err(ErrorCode::InvalidTxnState)),
        (CompleteAbort, false, true, Ok("done")),
        (CompleteAbort, false, false, Ok("bump")),
        (CompleteAbort, true, true, Err(ErrorCode::InvalidTxnState)),
        (CompleteAbort, true, false, Err(ErrorCode::InvalidTxnState)),
        (CompleteCommit, false, true, Err(ErrorCode::InvalidTxnState)),
        (CompleteCommit, false, false, Ok("bump")),
        (CompleteCommit, true, true, Ok("done")),
        (CompleteCommit, true, false, Err(ErrorCode::InvalidTxnState)),
    ];
    for (state, commit, retry, expected) in cases {
        let mut meta = idle(5);
        meta.state = state;
        let epoch = if retry { 4 } else { 5 };
        let got = match end_txn(&mut meta, 7, epoch, commit, TV_EPOCH_BUMP, 1, None) {
            EndDecision::Prepare(t) => {
                assert_eq!((t.producer_epoch, t.start_ms), (6, 1), "empty abort");
                Ok("bump")
            }
            EndDecision::Done(7, 5) => Ok("done"),
            EndDecision::Error(code) => Err(code),
            other => panic!("{other:?}"),
        };
        assert_eq!(got, expected, "{state:?} commit={commit} retry={retry}");
    }
}

#[test]
fn tv2_commit_answers_the_next_epoch_and_retries_are_recognised() {
    let mut meta = ongoing(5);
    meta.client_tv = TV_EPOCH_BUMP;
    assert_eq!(end(&mut meta, 5, true, TV_EPOCH_BUMP), (7, 6));
    // The client never saw the answer and retries with epoch 5.
    assert_eq!(
        end_txn(&mut meta, 7, 5, true, TV_EPOCH_BUMP, 30, None),
        EndDecision::Done(7, 6)
    );
    // During the prepare of the next one, a retry is told to wait.
    let AddDecision::Write(t) = add_partitions(&mut meta, 7, 6, &[tp("a", 0)], 31, TV_EPOCH_BUMP)
    else {
        panic!()
    };
    apply(&mut meta, &t);
    let EndDecision::Prepare(t) = end_txn(&mut meta, 7, 6, false, TV_EPOCH_BUMP, 32, None) else {
        panic!()
    };
    apply(&mut meta, &t);
    assert_eq!(
        end_txn(&mut meta, 7, 6, false, TV_EPOCH_BUMP, 33, None),
        EndDecision::Error(ErrorCode::ConcurrentTransactions)
    );
    // Exhausted: the end needs a producer id; the answer is it, at epoch 0,
    // and a retry naming the old id at 32766 is recognised.
    let mut meta = ongoing(EPOCH_EXHAUSTED);
    assert_eq!(
        end_txn(&mut meta, 7, EPOCH_EXHAUSTED, true, TV_EPOCH_BUMP, 40, None),
        EndDecision::NeedProducerId
    );
    let EndDecision::Prepare(t) = end_txn(
        &mut meta,
        7,
        EPOCH_EXHAUSTED,
        true,
        TV_EPOCH_BUMP,
        40,
        Some(9),
    ) else {
        panic!()
    };
    assert_eq!(t.producer_epoch, i16::MAX);
    apply(&mut meta, &t);
    let (complete, answer) =
        after_prepare(&mut meta, 7, EPOCH_EXHAUSTED, true, TV_EPOCH_BUMP, 41).unwrap();
    assert_eq!(answer, (9, 0));
    apply(&mut meta, &complete);
    assert_eq!(
        end_txn(&mut meta, 7, EPOCH_EXHAUSTED, true, TV_EPOCH_BUMP, 42, None),
        EndDecision::Done(9, 0)
    );
}

#[test]
fn timeouts_and_expiry() {
    let mut meta = ongoing(0);
    meta.timeout_ms = 100;
    assert!(!timed_out(&meta, 110));
    assert!(timed_out(&meta, 111));
    meta.pending = Some(TxnState::PrepareAbort);
    assert!(
        !timed_out(&meta, 1_000),
        "never while a transition is pending"
    );
    let mut idle_meta = idle(0);
    idle_meta.last_update_ms = 1_000;
    assert!(!expired(&idle_meta, 1_999, 1_000));
    assert!(expired(&idle_meta, 2_000, 1_000));
    assert!(
        !expired(&meta, 1_000_000, 1),
        "an open transaction never expires"
    );
    assert!(valid_timeout(900_000, 900_000) && !valid_timeout(0, 900_000));
    assert!(!valid_timeout(900_001, 900_000));
}
