//! One handler per [`Route`]: each writes, inside the message's transaction, exactly what its
//! route causes — the message's outcome always, and as the route needs a request, events,
//! thread ids, emails to the outbox. Nothing here decides where a message goes; that was
//! settled by [`super::route`].

use chrono::{DateTime, Utc};

use super::route::Route;
use super::{Intake, Prepared};
use crate::classify::Parsed;
use crate::domain::{Classification, EmailAddress};
use crate::mailings::requester_display;
use crate::store::{MessageId, MessageOutcome, Tx};

mod another_door;
mod follow_up;
mod logged;
mod new_request;
pub mod quarantine;
mod triage;

/// The stored message being acted on, and when.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// Its id in the store.
    pub id: MessageId,
    pub raw: &'a [u8],
    /// The backlog found at first start: logged as requests, never answered.
    pub log_only: bool,
    /// When the mailbox received it, if the server said.
    pub internal_date: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
}

impl Message<'_> {
    /// When it arrived: the mailbox's date, else now.
    fn received_at(&self) -> DateTime<Utc> {
        self.internal_date.unwrap_or(self.now)
    }
}

impl Intake {
    /// Writes the effects of `route` for `message` (`prepared`: what parsing made of it, for
    /// every route but the unlogged ones).
    pub(super) async fn act(
        &self,
        tx: &mut dyn Tx,
        message: &Message<'_>,
        prepared: Option<&Prepared>,
        route: Route,
    ) -> anyhow::Result<Classification> {
        let Some(prepared) = prepared else {
            let Route::Unlogged(why) = route else {
                anyhow::bail!("Message {} was routed without being parsed", message.id);
            };
            return self.unlogged(tx, message, &why).await;
        };
        let parsed = &prepared.parsed;
        match route {
            Route::Unlogged(why) => self.unlogged(tx, message, &why).await,
            Route::Automated { reason } => self.automated(tx, message, parsed, reason, None).await,
            Route::Bounce { reason, bounce } => {
                self.automated(tx, message, parsed, reason, Some(bounce)).await
            }
            Route::TriageReply { request, from } => {
                self.triage_reply(tx, message, parsed, &request, &from).await
            }
            Route::TriageRefused { reason, request, from } => {
                self.triage_refused(tx, message, parsed, &reason, request.as_deref(), &from).await
            }
            Route::FollowUp { request, from, stranger } => {
                self.follow_up(tx, message, parsed, &request, &from, stranger).await
            }
            Route::NewRequest(approach) => {
                self.new_request(tx, message, prepared, &approach, Classification::New).await
            }
            Route::Forward(approach) => {
                self.new_request(tx, message, prepared, &approach, Classification::Forwarded).await
            }
            Route::AnotherDoor { request, approach } => {
                self.another_door(tx, message, parsed, &request, &approach).await
            }
        }
    }
}

/// What is recorded of a parsed message whatever its route; each handler sets its
/// classification, detail and request.
fn outcome(parsed: &Parsed, received_at: DateTime<Utc>) -> anyhow::Result<MessageOutcome> {
    let from = parsed.from.as_ref().and_then(|m| EmailAddress::parse(&m.address).ok());
    let attachments: Vec<_> = parsed
        .attachments
        .iter()
        .map(|a| serde_json::json!({"name": a.name, "content_type": a.content_type, "size": a.size}))
        .collect();
    Ok(MessageOutcome {
        classification: Classification::New,
        received_at: Some(received_at),
        from_address: from.as_ref().map(ToString::to_string),
        from_name: parsed.from.as_ref().and_then(|m| m.name.clone()),
        subject: Some(parsed.subject.clone()),
        attachments: Some(serde_json::to_string(&attachments)?),
        detail: None,
        request_id: None,
    })
}

/// The sender as requesters are named (display name, else address).
fn sender_display(parsed: &Parsed, from: &EmailAddress) -> String {
    requester_display(parsed.from.as_ref().and_then(|m| m.name.as_deref()), from.as_str())
}
