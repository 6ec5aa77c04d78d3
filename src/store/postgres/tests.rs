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
    MailboxState, MessageOutcome, NewOutgoing, NewRawMessage, NewRequest, RawSaved, Store as _,
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
        fingerprint: vec![1, 2, 3, 4],
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
                tx.insert_request(&request(seq, &format!("token-{i}"))).await.unwrap();
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
        .reset_mailbox_state("INBOX", MailboxState { uidvalidity: 7, last_uid: 0, backlog_below_uid: 1 })
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
    tx.savepoint().await.unwrap();
    let seq = tx.next_reference_seq(2026).await.unwrap();
    let request_id = tx.insert_request(&request(seq, "tok-1")).await.unwrap();
    tx.add_event(request_id, at, "system", "logged", Some("from practice@nhs.test")).await.unwrap();
    tx.add_thread_id("abc@nhs.test", request_id, "in").await.unwrap();
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
    tx.release_savepoint().await.unwrap();
    // Work undone by a savepoint rollback is gone; the work before it stays.
    tx.savepoint().await.unwrap();
    tx.add_priority(request_id, "access").await.unwrap();
    tx.rollback_to_savepoint().await.unwrap();
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
    assert_eq!(store.request_events(request_id).await.unwrap()[0].kind, "logged");

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
    drop((a, b));
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
    drop(a);
    db.drop().await;
}
