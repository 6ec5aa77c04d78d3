//! The whole pipeline for one message: raw bytes as they arrive in the shared inbox →
//! `Intake::parse_group` (parse and classify, on the parser's own thread) →
//! `Intake::process` against a real SQLite store, the way `inbox::take` calls it (raw
//! bytes saved first, a step of its own, the message given up when processing fails) → every email
//! that lands in the outbox, read back as the sender task would claim it and parsed again.
//!
//! Each input starts from the same store: a copy of a template database holding two
//! requests whose reply keys are known ([`KNOWN_TOKEN`]), their notification and
//! acknowledgement Message-IDs and a thread, so that inputs which quote a key, reply to a
//! notification or follow up by reference reach triage and follow-up handling. Starting
//! afresh each time makes every failure reproducible from its one input (`cargo fuzz run
//! pipeline artifacts/pipeline/crash-…`), whatever ran before it.
//!
//! Processing runs on a thread with tokio's worker stack (2 MiB), as in the daemon, so
//! recursion that only the parser's big stack survives shows up here as a crash.
//!
//! Besides "never panics, never hangs", each input must leave the outbox with:
//! - no email to anyone gatehouse cannot stand behind ([`may_write_to`], the harness's one
//!   copy of that rule);
//! - no reply key in an email to anyone but the gatekeepers (unless it goes back to the
//!   sender who wrote it);
//! - `Auto-Submitted`, a Message-ID (the outbox row's), the envelope's recipients and no one
//!   else in the headers, and recognised as gatehouse's own mail when it comes back;
//! - at most two emails to people other than the gatekeepers.
#![no_main]

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use chrono::{DateTime, TimeZone as _, Utc};
use gatehouse::classify;
use gatehouse::clock::ManualClock;
use gatehouse::config::Config;
use gatehouse::domain::EmailAddress;
use gatehouse::intake::Intake;
use gatehouse::store::{
    NewOutgoing, NewRawMessage, NewRequest, OutboxItem, RawSaved, RequestRow, SharedStore, ThreadDirection,
};
use gatehouse::templates::Templates;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest as _, Sha256};

/// The reply key of GP-2026-0042 in the template store; seeds and the dictionary carry it.
const KNOWN_TOKEN: &str = "f00dfeedf00dfeedf00dfeedf00dfeed";
/// The reply key of GP-2026-0041, an earlier request from the same organisation.
const EARLIER_TOKEN: &str = "0123456789abcdef0123456789abcdef";
/// What the template store's requests were sent: a reply can thread onto them.
const NOTIFICATION_ID: &str = "notification.GP-2026-0042@gatehouse.test";
const ACK_ID: &str = "ack.GP-2026-0042.1@gatehouse.test";
/// The Message-ID of the approach GP-2026-0042 was logged from (tests/fixtures/mail).
const APPROACH_ID: &str = "LO2P265MB1234ABCD5678EF90@LO2P265MB1234.GBRP265.PROD.OUTLOOK.COM";
/// Inputs are processed at this moment (a Friday, before the configured meetings).
const NOW: (i32, u32, u32, u32) = (2026, 11, 20, 10);
/// tokio's worker threads' stack, which `Intake::process` runs on in the daemon.
const WORKER_STACK: usize = 2 << 20;

/// The daemon's config, on addresses the seeds use. `max_message_bytes` is small so that
/// inputs over it reach the "too large" path (libFuzzer's -max_len is 64 KiB).
const CONFIG: &str = r#"
[service]
name = "Fuzz GP Leadership Group"
timezone = "Europe/London"
data_dir = "data"
reference_prefix = "GP"

[imap]
host = "127.0.0.1"
port = 1143
security = "plain"
username = "gp-access@gatehouse.test"
password_env = "GATEHOUSE_FUZZ_NOT_USED"
mailbox = "INBOX"
max_message_bytes = 32768

[smtp]
host = "127.0.0.1"
port = 2525
security = "plain"
from = "Fuzz GP Single Point of Access <gp-access@gatehouse.test>"

[gatekeepers]
addresses = ["gatekeeper@gatehouse.test", "gatekeeper2@gatehouse.test"]

[board]
addresses = ["board@gatehouse.test", "lmc.chair@example.org"]
summary_schedule = "0 8 * * MON"

[meetings]
dates = ["2026-12-03", "2027-01-07"]

[priorities]
workforce = "Recruiting hard-to-find staff groups"
shift = "Reducing the shift of work from secondary to primary care"

[organisations]
"icb.test" = "Anytown ICB"
"trust.test" = "Anytown Hospitals NHS Trust"

[acknowledgements]
rate_limit_per_day = 10
acknowledge_forwarded = true

[members]
domains = ["nhs.test"]
addresses = ["lmc.secretary@example.org"]
"#;

fuzz_target!(|data: &[u8]| {
    WORKER.with(|w| w.run(data));
});

thread_local! {
    static WORKER: Worker = Worker::start();
}

/// The thread that processes inputs, one at a time, with the daemon's worker stack.
struct Worker {
    inputs: mpsc::Sender<Vec<u8>>,
    done: mpsc::Receiver<()>,
}

impl Worker {
    fn start() -> Self {
        let (inputs, inbox) = mpsc::channel::<Vec<u8>>();
        let (finished, done) = mpsc::channel();
        std::thread::Builder::new()
            .name("pipeline-worker".into())
            .stack_size(WORKER_STACK)
            .spawn(move || {
                let harness = Harness::new();
                for input in inbox {
                    harness.run(&input);
                    if finished.send(()).is_err() {
                        break;
                    }
                }
            })
            .expect("start the worker thread");
        Self { inputs, done }
    }

    fn run(&self, data: &[u8]) {
        self.inputs.send(data.to_vec()).expect("the worker thread stopped");
        // A panic on the worker aborts the process (libFuzzer's panic hook), so an answer
        // always comes unless the worker died.
        self.done.recv().expect("the worker thread stopped");
    }
}

/// Everything that lives for the whole process.
struct Harness {
    runtime: tokio::runtime::Runtime,
    config: Arc<Config>,
    intake: Intake,
    /// Private to this process; removed by the next process once this one has gone.
    dir: PathBuf,
    /// The store every input starts from, and the requests it holds.
    template: PathBuf,
    seeded: Vec<RequestRow>,
    count: RefCell<u64>,
    given_up: RefCell<u64>,
}

impl Harness {
    fn new() -> Self {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("start tokio");
        let dir = scratch_dir();
        let config = Arc::new(Config::parse(CONFIG, &dir.join("gatehouse.toml")).expect("the fuzz config"));
        let templates = Arc::new(Templates::load(&config).expect("the built-in templates"));
        let clock = Arc::new(ManualClock::new(now()));
        let intake =
            Intake::new(config.clone(), clock, templates, Arc::new(tokio::sync::Notify::new()));
        let template = dir.join("template.db");
        let seeded = runtime.block_on(seed(&template));
        // Copied whole only once the last connection has closed and folded the WAL in.
        let wal = dir.join("template.db-wal");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while wal.exists() {
            assert!(std::time::Instant::now() < deadline, "the template store's WAL was never folded in");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Self {
            runtime,
            config,
            intake,
            dir,
            template,
            seeded,
            count: RefCell::new(0),
            given_up: RefCell::new(0),
        }
    }

    fn run(&self, data: &[u8]) {
        let n = {
            let mut count = self.count.borrow_mut();
            *count += 1;
            *count
        };
        let path = self.dir.join(format!("input-{n}.db"));
        std::fs::copy(&self.template, &path).expect("copy the template store");
        self.runtime.block_on(async {
            let store = gatehouse::store::open_sqlite_file(&path).await.expect("open the store");
            let (kept, sender, forwarded_from) = self.process(&store, data).await;
            if !kept {
                *self.given_up.borrow_mut() += 1;
            }
            let sent = store.claim_due(far_future(), 1000).await.expect("read the outbox");
            let after = store.list_requests(&Default::default()).await.expect("list requests");
            let input =
                Input { sender, forwarded_from, lower: data.to_ascii_lowercase(), existing: &self.seeded };
            self.check(&input, &after, &sent);
        });
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        if n.is_power_of_two() && n >= 1024 {
            eprintln!("pipeline: {n} inputs, {} given up after an error", self.given_up.borrow());
        }
    }

    /// What the inbox does with one message: store it raw, parse it, process it in a
    /// step of its own, and give it up (logged as unparseable) when processing fails. Returns
    /// whether it was kept (false: given up), and the sender and forwarded sender as parsed.
    async fn process(&self, store: &SharedStore, data: &[u8]) -> (bool, Option<String>, Option<String>) {
        let message_id = gatehouse::inbox::dedup::message_id(data);
        let content_hash = hex::encode(Sha256::digest(data));
        let raw = NewRawMessage {
            mailbox: "INBOX",
            uidvalidity: 1,
            uid: 1,
            dedup_key: match &message_id {
                Some(id) => format!("mid:{id}"),
                None => format!("sha256:{content_hash}"),
            },
            message_id: message_id.as_deref(),
            content_hash: &content_hash,
            core_hash: &gatehouse::inbox::dedup::core_hash(data),
            raw: data,
            backlog: false,
            fetched_at: now(),
        };
        let mut tx = store.begin().await.expect("begin");
        let id = match tx.save_raw(&raw).await.expect("save the raw message") {
            RawSaved::New(id) => id,
            known => panic!("a fresh store already held the message: {known:?}"),
        };
        tx.commit().await.expect("commit the raw message");

        let (raws, parsed) = self.intake.parse_group(vec![data.to_vec()]).await;
        assert_eq!((raws.len(), parsed.len()), (1, 1), "parse_group hands back what it was given");
        let read = parsed[0].as_ref().and_then(|r| r.as_ref().ok()).map(|p| &p.parsed);
        let address = |a: &str| EmailAddress::parse(a).ok().map(|a| a.to_string());
        let sender = read.and_then(|p| p.from.as_ref()).and_then(|m| address(&m.address));
        let forwarded_from = read.and_then(|p| p.forwarded.as_ref()).and_then(|f| address(&f.from.address));
        let mut tx = store.begin().await.expect("begin");
        let step = tx.begin_step().await.expect("begin a step");
        let result = self.intake.process(&mut *tx, id, &raws[0], parsed[0].as_ref(), false, None).await;
        let kept = match result {
            Ok(_) => {
                tx.end_step(step, true).await.expect("keep the step");
                true
            }
            Err(e) => {
                assert!(!gatehouse::store::is_storage_trouble(&e), "the store failed: {e:#}");
                // Not a failure here (the inbox quarantines it after three tries), but worth
                // seeing: the first few say which inputs gatehouse cannot process.
                if *self.given_up.borrow() < 5 {
                    eprintln!("pipeline: given up: {e:#}");
                }
                tx.end_step(step, false).await.expect("undo the step");
                self.intake
                    .quarantine(&mut *tx, id, &raws[0], parsed[0].as_ref(), &format!("{e:#}"))
                    .await
                    .expect("quarantine");
                false
            }
        };
        tx.commit().await.expect("commit");
        (kept, sender, forwarded_from)
    }

    /// The invariants every input must leave behind (see the module comment).
    fn check(&self, input: &Input<'_>, after: &[RequestRow], sent: &[OutboxItem]) {
        let own = vec![self.config.smtp.from.address.to_string()];
        let domain = self.config.smtp.from.address.domain().to_string();
        let ctx = classify::Context { own_addresses: &own, own_message_id_domain: Some(&domain) };
        let raws: Vec<&[u8]> = sent.iter().map(|s| s.raw.as_slice()).collect();
        let reparsed = classify::parse_many(&raws, &ctx, 0);
        let mut to_others = 0;
        for (item, again) in sent.iter().zip(reparsed) {
            let what = format!("outbox {} ({}) to {:?}", item.id, item.kind, item.recipients);
            let message = mail_parser::MessageParser::default()
                .parse(&item.raw)
                .unwrap_or_else(|| panic!("{what}: gatehouse's own email does not parse"));
            check_headers(&message, item, &what, &self.config);
            match again {
                Ok(p) => assert!(
                    p.automated.is_some(),
                    "{what}: not recognised as gatehouse's own mail when it comes back"
                ),
                Err(e) => panic!("{what}: gatehouse's own email does not parse: {e}"),
            }
            let text = readable(&message, &item.raw);
            for recipient in &item.recipients {
                if let Err(why) = may_write_to(recipient, item, input, &self.config) {
                    panic!("{what}: may not write to {recipient}: {why}");
                }
                if input.is_gatekeeper(recipient, &self.config) {
                    continue;
                }
                to_others += 1;
                for request in after {
                    let token = request.token.to_ascii_lowercase();
                    let echoed =
                        input.sender.as_deref() == Some(recipient.as_str()) && input.mentions(&token);
                    assert!(
                        echoed || !text.contains(&token),
                        "{what}: carries the reply key of {} to {recipient}",
                        request.reference
                    );
                }
            }
        }
        assert!(to_others <= 2, "{to_others} emails to people other than the gatekeepers from one message");
    }
}

/// Who the input came from, as gatehouse reads it.
struct Input<'a> {
    /// The From address, lower-cased, when gatehouse can read one.
    sender: Option<String>,
    /// The original sender of a forward, when the message is one.
    forwarded_from: Option<String>,
    /// The input's bytes, lower-cased, to tell a key the sender wrote from one gatehouse
    /// gave away.
    lower: Vec<u8>,
    /// The requests in the store before the input.
    existing: &'a [RequestRow],
}

impl Input<'_> {
    fn mentions(&self, token: &str) -> bool {
        self.lower.windows(token.len()).any(|w| w == token.as_bytes())
    }

    fn is_gatekeeper(&self, address: &str, config: &Config) -> bool {
        EmailAddress::parse(address).is_ok_and(|a| config.is_gatekeeper(&a))
    }
}

/// Whether gatehouse may write to `recipient` because of this input: the harness's one copy
/// of issue 14's rule ("one rule, in one place, for whom gatehouse writes to"). Allowed: the
/// gatekeepers, the board, the sender of the message as received, and — for a gatekeeper's
/// decision — the requester of a request that was already there. The original sender of a
/// forward only when the forwarder is in `[members]`.
fn may_write_to(
    recipient: &str,
    item: &OutboxItem,
    input: &Input<'_>,
    config: &Config,
) -> Result<(), String> {
    let recipient = recipient.to_ascii_lowercase();
    if input.is_gatekeeper(&recipient, config)
        || config.board.addresses.iter().any(|b| b.as_str() == recipient)
    {
        return Ok(());
    }
    if input.sender.as_deref() == Some(recipient.as_str()) {
        return Ok(());
    }
    let trusted_forwarder = input
        .sender
        .as_deref()
        .and_then(|s| EmailAddress::parse(s).ok())
        .is_some_and(|s| config.is_member(&s));
    if trusted_forwarder && input.forwarded_from.as_deref() == Some(recipient.as_str()) {
        return Ok(());
    }
    let decided = input.existing.iter().find(|r| Some(r.id) == item.request_id);
    if item.kind == "outcome"
        && input.sender.as_deref().is_some_and(|s| input.is_gatekeeper(s, config))
        && decided.is_some_and(|r| r.requester == recipient)
    {
        return Ok(());
    }
    Err(format!(
        "not a gatekeeper, a board member, the sender ({:?}) or the forwarded sender ({:?})",
        input.sender, input.forwarded_from
    ))
}

/// What every email gatehouse sends must say about itself.
fn check_headers(message: &mail_parser::Message<'_>, item: &OutboxItem, what: &str, config: &Config) {
    let auto = message.header_raw("Auto-Submitted").map(str::trim).unwrap_or_default();
    assert!(auto == "auto-replied" || auto == "auto-generated", "{what}: Auto-Submitted is {auto:?}");
    assert_eq!(message.message_id(), Some(item.message_id.as_str()), "{what}: Message-ID");
    let from: Vec<String> = message
        .from()
        .into_iter()
        .flat_map(|a| a.iter())
        .filter_map(|a| a.address())
        .map(str::to_lowercase)
        .collect();
    assert_eq!(from, [config.smtp.from.address.to_string()], "{what}: From");
    let mut to: Vec<String> = message
        .to()
        .into_iter()
        .flat_map(|a| a.iter())
        .filter_map(|a| a.address())
        .map(str::to_lowercase)
        .collect();
    let mut envelope = item.recipients.clone();
    to.sort();
    envelope.sort();
    assert_eq!(to, envelope, "{what}: the To header names someone the envelope does not, or the reverse");
    for header in ["Cc", "Bcc", "Resent-To", "Resent-Cc", "Resent-Bcc"] {
        assert!(message.header_raw(header).is_none(), "{what}: has a {header} header");
    }
}

/// Everything a reader of `message` could see, lower-cased: the raw bytes and every part
/// decoded (a key could hide in base64 or quoted-printable).
fn readable(message: &mail_parser::Message<'_>, raw: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(raw).to_ascii_lowercase();
    for part in &message.parts {
        text.push('\n');
        text.push_str(&String::from_utf8_lossy(part.contents()).to_ascii_lowercase());
    }
    text
}

fn now() -> DateTime<Utc> {
    let (y, m, d, h) = NOW;
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).single().expect("a valid instant")
}

fn far_future() -> DateTime<Utc> {
    now() + chrono::Duration::days(3650)
}

/// A folder of this process's own, in /dev/shm when there is one (the store is rebuilt for
/// every input; no disk needed). Folders left by earlier runs whose process has gone are
/// removed first: libFuzzer exits without running destructors.
fn scratch_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
    let prefix = "gatehouse-fuzz-pipeline.";
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(pid) = name.strip_prefix(prefix)
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = base.join(format!("{prefix}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the scratch folder");
    dir
}

/// Builds the template store at `path`: migrated, with GP-2026-0041 (decided) and
/// GP-2026-0042 (awaiting triage) from Anytown ICB, GP-2026-0042's acknowledgement and
/// notification in the outbox (already sent) and its approach's Message-ID in its thread.
/// Returns the requests.
async fn seed(path: &Path) -> Vec<RequestRow> {
    let store = gatehouse::store::open_sqlite_file(path).await.expect("create the template store");
    store.migrate().await.expect("migrate the template store");
    let at = now() - chrono::Duration::days(2);
    let mut tx = store.begin().await.expect("begin");
    let mut ids = Vec::new();
    for (seq, token, requester, subject) in [
        (41, EARLIER_TOKEN, "sam.jones@icb.test", "Phlebotomy for housebound patients"),
        (
            42,
            KNOWN_TOKEN,
            "jo.bloggs@icb.test",
            "Phlebotomy service for housebound patients - expressions of interest",
        ),
    ] {
        let id = tx
            .insert_request(&NewRequest {
                reference: format!("GP-2026-{seq:04}"),
                ref_year: 2026,
                ref_seq: seq,
                requester: requester.into(),
                requester_name: Some("Jo Bloggs".into()),
                organisation: Some("Anytown ICB".into()),
                via: None,
                subject: subject.into(),
                body: "Anytown ICB is inviting GP practices to host a community phlebotomy service \
                       for housebound patients from 1 January 2027."
                    .into(),
                fingerprint: classify::Fingerprint::of(subject),
                received_at: at,
                probable_duplicate_of: None,
                token: token.into(),
                answer: true,
                requester_unverified: false,
            }, at)
            .await
            .expect("insert a request");
        ids.push(id);
    }
    tx.record_decision(ids[0], gatehouse::domain::Decision::Paper, None, None, None, at)
        .await
        .expect("decide GP-2026-0041");
    tx.add_thread_id(APPROACH_ID, ids[1], ThreadDirection::In).await.expect("thread");
    for (kind, message_id, to) in [
        ("acknowledgement", ACK_ID, "jo.bloggs@icb.test"),
        ("notification", NOTIFICATION_ID, "gatekeeper@gatehouse.test"),
    ] {
        let mail = NewOutgoing {
            kind: kind.into(),
            request_id: Some(ids[1]),
            message_id: message_id.into(),
            envelope_from: "gp-access@gatehouse.test".into(),
            recipients: vec![to.into()],
            subject: "GP-2026-0042".into(),
            raw: b"Subject: GP-2026-0042\r\n\r\nsent before the input".to_vec(),
        };
        tx.enqueue(&mail, at).await.expect("enqueue");
    }
    tx.commit().await.expect("commit the template store");
    // Marked as sent already, so only what an input adds is read back.
    for item in store.claim_due(far_future(), 100).await.expect("claim") {
        store.mark_sent(item.id, at).await.expect("mark sent");
    }
    store.list_requests(&Default::default()).await.expect("list requests")
}
