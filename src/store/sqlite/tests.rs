use super::*;

#[test]
fn candidate_lists_merge_newest_first_without_repeats() {
    let list = |ids: &[i64]| ids.iter().map(|i| (RequestId(*i), format!("t{i}"))).collect::<Vec<_>>();
    let merged = requests::newest_first(list(&[9, 7, 4, 2]), list(&[8, 7, 3]), 10);
    assert_eq!(merged.iter().map(|(i, _)| i.0).collect::<Vec<_>>(), [9, 8, 7, 4, 3, 2]);
    let capped = requests::newest_first(list(&[9, 7, 4, 2]), list(&[8, 7, 3]), 3);
    assert_eq!(capped.iter().map(|(i, _)| i.0).collect::<Vec<_>>(), [9, 8, 7]);
    assert!(requests::newest_first(Vec::new(), Vec::new(), 5).is_empty());
    assert_eq!(requests::newest_first(list(&[5]), Vec::new(), 5), list(&[5]));
}

#[tokio::test]
async fn candidate_queries_take_the_limit_and_are_not_prepared_again_each_time() {
    let (_dir, store) = store().await;
    let conn = store.writer.lock().await;
    for sql in [requests::RECENT_BY_REQUESTER, requests::RECENT_BY_ORGANISATION] {
        assert!(sql.contains(&format!("LIMIT {DUPLICATE_CANDIDATES}\n")), "{sql}");
        for since in 0..3 {
            let mut stmt = conn.prepare_cached(sql).unwrap();
            let mut rows = stmt.query(params!["a@b.test", since]).unwrap();
            assert!(rows.next().unwrap().is_none());
            drop(rows);
            assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0, "{sql}");
        }
    }
}

async fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in(dir.path()).await.unwrap();
    store.migrate().await.unwrap();
    (dir, store)
}

#[tokio::test]
async fn a_commit_sqlite_already_rolled_back_fails_and_leaves_the_writer_usable() {
    let (_dir, store) = store().await;
    let conn = store.writer.clone().lock_owned().await;
    conn.execute_batch("BEGIN IMMEDIATE; INSERT INTO meta (key, value) VALUES ('lost', 'yes');").unwrap();
    let tx = Box::new(SqliteTx { conn, open: true, checkpoints: store.checkpoints.clone() });
    // SQLite ends the transaction itself, as it does when a COMMIT hits a full disk.
    tx.conn.execute_batch("ROLLBACK").unwrap();
    assert!(tx.commit().await.is_err());
    assert_eq!(store.get_meta("lost").await.unwrap(), None);

    // Dropped half-way: rolled back, and the next transaction starts cleanly.
    let mut tx = store.begin().await.expect("a usable writer");
    tx.set_meta("k", "v").await.unwrap();
    drop(tx);
    assert_eq!(store.get_meta("k").await.unwrap(), None);
    let mut tx = store.begin().await.unwrap();
    tx.set_meta("k", "v").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.get_meta("k").await.unwrap().as_deref(), Some("v"));
}

#[tokio::test]
async fn a_connection_left_in_a_transaction_is_rolled_back_before_the_next_begin() {
    let (_dir, store) = store().await;
    {
        let conn = store.writer.lock().await;
        conn.execute_batch("BEGIN IMMEDIATE; INSERT INTO meta (key, value) VALUES ('half', 'done');")
            .unwrap();
    }
    let mut tx = store.begin().await.expect("a usable writer");
    tx.set_meta("after", "yes").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.get_meta("half").await.unwrap(), None);
    assert_eq!(store.get_meta("after").await.unwrap().as_deref(), Some("yes"));
}

#[tokio::test]
async fn attempts_are_counted_when_stored_and_before_each_retry_and_survive_a_reopen() {
    let (dir, store) = store().await;
    let raw = NewRawMessage {
        mailbox: "INBOX",
        uidvalidity: 7,
        uid: 3,
        dedup_key: "mid:poison@x".into(),
        message_id: Some("poison@x"),
        content_hash: "h",
        core_hash: "c",
        raw: b"poison",
        backlog: false,
        fetched_at: Utc::now(),
    };
    let attempts = |store: &SqliteStore, id: MessageId| {
        let store = store.clone();
        async move { store.list_messages().await.unwrap().into_iter().find(|m| m.id == id).unwrap().attempts }
    };
    // Stored for the first time: the attempt about to be made is counted in the same commit.
    let mut tx = store.begin().await.unwrap();
    let RawSaved::New(id) = tx.save_raw(&raw).await.unwrap() else { panic!() };
    tx.commit().await.unwrap();
    assert_eq!(attempts(&store, id).await, 1);
    // Seen again unprocessed (after a crash): storing counts nothing; each attempt does.
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.save_raw(&raw).await.unwrap(), RawSaved::Known { id, processed: false });
    tx.commit().await.unwrap();
    assert_eq!(attempts(&store, id).await, 1);
    assert_eq!(store.count_attempt(id).await.unwrap(), 2);
    assert_eq!(store.count_attempt(id).await.unwrap(), 3);
    assert_eq!(store.attempts(id).await.unwrap(), 3);
    assert!(store.count_attempt(MessageId(id.0 + 100)).await.is_err(), "no such message");
    // Committed counts survive the process: a new store on the same file sees them.
    drop(store);
    let store = SqliteStore::open_in(dir.path()).await.unwrap();
    assert_eq!(store.count_attempt(id).await.unwrap(), 4);

    // Only a quarantined message can be retried.
    assert_eq!(store.request_retry(id, Utc::now()).await.unwrap(), RetryRequest::NotQuarantined(None));
    assert_eq!(store.request_retry(MessageId(id.0 + 100), Utc::now()).await.unwrap(), RetryRequest::Missing);
    let outcome = |classification| MessageOutcome {
        classification,
        received_at: None,
        from_address: Some("jo@icb.test".into()),
        from_name: None,
        subject: Some("Poison".into()),
        attachments: None,
        detail: Some("processing failed 3 times".into()),
        request_id: None,
    };
    let mut tx = store.begin().await.unwrap();
    tx.finish_message(id, &outcome(Classification::Quarantined), Utc::now()).await.unwrap();
    tx.commit().await.unwrap();
    assert!(store.retries_requested().await.unwrap().is_empty());
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.save_raw(&raw).await.unwrap(), RawSaved::Known { id, processed: true });
    drop(tx);
    // Retried: attempts start again, it is unprocessed and listed for the daemon…
    assert_eq!(store.request_retry(id, Utc::now()).await.unwrap(), RetryRequest::Requested);
    let row = store.list_messages().await.unwrap().into_iter().find(|m| m.id == id).unwrap();
    assert_eq!((row.classification, row.attempts), (None, 0));
    let wanted = store.retries_requested().await.unwrap();
    assert_eq!(wanted.iter().map(|r| (r.id, r.uid, r.backlog)).collect::<Vec<_>>(), [(id, 3, false)]);
    // …until it is processed, which ends the request in the same write.
    let mut tx = store.begin().await.unwrap();
    tx.finish_message(id, &outcome(Classification::Automated), Utc::now()).await.unwrap();
    tx.commit().await.unwrap();
    assert!(store.retries_requested().await.unwrap().is_empty());
    assert_eq!(
        store.request_retry(id, Utc::now()).await.unwrap(),
        RetryRequest::NotQuarantined(Some(Classification::Automated))
    );
}

#[tokio::test]
async fn migrations_wait_for_each_other_and_a_stuck_one_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    // Many migrating at once on a fresh file: one applies everything, the others nothing.
    let runs: Vec<_> = (0..6)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || migrate_file(&path))
        })
        .collect();
    let applied: Vec<usize> = runs.into_iter().map(|r| r.join().unwrap().unwrap()).collect();
    assert_eq!(applied.iter().filter(|n| **n > 0).count(), 1, "{applied:?}");
    // A process holding the lock for too long: the next one says what to do.
    let held = migration_lock(&path, Duration::from_secs(1)).unwrap();
    let e = migration_lock(&path, Duration::from_millis(200)).unwrap_err();
    assert!(format!("{e:#}").contains("Another gatehouse process"), "{e:#}");
    drop(held);
    assert!(migration_lock(&path, Duration::from_millis(200)).is_ok());
}

#[tokio::test]
async fn a_message_id_used_again_by_a_different_message_logs_that_message_too() {
    let (_dir, store) = store().await;
    let message = |uid: u32, content: &'static str, core: &'static str| NewRawMessage {
        mailbox: "INBOX",
        uidvalidity: 7,
        uid,
        dedup_key: "mid:scan@mfp".into(),
        message_id: Some("scan@mfp"),
        content_hash: content,
        core_hash: core,
        raw: b"x",
        backlog: false,
        fetched_at: Utc::now(),
    };
    let mut tx = store.begin().await.unwrap();
    let RawSaved::New(first) = tx.save_raw(&message(1, "h1", "c1")).await.unwrap() else { panic!() };
    // Delivered twice (other Received headers, the same author's content): the same.
    let same = tx.save_raw(&message(2, "h1b", "c1")).await.unwrap();
    assert_eq!(same, RawSaved::Known { id: first, processed: false });
    // Another scan, sent with the same fixed Message-ID: a message of its own.
    let RawSaved::New(second) = tx.save_raw(&message(3, "h2", "c2")).await.unwrap() else {
        panic!("a different message under a used Message-ID was dropped")
    };
    assert_ne!(second, first);
    // Both are recognised when the mailbox is read again, by bytes or by content.
    assert_eq!(
        tx.save_raw(&message(1, "h1", "c1")).await.unwrap(),
        RawSaved::Known { id: first, processed: false }
    );
    assert_eq!(
        tx.save_raw(&message(3, "h2", "c2")).await.unwrap(),
        RawSaved::Known { id: second, processed: false }
    );
    assert_eq!(
        tx.save_raw(&message(3, "h2x", "c2")).await.unwrap(),
        RawSaved::Known { id: second, processed: false }
    );
    // A third one is a third message.
    assert!(
        matches!(tx.save_raw(&message(4, "h3", "c3")).await.unwrap(), RawSaved::New(id) if id != first && id != second)
    );
    // Without a Message-ID the key is the bytes' hash: the same key is the same message.
    let mut anonymous = message(5, "h4", "c4");
    anonymous.message_id = None;
    anonymous.dedup_key = "sha256:h4".into();
    let RawSaved::New(id) = tx.save_raw(&anonymous).await.unwrap() else { panic!() };
    assert_eq!(tx.save_raw(&anonymous).await.unwrap(), RawSaved::Known { id, processed: false });
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn raw_bytes_are_kept_apart_from_the_message_row_and_read_back_exactly() {
    let (_dir, store) = store().await;
    let raw = b"From: a@b.test\r\nSubject: x\r\n\r\n\xff\x00body".to_vec();
    let message = NewRawMessage {
        mailbox: "INBOX",
        uidvalidity: 7,
        uid: 1,
        dedup_key: "mid:x@y".into(),
        message_id: Some("x@y"),
        content_hash: "h",
        core_hash: "c",
        raw: &raw,
        backlog: false,
        fetched_at: Utc::now(),
    };
    let mut tx = store.begin().await.unwrap();
    let saved = tx.save_raw(&message).await.unwrap();
    let again = tx.save_raw(&message).await.unwrap();
    tx.commit().await.unwrap();
    let RawSaved::New(id) = saved else { panic!("first save is new: {saved:?}") };
    assert_eq!(again, RawSaved::Known { id, processed: false });
    assert_eq!(store.raw_message(id).await.unwrap(), raw);
}
