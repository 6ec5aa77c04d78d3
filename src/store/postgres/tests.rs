//! The PostgreSQL store against the private cluster (see `testdb`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{TimeZone as _, Utc};
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use super::lease::{self, NodeRole};
use super::testdb;
use crate::domain::{Classification, Status};
use crate::store::{
    Actor, EventKind, MailboxState, MessageOutcome, NewOutgoing, NewRawMessage, NewRequest, RawSaved,
    Store as _, ThreadDirection,
};

fn request(seq: i64, token: &str) -> NewRequest {
    NewRequest {
        reference: format!("GP-2026-{seq:04}"),
        ref_year: 2026,
        ref_seq: seq,
        requester: "practice@nhs.test".into(),
        requester_name: Some("A Practice".into()),
        organisation: None,
        via: None,
        subject: "Room booking".into(),
        body: "Please".into(),
        fingerprint: crate::classify::Fingerprint::of("Please"),
        received_at: Utc.with_ymd_and_hms(2026, 12, 6, 9, 0, 0).unwrap(),
        probable_duplicate_of: None,
        token: token.into(),
        answer: true,
        requester_unverified: false,
    }
}

/// Writers that each take the next number and create a request, some rolling back, all at
/// once: the numbers committed are 1, 2, 3… with none twice and none missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_are_neither_repeated_nor_skipped_under_concurrent_writers() {
    let Some(db) = testdb::fresh("references").await else { return };
    let writers: Vec<_> = (0..24)
        .map(|i| {
            let store = db.store.clone();
            tokio::spawn(async move {
                let mut tx = store.begin().await.unwrap();
                let seq = tx.next_reference_seq(2026).await.unwrap();
                tx.insert_request(&request(seq, &format!("token-{i}")), Utc::now()).await.unwrap();
                // Every fourth writer gives up (say, its message failed): its number goes back.
                if i % 4 == 3 {
                    drop(tx);
                    return None;
                }
                tx.commit().await.unwrap();
                Some(seq)
            })
        })
        .collect();
    let mut committed = Vec::new();
    for w in writers {
        committed.extend(w.await.unwrap());
    }
    let in_db: BTreeSet<String> =
        db.store.list_requests(&Default::default()).await.unwrap().into_iter().map(|r| r.reference).collect();
    let expected: BTreeSet<String> = (1..=18).map(|n| format!("GP-2026-{n:04}")).collect();
    assert_eq!(committed.len(), 18);
    assert_eq!(in_db, expected, "committed references must be 1..=18 with no gap or repeat");
    db.drop().await;
}

/// One message through the intake's writes: stored once (a second save finds it, processed
/// or not), its request, event, outcome, checkpoint and acknowledgement landing together,
/// and the acknowledgement claimed by exactly one of two claimers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_stored_once_and_its_effects_land_together() {
    let Some(db) = testdb::fresh("intake").await else { return };
    let store = &db.store;
    let at = Utc.with_ymd_and_hms(2026, 12, 6, 9, 0, 0).unwrap();
    store
        .reset_mailbox_state("INBOX", MailboxState { uidvalidity: 7, last_uid: 0, backlog_below_uid: 1 }, at)
        .await
        .unwrap();
    let raw = b"From: practice@nhs.test\r\nSubject: Room booking\r\n\r\nPlease\r\n\x00\xff".to_vec();
    let message = NewRawMessage {
        mailbox: "INBOX",
        uidvalidity: 7,
        uid: 1,
        dedup_key: "mid:abc@nhs.test".into(),
        message_id: Some("abc@nhs.test"),
        content_hash: "c1",
        core_hash: "k1",
        raw: &raw,
        backlog: false,
        fetched_at: at,
    };

    // A batch whose transaction is dropped leaves nothing behind.
    let mut tx = store.begin().await.unwrap();
    assert!(matches!(tx.save_raw(&message).await.unwrap(), RawSaved::New(_)));
    drop(tx);

    let mut tx = store.begin().await.unwrap();
    let RawSaved::New(id) = tx.save_raw(&message).await.unwrap() else { panic!("stored before") };
    let step = tx.begin_step().await.unwrap();
    let seq = tx.next_reference_seq(2026).await.unwrap();
    let request_id = tx.insert_request(&request(seq, "tok-1"), Utc::now()).await.unwrap();
    tx.add_event(request_id, at, Actor::Gatehouse, EventKind::Received, Some("from practice@nhs.test"))
        .await
        .unwrap();
    tx.add_thread_id("abc@nhs.test", request_id, ThreadDirection::In).await.unwrap();
    let outcome = MessageOutcome {
        classification: Classification::New,
        received_at: Some(at),
        from_address: Some("practice@nhs.test".into()),
        from_name: None,
        subject: Some("Room booking".into()),
        attachments: None,
        detail: None,
        request_id: Some(request_id),
    };
    tx.finish_message(id, &outcome, at).await.unwrap();
    assert!(!tx.has_outgoing(request_id, "acknowledgement").await.unwrap());
    let ack = NewOutgoing {
        kind: "acknowledgement".into(),
        request_id: Some(request_id),
        message_id: "ack-1@gatehouse.test".into(),
        envelope_from: "gp-access@gatehouse.test".into(),
        recipients: vec!["practice@nhs.test".into()],
        subject: "GP-2026-0001".into(),
        raw: b"raw ack".to_vec(),
    };
    tx.enqueue(&ack, at).await.unwrap();
    assert!(tx.has_outgoing(request_id, "acknowledgement").await.unwrap());
    tx.end_step(step, true).await.unwrap();
    // Work undone by a step's rollback is gone; the work before it stays.
    let step = tx.begin_step().await.unwrap();
    tx.add_priority(request_id, "access").await.unwrap();
    tx.end_step(step, false).await.unwrap();
    tx.set_checkpoint("INBOX", 7, 1, at).await.unwrap();
    // Found again by its thread, as a follow-up would be, inside the same transaction.
    let threaded = tx.request_for_thread(&["abc@nhs.test".into()]).await.unwrap().unwrap();
    assert_eq!(threaded.id, request_id);
    tx.commit().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.save_raw(&message).await.unwrap(), RawSaved::Known { id, processed: true });
    drop(tx);
    assert_eq!(store.raw_message(id).await.unwrap(), raw, "the bytes come back exactly");
    assert_eq!(store.attempts(id).await.unwrap(), 1);
    assert_eq!(store.mailbox_state("INBOX").await.unwrap().unwrap().last_uid, 1);
    let r = store.find_request("gp-2026-0001").await.unwrap().unwrap();
    assert_eq!((r.status, r.message_count, r.priorities.len()), (Status::AwaitingTriage, 1, 0));
    assert_eq!(store.request_events(request_id).await.unwrap()[0].kind, EventKind::Received);

    let (a, b) = tokio::join!(store.claim_due(at, 10), store.claim_due(at, 10));
    let claimed: Vec<_> = a.unwrap().into_iter().chain(b.unwrap()).collect();
    assert_eq!(claimed.len(), 1, "one claimer gets the acknowledgement");
    assert_eq!(claimed[0].recipients, vec!["practice@nhs.test".to_string()]);
    store.mark_in_flight(claimed[0].id).await.unwrap();
    assert_eq!(store.requeue_interrupted().await.unwrap(), 1, "cut off mid-SMTP: due again");
    let again = store.claim_due(at, 10).await.unwrap();
    assert_eq!(again[0].attempts, 2);
    store.mark_sent(again[0].id, at).await.unwrap();
    assert!(store.claim_due(at, 10).await.unwrap().is_empty());
    db.drop().await;
}

/// Two nodes contend for the lease: the first leads; when it stops renewing, the second
/// takes over with a higher token, and the first learns it lost: its renewal fails and its
/// fence refuses its writes.
/// Steps are savepoints: a step undone undoes exactly itself, with the steps kept inside it,
/// also after a failed statement (when PostgreSQL refuses everything until the rollback);
/// kept steps stay, and the transaction is usable after an undo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_kept_undone_nested_and_failed_leave_exactly_the_kept_work() {
    let Some(db) = testdb::fresh("steps").await else { return };
    let store = &db.store;
    let mut tx = store.begin().await.unwrap();
    let kept = tx.begin_step().await.unwrap();
    assert_eq!(tx.next_reference_seq(2026).await.unwrap(), 1);
    tx.insert_request(&request(1, "tok-1"), Utc::now()).await.unwrap();
    tx.end_step(kept, true).await.unwrap();
    // A step with a kept step inside it, undone: both go.
    let outer = tx.begin_step().await.unwrap();
    assert_eq!(tx.next_reference_seq(2026).await.unwrap(), 2);
    let inner = tx.begin_step().await.unwrap();
    assert_eq!(tx.next_reference_seq(2026).await.unwrap(), 3);
    tx.end_step(inner, true).await.unwrap();
    tx.end_step(outer, false).await.unwrap();
    // A step whose statement failed (the transaction refuses everything until it is rolled
    // back to), with a kept step inside it: undone, and the transaction is usable again.
    let outer = tx.begin_step().await.unwrap();
    let inner = tx.begin_step().await.unwrap();
    assert_eq!(tx.next_reference_seq(2026).await.unwrap(), 2);
    tx.end_step(inner, true).await.unwrap();
    tx.insert_request(&request(1, "tok-1"), Utc::now()).await.expect_err("the reference is taken");
    tx.end_step(outer, false).await.unwrap();
    assert_eq!(tx.next_reference_seq(2026).await.unwrap(), 2);
    tx.insert_request(&request(2, "tok-2"), Utc::now()).await.unwrap();
    let last = tx.begin_step().await.unwrap();
    tx.end_step(last, true).await.unwrap();
    tx.commit().await.unwrap();

    assert!(store.find_request("GP-2026-0001").await.unwrap().is_some());
    assert!(store.find_request("GP-2026-0002").await.unwrap().is_some());
    assert!(store.find_request("GP-2026-0003").await.unwrap().is_none());
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.next_reference_seq(2026).await.unwrap(), 3, "the counter as committed");
    drop(tx);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_when_the_leader_stops_renewing_and_the_old_leader_is_fenced() {
    let Some(db) = testdb::fresh("lease").await else { return };
    let mut a = PgConnection::connect_with(&db.options).await.unwrap();
    let mut b = PgConnection::connect_with(&db.options).await.unwrap();
    // Short enough for a test; the daemon uses lease::LEASE_LENGTH.
    let length = Duration::from_secs(2);

    let held_a = lease::try_acquire(&mut a, "node-a", length).await.unwrap().expect("a free lease is taken");
    assert!(
        lease::try_acquire(&mut b, "node-b", length).await.unwrap().is_none(),
        "a live lease is not taken"
    );
    lease::heartbeat(&mut a, "node-a", NodeRole::Leader).await.unwrap();
    lease::heartbeat(&mut b, "node-b", NodeRole::Standby).await.unwrap();
    let held_a = lease::renew(&mut a, "node-a", held_a, length).await.unwrap().expect("the holder renews");
    lease::check_fence(&mut a, held_a.token).await.unwrap();
    let roles: Vec<_> = lease::nodes(&mut b).await.unwrap().into_iter().map(|n| (n.node, n.role)).collect();
    assert_eq!(roles, [("node-a".to_string(), NodeRole::Leader), ("node-b".to_string(), NodeRole::Standby)]);

    // node-a stops renewing (killed, paused, cut off). node-b polls until it leads.
    let deadline = Instant::now() + Duration::from_secs(60);
    let held_b = loop {
        if let Some(h) = lease::try_acquire(&mut b, "node-b", length).await.unwrap() {
            break h;
        }
        assert!(Instant::now() < deadline, "node-b never took over");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(held_b.token > held_a.token, "each change of hands raises the token");
    // By its own clock, node-a had stopped acting before node-b could start.
    assert!(!held_a.is_live(Instant::now()));
    assert!(lease::renew(&mut a, "node-a", held_a, length).await.unwrap().is_none(), "node-a learns it lost");
    let fenced = lease::check_fence(&mut a, held_a.token).await.unwrap_err();
    assert!(fenced.to_string().contains("taken over"), "{fenced:#}");
    lease::check_fence(&mut b, held_b.token).await.unwrap();
    let roles: Vec<_> = lease::nodes(&mut a).await.unwrap().into_iter().map(|n| n.role).collect();
    assert_eq!(roles, [NodeRole::Standby, NodeRole::Leader]);

    // A clean stop hands over at once, without waiting for the lease to run out.
    lease::release(&mut b, "node-b", held_b).await.unwrap();
    let held_a2 =
        lease::try_acquire(&mut a, "node-a", length).await.unwrap().expect("a released lease is free");
    assert_eq!(held_a2.token, held_b.token + 1);
    // Closed, not just dropped: the server has ended both sessions before the database goes.
    let _ = a.close().await;
    let _ = b.close().await;
    db.drop().await;
}

/// A write fenced by the lease holds the lease row: a takeover after expiry waits until that
/// write has committed, so the old leader's last write lands before the new leader's first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_waits_for_the_old_leaders_fenced_write_to_finish() {
    let Some(db) = testdb::fresh("fence").await else { return };
    let mut a = PgConnection::connect_with(&db.options).await.unwrap();
    let mut b = PgConnection::connect_with(&db.options).await.unwrap();
    let length = Duration::from_millis(1500);
    let held = lease::try_acquire(&mut a, "node-a", length).await.unwrap().unwrap();
    let mut write = a.begin().await.unwrap();
    lease::check_fence(&mut write, held.token).await.unwrap();
    tokio::time::sleep(length + Duration::from_millis(500)).await;
    // The lease has expired, but the fenced transaction still holds its row.
    let takeover = tokio::spawn(async move {
        let h = lease::try_acquire(&mut b, "node-b", Duration::from_secs(10)).await.unwrap();
        (h, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!takeover.is_finished(), "the takeover must wait for the fenced write");
    let committed_at = Instant::now();
    write.commit().await.unwrap();
    let (h, took_over_at) = takeover.await.unwrap();
    assert!(h.is_some() && took_over_at >= committed_at);
    let _ = a.close().await;
    db.drop().await;
}

/// Two nodes each run the lease keeper: one leads, the other stands by; when the leader's
/// task dies without a word (as under SIGKILL), the standby leads once the lease runs out,
/// and a restarted keeper for the dead node comes back as standby.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_keeper_hands_over_when_the_leader_dies_and_the_old_leader_returns_as_standby() {
    use tokio::sync::watch;
    use tokio_util::sync::CancellationToken;
    let Some(db) = testdb::fresh("keeper").await else { return };
    let start = |node: &str| {
        let (tx, rx) = watch::channel(None);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(lease::keep(db.store.clone(), node.to_string(), tx, shutdown.clone()));
        (rx, shutdown, task)
    };
    let wait_leads = |mut rx: watch::Receiver<Option<lease::Holding>>| async move {
        tokio::time::timeout(Duration::from_secs(90), rx.wait_for(|h| h.is_some()))
            .await
            .expect("took the lease")
            .unwrap()
            .expect("holding")
    };
    let (a_rx, _a_shutdown, a_task) = start("node-a");
    let a_held = wait_leads(a_rx.clone()).await;
    let (b_rx, b_shutdown, b_task) = start("node-b");
    // node-b has had at least one try (its heartbeat is in) and stands by.
    let mut conn = db.store.connection().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while lease::nodes(&mut conn).await.unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "node-b never reported");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(b_rx.borrow().is_none(), "a standby while node-a leads");

    a_task.abort();
    let b_held = wait_leads(b_rx.clone()).await;
    assert!(b_held.token > a_held.token);
    let fenced = lease::check_fence(&mut conn, a_held.token).await;
    assert!(fenced.is_err(), "the dead leader's token no longer passes the fence");

    let (a_rx, a_shutdown, a_task) = start("node-a");
    tokio::time::sleep(lease::RENEW_EVERY * 2).await;
    assert!(a_rx.borrow().is_none(), "the old leader comes back as standby");
    assert!(b_rx.borrow().is_some());
    // A clean stop of node-b hands the lease on.
    b_shutdown.cancel();
    b_task.await.unwrap();
    let a_again = wait_leads(a_rx).await;
    assert!(a_again.token > b_held.token);
    a_shutdown.cancel();
    a_task.await.unwrap();
    drop(conn);
    db.drop().await;
}

/// The intake's lookups inside a transaction: duplicate candidates newest first across
/// requester and organisation, a reply to a notification, a bounce of an acknowledgement,
/// a decision, and the sending limits' counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_for_duplicates_replies_bounces_and_limits_find_what_was_written() {
    let Some(db) = testdb::fresh("lookups").await else { return };
    let at = Utc.with_ymd_and_hms(2026, 12, 6, 9, 0, 0).unwrap();
    let mut tx = db.store.begin().await.unwrap();
    let mut first = request(1, "tok-a");
    first.organisation = Some("Anytown PCN".into());
    let a = tx.insert_request(&first, Utc::now()).await.unwrap();
    let mut second = request(2, "tok-b");
    second.requester = "other@nhs.test".into();
    second.organisation = Some("Anytown PCN".into());
    let b = tx.insert_request(&second, Utc::now()).await.unwrap();
    let mut third = request(3, "tok-c");
    third.requester = "stranger@else.test".into();
    tx.insert_request(&third, Utc::now()).await.unwrap();

    let recent = tx.recent_requests("practice@nhs.test", Some("Anytown PCN"), at).await.unwrap();
    assert_eq!(recent, vec![(b, "tok-b".to_string()), (a, "tok-a".to_string())]);
    let texts = tx.request_texts(&["tok-a".into()]).await.unwrap();
    assert_eq!((texts.len(), texts[0].subject.as_str()), (1, "Room booking"));
    let candidates = tx.candidates(&[a, b]).await.unwrap();
    assert_eq!(candidates.iter().map(|c| c.id).collect::<Vec<_>>(), vec![b, a]);

    let mail = |kind: &str, id: &str| NewOutgoing {
        kind: kind.into(),
        request_id: Some(a),
        message_id: id.into(),
        envelope_from: "gp-access@gatehouse.test".into(),
        recipients: vec!["practice@nhs.test".into()],
        subject: "GP-2026-0001".into(),
        raw: b"raw".to_vec(),
    };
    tx.enqueue(&mail("notification", "note-1@gatehouse.test"), at).await.unwrap();
    let ack = tx.enqueue(&mail("acknowledgement", "ack-1@gatehouse.test"), at).await.unwrap();
    tx.record_answered(ack, "practice@nhs.test", "nhs.test", at).await.unwrap();
    let replied = tx.request_for_notification(&["x@y".into(), "note-1@gatehouse.test".into()]).await.unwrap();
    assert_eq!(replied.map(|r| r.id), Some(a));
    assert!(tx.request_for_notification(&["ack-1@gatehouse.test".into()]).await.unwrap().is_none());
    let bounced = tx.outbox_for_message_ids(&["ack-1@gatehouse.test".into()]).await.unwrap();
    assert_eq!(bounced, Some((ack, Some(a), "acknowledgement".to_string())));
    tx.mark_bounced(ack, "550 no such user").await.unwrap();
    let counts = tx.answered_counts("practice@nhs.test", "nhs.test", at, at).await.unwrap();
    assert_eq!((counts.person, counts.domain, counts.hour), (1, 1, 1));
    let later = at + chrono::Duration::hours(1);
    assert_eq!(tx.answered_counts("practice@nhs.test", "nhs.test", later, later).await.unwrap().hour, 0);
    let meeting = chrono::NaiveDate::from_ymd_opt(2026, 12, 10).unwrap();
    tx.record_decision(a, crate::domain::Decision::Meeting, Some("board"), Some(meeting), None, at)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let decided = db.store.find_request("GP-2026-0001").await.unwrap().unwrap();
    assert_eq!(decided.meeting_date, Some(meeting));
    assert_eq!(decided.decided_at, Some(at));
    assert_eq!(db.store.outbox_counts().await.unwrap().pending, 1, "the bounced one no longer waits");
    db.drop().await;
}

/// What the CLI, the schedules and `gatehouse status` read back: requests by status, by
/// arrival, by decision and by meeting; messages; the daemon's status row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reads_behind_status_summaries_and_the_cli_see_what_was_written() {
    let Some(db) = testdb::fresh("reads").await else { return };
    let store = &db.store;
    let at = Utc.with_ymd_and_hms(2026, 12, 6, 9, 0, 0).unwrap();
    let meeting = chrono::NaiveDate::from_ymd_opt(2026, 12, 10).unwrap();
    let mut tx = store.begin().await.unwrap();
    let a = tx.insert_request(&request(1, "tok-a"), Utc::now()).await.unwrap();
    let mut later = request(2, "tok-b");
    later.received_at = at + chrono::Duration::days(1);
    tx.insert_request(&later, Utc::now()).await.unwrap();
    tx.record_decision(a, crate::domain::Decision::Meeting, None, Some(meeting), None, at).await.unwrap();
    let raw = b"x".to_vec();
    let message = NewRawMessage {
        mailbox: "INBOX",
        uidvalidity: 1,
        uid: 1,
        dedup_key: "hash:x".into(),
        message_id: None,
        content_hash: "x",
        core_hash: "x",
        raw: &raw,
        backlog: false,
        fetched_at: at,
    };
    let RawSaved::New(m) = tx.save_raw(&message).await.unwrap() else { panic!("new") };
    let outcome = MessageOutcome {
        classification: Classification::New,
        received_at: Some(at),
        from_address: Some("practice@nhs.test".into()),
        from_name: None,
        subject: Some("Room booking".into()),
        attachments: None,
        detail: None,
        request_id: Some(a),
    };
    tx.finish_message(m, &outcome, at).await.unwrap();
    tx.commit().await.unwrap();

    let refs =
        |rows: Vec<crate::store::RequestRow>| rows.into_iter().map(|r| r.reference).collect::<Vec<_>>();
    assert_eq!(refs(store.awaiting_triage().await.unwrap()), ["GP-2026-0002"]);
    let day = chrono::Duration::days(1);
    assert_eq!(refs(store.received_between(at, at + day).await.unwrap()), ["GP-2026-0001"]);
    assert_eq!(refs(store.decided_between(at, at + day).await.unwrap()), ["GP-2026-0001"]);
    assert_eq!(refs(store.agenda_for(meeting).await.unwrap()), ["GP-2026-0001"]);
    let (rows, total) = store.with_status(Status::AwaitingTriage, 10).await.unwrap();
    assert_eq!((refs(rows), total), (vec!["GP-2026-0002".to_string()], 1));
    assert_eq!(store.arrivals_since(at).await.unwrap().len(), 2);
    let listed = store.list_messages().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].reference.as_deref(), Some("GP-2026-0001"));
    assert_eq!(listed[0].classification, Some(Classification::New));
    assert_eq!(store.request_messages(a).await.unwrap().len(), 1);

    assert!(store.daemon_status().await.unwrap().is_none());
    store.set_daemon_status("idle", None, at).await.unwrap();
    store.set_smtp_status(crate::store::SmtpOutcome::Failed("421 busy"), at).await.unwrap();
    let status = store.daemon_status().await.unwrap().unwrap();
    assert_eq!(status.imap, "idle");
    assert_eq!(status.smtp_last_error, Some(("421 busy".to_string(), at)));
    assert!(!store.summary_sent("weekly", "2026-W49").await.unwrap());
    assert_eq!(store.last_covered("weekly").await.unwrap(), None);
    db.drop().await;
}

/// Two nodes recording the same week's summary at once: exactly one records it. Alerts are
/// kept, counted by a literal prefix, and listed while open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summary_is_recorded_once_across_nodes_and_alerts_are_kept() {
    let Some(db) = testdb::fresh("summaries").await else { return };
    let at = Utc.with_ymd_and_hms(2026, 12, 7, 8, 0, 0).unwrap();
    let covers = (at - chrono::Duration::days(7), at);
    let (mut one, mut two) = (db.store.begin().await.unwrap(), db.store.begin().await.unwrap());
    let first = one.record_summary("weekly", "2026-W50", covers, None, at).await.unwrap();
    let racing = tokio::spawn(async move {
        let recorded = two.record_summary("weekly", "2026-W50", covers, None, at).await.unwrap();
        two.commit().await.unwrap();
        recorded
    });
    one.commit().await.unwrap();
    assert!(first && !racing.await.unwrap(), "the second node finds the week recorded");
    assert!(db.store.summary_sent("weekly", "2026-W50").await.unwrap());
    assert_eq!(db.store.last_summary().await.unwrap(), Some(at));
    assert_eq!(db.store.last_covered("weekly").await.unwrap(), Some(at));

    let mut tx = db.store.begin().await.unwrap();
    let alert = |key: &str, resolved| crate::store::AlertRow {
        key: key.into(),
        subject: "Trouble".into(),
        first_raised: at,
        last_sent: at,
        resolved_at: resolved,
    };
    tx.put_alert(&alert("smtp_down", None)).await.unwrap();
    tx.put_alert(&alert("sender_a%", Some(at))).await.unwrap();
    assert_eq!(tx.alert("smtp_down").await.unwrap().unwrap().resolved_at, None);
    assert_eq!(tx.alerts_sent_since("sender_a%", at).await.unwrap(), 1);
    assert_eq!(tx.alerts_sent_since("sender_a_", at).await.unwrap(), 0, "a prefix is literal");
    tx.commit().await.unwrap();
    assert_eq!(db.store.open_alerts().await.unwrap(), vec![("smtp_down".to_string(), at)]);
    db.drop().await;
}

/// The daemon's fenced store: its transactions and outbox writes go through while the
/// lease it was given is current, and fail (changing nothing) on a standby and on an old
/// leader that still believes it leads after another node took over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_store_writes_only_while_its_lease_is_current() {
    let Some(db) = testdb::fresh("fenced").await else { return };
    let mut b = PgConnection::connect_with(&db.options).await.unwrap();
    let length = Duration::from_millis(1500);
    let (holding, fence) = tokio::sync::watch::channel(None);
    let store = db.store.clone().fenced(fence);
    let now = Utc.with_ymd_and_hms(2026, 12, 6, 9, 0, 0).unwrap();
    let meta = |store: &super::PgStore, value: &'static str| {
        let store = store.clone();
        async move {
            let mut tx = store.begin().await?;
            tx.set_meta("fenced", value).await?;
            tx.commit().await
        }
    };
    assert!(meta(&store, "standby").await.is_err(), "a standby writes nothing");
    assert!(store.claim_due(now, 10).await.is_err(), "a standby claims no mail");

    let mut a = PgConnection::connect_with(&db.options).await.unwrap();
    let held = lease::try_acquire(&mut a, "node-a", length).await.unwrap().unwrap();
    holding.send_replace(Some(lease::Holding { token: held.token, act_until: Instant::now() + length * 10 }));
    meta(&store, "leader").await.unwrap();
    store.claim_due(now, 10).await.unwrap();

    // node-a pauses past its lease (its own clock is made to say it still leads), node-b
    // takes over: node-a's writes are refused by the database.
    tokio::time::sleep(length + Duration::from_millis(300)).await;
    lease::try_acquire(&mut b, "node-b", Duration::from_secs(10)).await.unwrap().expect("taken over");
    assert!(meta(&store, "paused").await.is_err(), "an old leader's commit is fenced");
    assert!(store.claim_due(now, 10).await.is_err(), "an old leader's claim is fenced");
    assert_eq!(db.store.get_meta("fenced").await.unwrap().as_deref(), Some("leader"));
    drop((a, b));
    db.drop().await;
}
