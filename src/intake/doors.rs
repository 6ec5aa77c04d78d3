//! One approach, many doors: practices and PCNs each forward the same approach to the
//! shared address, and gatehouse keeps it one request. [`same_approach`] finds the request
//! a forward is another copy of — by the forwarded original's Message-ID when the copy
//! carries it (an attached message/rfc822), else by the same original sender and the same
//! text within [`DOOR_WINDOW_DAYS`] (inline forwards carry no Message-ID). Whether the copy
//! may join that request (only a member's forward the server vouched for) is
//! [`super::route::decide`]'s; `mailings::views::came_via` is how the doors are shown.

use chrono::{DateTime, Utc};

use super::Prepared;
use crate::domain::EmailAddress;
use crate::store::{RequestRow, Tx};

/// How long after the first copy a further copy of the same text still counts as the same
/// approach (forwards of one email arrive over days; the same words a season later are a
/// new approach, flagged as a probable duplicate instead).
pub const DOOR_WINDOW_DAYS: i64 = 28;

/// How alike the forwarded texts must be to be the same approach without a Message-ID:
/// stricter than a probable duplicate, since nothing is left for a gatekeeper to judge.
const SAME_TEXT: f64 = 0.8;

/// The request already logged for the approach this message forwards, if any: of the same
/// original sender, not anonymised, received within [`DOOR_WINDOW_DAYS`], and either
/// holding the forwarded Message-ID or reading like the forwarded text. Reads only.
pub async fn same_approach(
    tx: &mut dyn Tx,
    prepared: &Prepared,
    from: &EmailAddress,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<RequestRow>> {
    let parsed = &prepared.parsed;
    let Some(forwarded) = parsed.forwarded.as_ref().filter(|_| parsed.from_ambiguous.is_none()) else {
        return Ok(None);
    };
    let Ok(original) = EmailAddress::parse(&forwarded.from.address) else {
        return Ok(None);
    };
    if original == *from {
        return Ok(None);
    }
    let since = now - chrono::Duration::days(DOOR_WINDOW_DAYS);
    // A claimed Message-ID alone is not enough: the request must also be the forwarded
    // sender's, so a forward cannot join a request by quoting an id it picked up elsewhere.
    // Nor is a request logged from an unverified forward anyone's door: a stranger who
    // forwarded the approach first would otherwise collect the members' real copies (and
    // their outcome goes to that stranger only).
    let same = |r: &RequestRow| {
        !r.is_anonymised()
            && !r.requester_unverified
            && r.received_at >= since
            && EmailAddress::parse(&r.requester).is_ok_and(|r| r.person() == original.person())
    };
    if let Some(id) = &forwarded.message_id
        && let Some(request) = tx.request_for_thread(std::slice::from_ref(id)).await?
        && same(&request)
    {
        return Ok(Some(request));
    }
    let Some(fingerprint) = &prepared.fingerprint else {
        return Ok(None);
    };
    let recent = tx.recent_requests(original.as_str(), None, since).await?;
    if recent.is_empty() {
        return Ok(None);
    }
    let tokens: Vec<String> = recent.into_iter().map(|(_, token)| token).collect();
    let mut alike: Vec<(f64, String)> = Vec::new();
    for text in tx.request_texts(&tokens).await? {
        if let Some(score) = fingerprint.similarity_from(&text.fingerprint, SAME_TEXT) {
            alike.push((score, text.token));
        }
    }
    // The most alike that may be joined: an equally alike request that may not (an
    // unverified forward of the same text) must not hide the one that may.
    alike.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (_, token) in alike {
        if let Some(request) = tx.request_by_token(&token).await?.filter(same) {
            return Ok(Some(request));
        }
    }
    Ok(None)
}
