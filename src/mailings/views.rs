//! A request as the templates see it, and how a requester is named: the one home for both,
//! so an acknowledgement, a notification, an outcome, the digest and the board's mail name
//! the same person the same way.
//!
//! A sender's chosen name is made safe by [`crate::domain::display_name`]; everything here
//! goes through it, so rows stored before names were cleaned show safely too.

use chrono::{DateTime, Utc};

use crate::classify::Attachment;
use crate::config::Config;
use crate::domain::{EmailAddress, display_name};
use crate::store::RequestRow;
use crate::templates::{AttachmentView, RequestView, human_size};

/// A requester's name fit to show, or none when there is no usable one (blank, only an
/// address, only invisible characters).
pub fn requester_name(name: Option<&str>) -> Option<String> {
    name.and_then(display_name)
}

/// How a requester (or any sender) is named wherever gatehouse shows one: "Jo Bloggs
/// <jo@icb.test>", or the bare address when there is no usable name.
pub fn requester_display(name: Option<&str>, address: &str) -> String {
    match requester_name(name) {
        Some(name) => format!("{name} <{address}>"),
        None => address.to_string(),
    }
}

/// How the board's mail names a requester: with the address only when
/// `[board] share_addresses` is set, otherwise the name alone, or nothing (the board can
/// include outside members).
pub fn board_requester(config: &Config, name: Option<&str>, address: &str) -> String {
    match config.board.share_addresses {
        true => requester_display(name, address),
        false => requester_name(name).unwrap_or_default(),
    }
}

/// What a [`RequestView`] is made from: a stored request, or one about to be stored.
#[derive(Debug, Clone)]
pub struct RequestFacts<'a> {
    pub reference: &'a str,
    pub subject: &'a str,
    pub requester: &'a str,
    pub requester_name: Option<&'a str>,
    pub organisation: Option<&'a str>,
    pub via: Option<&'a str>,
    pub received_at: DateTime<Utc>,
    pub status: &'a str,
    pub decision: Option<&'a str>,
    pub body: &'a str,
    pub message_count: i64,
}

impl<'a> RequestFacts<'a> {
    /// The facts of a stored request.
    pub fn from_row(r: &'a RequestRow) -> Self {
        Self {
            reference: &r.reference,
            subject: &r.subject,
            requester: &r.requester,
            requester_name: r.requester_name.as_deref(),
            organisation: r.organisation.as_deref(),
            via: r.via.as_deref(),
            received_at: r.received_at,
            status: r.status.as_str(),
            decision: r.decision.map(|d| d.as_str()),
            body: &r.body,
            message_count: r.message_count,
        }
    }
}

/// The request as templates see it, listing `attachments` (the message's at hand; none
/// when the request is read back from the store).
pub fn request_view(config: &Config, f: &RequestFacts<'_>, attachments: &[Attachment]) -> RequestView {
    RequestView {
        reference: f.reference.to_string(),
        subject: f.subject.to_string(),
        requester: f.requester.to_string(),
        requester_name: f.requester_name.map(str::to_string),
        requester_display: requester_display(f.requester_name, f.requester),
        organisation: f.organisation.map(str::to_string),
        via: f.via.map(str::to_string),
        received: f
            .received_at
            .with_timezone(&config.service.timezone)
            .format("%A %-d %B %Y, %H:%M")
            .to_string(),
        status: f.status.to_string(),
        decision: f.decision.map(str::to_string),
        body: f.body.to_string(),
        attachments: attachments
            .iter()
            .map(|a| AttachmentView {
                name: a.name.clone().unwrap_or_else(|| "(unnamed)".into()),
                content_type: a.content_type.clone(),
                size: human_size(a.size),
            })
            .collect(),
        message_count: f.message_count,
    }
}

/// A stored request as templates see it (no attachments: their bytes are not kept).
pub fn row_view(config: &Config, r: &RequestRow) -> RequestView {
    request_view(config, &RequestFacts::from_row(r), &[])
}

/// "Came via 3 doors: A, B, C" for a request that came through more than one, naming
/// each forwarder by organisation (as `[organisations]` names it) or else its domain, so
/// the board sees where it came from and no one's address.
pub fn came_via(config: &Config, first: Option<&str>, further: &[String]) -> Option<String> {
    if further.is_empty() {
        return None;
    }
    let name = |a: &str| match EmailAddress::parse(a) {
        Ok(address) => match config.organisation_for(&address) {
            Some(org) => org.to_string(),
            None => address.domain().to_string(),
        },
        Err(_) => "(unknown)".to_string(),
    };
    // A request its sender wrote to us themselves came first through the front door.
    let doors: Vec<String> = std::iter::once(first.map_or_else(|| "sent directly".to_string(), name))
        .chain(further.iter().map(|a| name(a)))
        .collect();
    Some(format!("Came via {} doors: {}", doors.len(), doors.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_requester_is_named_safely_or_by_address() {
        assert_eq!(requester_display(Some("Jo"), "jo@x.org"), "Jo <jo@x.org>");
        assert_eq!(requester_display(Some(" \" "), "jo@x.org"), "jo@x.org");
        assert_eq!(requester_display(Some("boss@nhs.net"), "jo@x.org"), "jo@x.org");
        assert_eq!(requester_name(Some("  ")), None);
        assert_eq!(requester_name(None), None);
    }
}
