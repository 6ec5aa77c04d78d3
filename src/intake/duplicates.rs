//! Probable duplicates: which open or recent request from the same requester or
//! organisation a new approach reads most like, so the gatekeeper sees it (and its
//! decision) before deciding again. The decision stays the gatekeeper's.
//!
//! A new approach is compared with up to 200 earlier ones. Their fingerprints are kept in
//! memory under each request's token, which is unique and never reused, and a request's
//! subject and text never change: so the cache can never be wrong, even about a request
//! whose transaction was rolled back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};

use crate::classify::{self, Fingerprint};
use crate::store::{Candidate, RequestId, Tx};

/// How similar two approaches must be to be shown to the gatekeeper as probably the same.
const THRESHOLD: f64 = 0.6;
/// Earlier requests the notification lists besides the probable duplicate.
const EARLIER_SHOWN: usize = 5;
/// Fingerprints kept in memory (about 1 KB each); when full, the cache starts again.
const CACHE_LIMIT: usize = 4096;

/// What an earlier request is compared by.
#[derive(Debug)]
struct Known {
    subject_key: String,
    fingerprint: Fingerprint,
}

/// What the notification shows about earlier approaches.
#[derive(Debug, Default)]
pub struct Found {
    /// The earlier request this one reads most like, if any reads enough alike.
    pub probable: Option<Candidate>,
    /// A few other recent requests from the same requester or organisation, newest first.
    pub earlier: Vec<Candidate>,
}

#[derive(Debug, Default)]
pub struct Duplicates {
    known: Mutex<HashMap<String, Arc<Known>>>,
}

impl Duplicates {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps a new request's text, so the approaches after it need not read it back.
    pub fn remember(&self, token: &str, subject: &str, fingerprint: Fingerprint) {
        let text = Known { subject_key: classify::normalise_subject(subject), fingerprint };
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if known.len() >= CACHE_LIMIT {
            known.clear();
        }
        known.insert(token.to_string(), Arc::new(text));
    }

    /// Looks among the requester's and the organisation's requests since `since` (and any
    /// still open) for the one that reads most like `subject` and `fingerprint`. The
    /// `earlier` ones are read only when `with_earlier` (a notification will show them).
    #[allow(clippy::too_many_arguments)]
    pub async fn find(
        &self,
        tx: &mut dyn Tx,
        requester: &str,
        organisation: Option<&str>,
        since: DateTime<Utc>,
        subject: &str,
        fingerprint: &Fingerprint,
        with_earlier: bool,
    ) -> anyhow::Result<Found> {
        let recent = tx.recent_requests(requester, organisation, since).await?;
        if recent.is_empty() {
            return Ok(Found::default());
        }
        let mut texts: Vec<Option<Arc<Known>>> = {
            let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
            recent.iter().map(|(_, token)| known.get(token).cloned()).collect()
        };
        let missing: Vec<String> = recent
            .iter()
            .zip(&texts)
            .filter(|(_, text)| text.is_none())
            .map(|((_, token), _)| token.clone())
            .collect();
        if !missing.is_empty() {
            let loaded: HashMap<String, Arc<Known>> = tx
                .request_texts(&missing)
                .await?
                .into_iter()
                .map(|t| {
                    let known = Known {
                        subject_key: classify::normalise_subject(&t.subject),
                        fingerprint: t.fingerprint,
                    };
                    (t.token, Arc::new(known))
                })
                .collect();
            for ((_, token), text) in recent.iter().zip(texts.iter_mut()) {
                if text.is_none() {
                    *text = loaded.get(token).cloned();
                }
            }
            let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
            if known.len() + loaded.len() > CACHE_LIMIT {
                known.clear();
            }
            known.extend(loaded);
        }

        let subject_key = classify::normalise_subject(subject);
        let mut best: Option<(f64, RequestId)> = None;
        for ((id, _), text) in recent.iter().zip(&texts) {
            // Ties go to the newest (the list is newest first): only a higher score wins, so
            // the floor rises with the best so far and nothing beats a perfect match.
            let floor = best.map_or(THRESHOLD, |(s, _)| s);
            if floor >= 1.0 {
                break;
            }
            let Some(text) = text else { continue };
            let same_subject = !subject_key.is_empty() && text.subject_key == subject_key;
            let score =
                if same_subject { Some(1.0) } else { fingerprint.similarity_from(&text.fingerprint, floor) };
            if let Some(score) = score
                && best.is_none_or(|(s, _)| score > s)
            {
                best = Some((score, *id));
            }
        }
        let best = best.map(|(_, id)| id);
        let shown = if with_earlier { EARLIER_SHOWN } else { 0 };
        let mut wanted: Vec<RequestId> =
            recent.iter().map(|(id, _)| *id).filter(|id| Some(*id) != best).take(shown).collect();
        wanted.extend(best);
        let mut shown = tx.candidates(&wanted).await?;
        let probable = best.and_then(|b| shown.iter().position(|c| c.id == b)).map(|i| shown.remove(i));
        Ok(Found { probable, earlier: shown })
    }
}
