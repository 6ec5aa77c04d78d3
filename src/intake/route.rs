//! Where a message goes, settled before anything is written (the way chatmail's
//! `receive_imf` decides a message's chat first): [`look_up`] asks the store what it knows
//! of the message — the outbox entry a bounce reports, the request a gatekeeper's reply
//! decides, the request it follows up — through the transaction but only reading, then
//! [`decide`], a pure function, turns the classified message and those facts into a
//! [`Route`]. One handler per route in [`super::act`] writes the effects.

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use super::Prepared;
use crate::classify::{self, Parsed};
use crate::config::Config;
use crate::domain::EmailAddress;
use crate::mailings::recipients::Recipients;
use crate::store::{OutboxId, RequestId, RequestRow, Tx};
use crate::triage::{Attempt, Triage};

/// Where one message goes.
#[derive(Debug)]
pub enum Route {
    /// Not logged as a request: kept raw, and the gatekeepers told.
    Unlogged(Unlogged),
    /// Machine mail (auto-reply, list, our own mail, a bounce of mail we cannot match): logged
    /// only, with why it was judged automated.
    Automated { reason: String },
    /// A bounce of an email gatehouse sent: logged, and its outbox entry (and request) told.
    Bounce { reason: String, bounce: Bounce },
    /// A gatekeeper's reply, authorised for this request: its decision is read and applied.
    TriageReply { request: Box<RequestRow>, from: EmailAddress },
    /// An attempt at a gatekeeper's reply that may change nothing, and why.
    TriageRefused { reason: String, request: Option<Box<RequestRow>>, from: EmailAddress },
    /// More on an existing request. `stranger`: the sender does not speak for it, so it
    /// changes nothing and is shown as theirs.
    FollowUp { request: Box<RequestRow>, from: EmailAddress, stranger: bool },
    /// A new approach from its sender.
    NewRequest(Approach),
    /// A new approach forwarded by someone (`via`) on behalf of its original sender.
    Forward(Approach),
    /// A member's forward of an approach already logged as `request` (the same original
    /// message, or the same text from the same original sender lately): one more door it
    /// came through, not a new request. `approach.via` is the forwarder.
    AnotherDoor { request: Box<RequestRow>, approach: Approach },
}

/// Why a message cannot be logged as a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unlogged {
    /// Over `imap.max_message_bytes`: not parsed.
    TooLarge,
    /// Not an email gatehouse can read, and why.
    Unreadable(String),
    /// No From address gatehouse can read (none, or written as an encoded word).
    NoFrom,
}

/// The outbox entry a bounce reports, as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounce {
    pub outbox_id: OutboxId,
    /// The request the bounced email was about, if any.
    pub request_id: Option<RequestId>,
    /// What the bounced email was (`acknowledgement`, `outcome`…).
    pub kind: String,
}

/// Who a new request is from and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approach {
    /// Who sent this message (the forwarder, for a forward).
    pub from: EmailAddress,
    pub requester: EmailAddress,
    pub requester_name: Option<String>,
    /// The forwarder, for a forward.
    pub via: Option<EmailAddress>,
    pub subject: String,
    pub body: String,
    /// Why a forward from a member's address is not believed to be the member's (the
    /// trusted server did not vouch for it).
    pub forward_doubt: Option<String>,
    /// Whether gatehouse cannot stand behind the requester being who the forward says.
    pub unverified: bool,
}

/// What the store knows of a message, looked up before routing it.
#[derive(Debug, Default)]
pub struct Known {
    /// For a bounce: the outbox entry it reports.
    pub bounced: Option<Bounce>,
    /// For mail with a usable From: whether it is (an attempt at) a gatekeeper's reply.
    pub attempt: Option<Attempt>,
    /// For mail that is not triage: the request it replies to or quotes.
    pub thread: Option<RequestRow>,
    /// For a forward that is not triage: the request already logged for the same approach.
    pub door: Option<RequestRow>,
}

/// Reads (never writes) what [`decide`] needs to know from the store, in the order the
/// route is settled, so nothing is looked up that the route does not depend on.
pub async fn look_up(
    tx: &mut dyn Tx,
    config: &Config,
    triage: &Triage,
    prepared: &Prepared,
    raw: &[u8],
    now: DateTime<Utc>,
) -> anyhow::Result<Known> {
    let parsed = &prepared.parsed;
    let mut known = Known::default();
    if parsed.automated.is_some() {
        if let Some(report) = &parsed.report {
            known.bounced = tx
                .outbox_for_message_ids(&report.original_message_ids)
                .await?
                .map(|(outbox_id, request_id, kind)| Bounce { outbox_id, request_id, kind });
        }
        return Ok(known);
    }
    let Some(from) = sender(parsed) else {
        return Ok(known);
    };
    let attempt = triage.authorise(tx, parsed, &prepared.reply_keys, raw, &from).await?;
    if matches!(attempt, Attempt::NotTriage) {
        known.thread = thread_of(tx, config, parsed).await?;
        known.door = super::doors::same_approach(tx, prepared, &from, now).await?;
    }
    known.attempt = Some(attempt);
    Ok(known)
}

/// Where the message goes: machine mail first, then mail without a usable From, then a
/// gatekeeper's reply, then a follow-up (thread first, then a reference in the subject),
/// and otherwise a new request — a forward's when it forwards someone else's approach.
pub fn decide(
    config: &Config,
    recipients: &Recipients,
    prepared: &Prepared,
    raw: &[u8],
    known: Known,
) -> Route {
    let parsed = &prepared.parsed;
    if let Some(auto) = &parsed.automated {
        let reason = auto.reason.clone();
        return match known.bounced {
            Some(bounce) => Route::Bounce { reason, bounce },
            None => Route::Automated { reason },
        };
    }
    // Found by an attack: a From written as an encoded word (a broken web form), or none at
    // all, was logged here and never shown to anyone.
    let Some(from) = sender(parsed) else {
        return Route::Unlogged(Unlogged::NoFrom);
    };
    match known.attempt {
        Some(Attempt::Authorised(request)) => return Route::TriageReply { request, from },
        Some(Attempt::Refused { reason, request }) => return Route::TriageRefused { reason, request, from },
        Some(Attempt::NotTriage) | None => {}
    }
    // Before the thread: Gmail's forward keeps the original's In-Reply-To, which would
    // make the second practice's forward a stranger's follow-up.
    if let Some(request) = known.door
        && let Route::Forward(approach) = approach(config, recipients, parsed, raw, from.clone())
        && !approach.unverified
    {
        return Route::AnotherDoor { request: Box::new(request), approach };
    }
    // Anyone can quote a reference, so a follow-up from a stranger changes nothing.
    if let Some(request) = known.thread {
        let stranger = !speaks_for(config, &request, &from);
        return Route::FollowUp { request: Box::new(request), from, stranger };
    }
    approach(config, recipients, parsed, raw, from)
}

/// The sender's address, when gatehouse can read one.
fn sender(parsed: &Parsed) -> Option<EmailAddress> {
    parsed.from.as_ref().and_then(|m| EmailAddress::parse(&m.address).ok())
}

/// A new request: the sender's own, or — for a forward — its original sender's, with the
/// forwarder as `via`. Not a forward when the From names several senders (one of which may
/// be a member), or when the forwarded block is the sender's own.
fn approach(
    config: &Config,
    recipients: &Recipients,
    parsed: &Parsed,
    raw: &[u8],
    from: EmailAddress,
) -> Route {
    let forwarded = parsed
        .forwarded
        .as_ref()
        .filter(|_| parsed.from_ambiguous.is_none())
        .and_then(|f| EmailAddress::parse(&f.from.address).ok().map(|a| (f, a)))
        .filter(|(_, original)| *original != from);
    let Some((f, original)) = forwarded else {
        return Route::NewRequest(Approach {
            requester: from.clone(),
            requester_name: parsed.from.as_ref().and_then(|m| m.name.clone()),
            via: None,
            subject: parsed.subject.clone(),
            body: parsed.body_text.clone(),
            forward_doubt: None,
            unverified: false,
            from,
        });
    };
    // A member's forward speaks for its original sender only if the member really sent it:
    // with `[triage] authserv_id` set, the receiving server must vouch for the From, as for a
    // gatekeeper's decision, or anyone could forge a member's address to have gatehouse
    // write to whomever the forward names.
    let forward_doubt = match config.triage.authserv_id.as_deref() {
        Some(server) if config.is_member(&from) => {
            crate::triage::auth::verdict(server, raw, from.domain()).refusal(server)
        }
        _ => None,
    };
    let unverified = !recipients.stands_behind_requester(Some(&from)) || forward_doubt.is_some();
    Route::Forward(Approach {
        requester: original,
        requester_name: f.from.name.clone(),
        via: Some(from.clone()),
        subject: f
            .subject
            .clone()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| classify::subject::strip_prefixes(&parsed.subject).to_string()),
        body: f.body_text.clone(),
        forward_doubt,
        unverified,
        from,
    })
}

/// The request this message replies to, by Message-ID thread, then by a reference in
/// the subject.
///
/// An anonymised (erased) request is nobody's thread: mail quoting its reference is a
/// new approach, held, retained and erasable as its own, rather than personal data added
/// back to a request that retention never looks at again.
async fn thread_of(tx: &mut dyn Tx, config: &Config, parsed: &Parsed) -> anyhow::Result<Option<RequestRow>> {
    let mut ids: Vec<String> = parsed.in_reply_to.clone();
    ids.extend(parsed.references.iter().cloned());
    let found = match tx.request_for_thread(&ids).await? {
        Some(request) => Some(request),
        None => match classify::find_reference(&parsed.subject, &config.service.reference_prefix) {
            Some(reference) => tx.find_request(&reference).await.context("Cannot look up the reference")?,
            None => None,
        },
    };
    Ok(found.filter(|r| !r.is_anonymised()))
}

/// Whether `sender` may speak for `request`: its requester or forwarder (any `+tag`), or
/// someone of the same organisation as `[organisations]` names it. Not merely the same
/// domain: on NHSmail every practice, trust and ICB shares `nhs.net`.
fn speaks_for(config: &Config, request: &RequestRow, sender: &EmailAddress) -> bool {
    let known: Vec<EmailAddress> = std::iter::once(request.requester.as_str())
        .chain(request.via.as_deref())
        .filter_map(|a| EmailAddress::parse(a).ok())
        .collect();
    let person = sender.person();
    if known.iter().any(|k| k.person() == person) {
        return true;
    }
    match config.organisation_for(sender) {
        Some(org) => {
            request.organisation.as_deref() == Some(org)
                || known.iter().any(|k| config.organisation_for(k) == Some(org))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Status;

    fn config() -> Config {
        let text = crate::config::tests::VALID
            .replace("[board]", "[members]\naddresses = [\"pm@practice.test\"]\n\n[board]");
        Config::parse(&text, std::path::Path::new("/etc/gatehouse/gatehouse.toml")).unwrap()
    }

    fn route(raw: &str, known: Known) -> Route {
        let config = config();
        let own = vec!["gp-access@nhs.net".to_string()];
        let ctx = classify::Context { own_addresses: &own, own_message_id_domain: Some("nhs.net") };
        let prepared = Prepared::new(classify::parse(raw.as_bytes(), &ctx).unwrap());
        let recipients = Recipients::new(std::sync::Arc::new(config.clone()));
        decide(&config, &recipients, &prepared, raw.as_bytes(), known)
    }

    fn mail(from: &str, subject: &str, body: &str) -> String {
        format!(
            "From: {from}\r\nTo: gp-access@nhs.net\r\nSubject: {subject}\r\nMessage-ID: <1@x.test>\r\n\r\n{body}\r\n"
        )
    }

    fn request(requester: &str) -> RequestRow {
        RequestRow {
            id: RequestId(7),
            reference: "GP-2026-0007".into(),
            status: Status::AwaitingTriage,
            decision: None,
            decision_detail: None,
            requester: requester.into(),
            requester_name: None,
            organisation: None,
            via: None,
            subject: "Phlebotomy".into(),
            body: String::new(),
            received_at: chrono::Utc::now(),
            decided_at: None,
            meeting_date: None,
            priorities: Vec::new(),
            duplicate_of: None,
            probable_duplicate_of: None,
            message_count: 1,
            token: "00112233445566778899aabbccddeeff".into(),
            answer: true,
            requester_unverified: false,
        }
    }

    const FORWARD: &str = "FYI\n\n-----Original Message-----\nFrom: Jo Bloggs <jo.bloggs@icb.test>\nSent: 16 November 2026 09:12\nTo: pm@practice.test\nSubject: Phlebotomy\n\nCan practices help?";

    #[test]
    fn an_approach_from_its_sender_is_a_new_request() {
        let Route::NewRequest(a) =
            route(&mail("Jo <jo@icb.test>", "Phlebotomy", "Can you help?"), Known::default())
        else {
            panic!("not a new request");
        };
        assert_eq!((a.requester.as_str(), a.via, a.unverified), ("jo@icb.test", None, false));
        assert_eq!(a.requester_name.as_deref(), Some("Jo"));
    }

    #[test]
    fn a_members_forward_speaks_for_its_original_sender_and_a_strangers_does_not() {
        let Route::Forward(a) = route(&mail("pm@practice.test", "FW: Phlebotomy", FORWARD), Known::default())
        else {
            panic!("not a forward");
        };
        assert_eq!(a.requester.as_str(), "jo.bloggs@icb.test");
        assert_eq!(a.via.as_ref().map(EmailAddress::as_str), Some("pm@practice.test"));
        assert_eq!((a.subject.as_str(), a.unverified), ("Phlebotomy", false));
        let Route::Forward(a) =
            route(&mail("someone@else.test", "FW: Phlebotomy", FORWARD), Known::default())
        else {
            panic!("not a forward");
        };
        assert!(a.unverified, "a forward from outside [members] cannot vouch for its sender");
    }

    #[test]
    fn a_members_copy_of_a_logged_approach_is_another_door_and_a_strangers_is_not() {
        let raw = mail("pm@practice.test", "FW: Phlebotomy", FORWARD);
        let known = Known { door: Some(request("jo.bloggs@icb.test")), ..Known::default() };
        let Route::AnotherDoor { request: found, approach } = route(&raw, known) else {
            panic!("not another door");
        };
        assert_eq!(found.id, RequestId(7));
        assert_eq!(approach.via.as_ref().map(EmailAddress::as_str), Some("pm@practice.test"));
        // A stranger's copy joins nothing: it stays a forward of its own (flagged as a
        // probable duplicate when logged), so no one attaches themselves to a request.
        let raw = mail("someone@else.test", "FW: Phlebotomy", FORWARD);
        let known = Known { door: Some(request("jo.bloggs@icb.test")), ..Known::default() };
        assert!(matches!(route(&raw, known), Route::Forward(a) if a.unverified));
    }

    #[test]
    fn mail_without_a_usable_from_is_not_logged_as_a_request() {
        let raw = "To: gp-access@nhs.net\r\nSubject: Help\r\n\r\nHello\r\n";
        assert!(matches!(route(raw, Known::default()), Route::Unlogged(Unlogged::NoFrom)));
    }

    #[test]
    fn machine_mail_is_logged_only_and_a_bounce_of_ours_reaches_its_entry() {
        let raw = "From: MAILER-DAEMON@mx.test\r\nTo: gp-access@nhs.net\r\nSubject: Undeliverable\r\n\r\nIt failed\r\n";
        assert!(matches!(route(raw, Known::default()), Route::Automated { .. }));
        let bounce =
            Bounce { outbox_id: OutboxId(3), request_id: Some(RequestId(7)), kind: "acknowledgement".into() };
        let known = Known { bounced: Some(bounce.clone()), ..Known::default() };
        assert!(matches!(route(raw, known), Route::Bounce { bounce: b, .. } if b == bounce));
    }

    #[test]
    fn a_follow_up_from_a_stranger_is_marked_so() {
        let raw = mail("jo@icb.test", "Re: Phlebotomy [GP-2026-0007]", "More");
        let known = Known { thread: Some(request("jo@icb.test")), ..Known::default() };
        assert!(matches!(route(&raw, known), Route::FollowUp { stranger: false, .. }));
        let known = Known { thread: Some(request("someone@else.test")), ..Known::default() };
        assert!(matches!(route(&raw, known), Route::FollowUp { stranger: true, .. }));
    }

    #[test]
    fn a_triage_attempt_goes_to_triage_before_any_thread() {
        let raw = mail("jane.doe@nhs.net", "Re: [GP-2026-0007] Phlebotomy", "decline: no");
        let known = Known {
            attempt: Some(Attempt::Refused { reason: "no token".into(), request: None }),
            thread: Some(request("jo@icb.test")),
            ..Known::default()
        };
        assert!(matches!(route(&raw, known), Route::TriageRefused { .. }));
        let known = Known {
            attempt: Some(Attempt::Authorised(Box::new(request("jo@icb.test")))),
            ..Known::default()
        };
        assert!(matches!(route(&raw, known), Route::TriageReply { .. }));
    }
}
