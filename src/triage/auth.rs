//! Whether the receiving server we trust vouches for a gatekeeper's reply (`[triage]
//! authserv_id`): DMARC passed for the From domain, or DKIM passed with a signing domain
//! aligned with it. Anything else — a failure, `none`, `temperror`, Microsoft's
//! `bestguesspass`, or no header from that server — does not vouch, and the reply is refused.
//!
//! Only the trusted server's header is read: anyone can write `Authentication-Results` into
//! a message they send. A server names itself at the start of the header (its authserv-id,
//! `mx.example.org; dmarc=pass …`); the topmost header with that name is the one it stamped
//! on receipt (RFC 8601 asks servers to remove look-alikes from incoming mail, and a header
//! added on receipt sits above everything the sender wrote).
//!
//! Exchange Online (Microsoft 365, NHSmail) writes its header WITHOUT an authserv-id:
//!
//! ```text
//! Authentication-Results: spf=pass (sender IP is 1.2.3.4) smtp.mailfrom=nhs.net; dkim=pass
//!  (signature was verified) header.d=nhs.net;dmarc=pass action=none
//!  header.from=nhs.net;compauth=pass reason=100
//! ```
//!
//! `authserv_id = "exchange-online"` trusts that form: the topmost `Authentication-Results`
//! of the message, which Exchange stamps on receipt, and only when it carries no
//! authserv-id. `ARC-Authentication-Results` and `Authentication-Results-Original` (other
//! hops' results that Exchange keeps) are different headers and never read.

use anyhow::Context as _;

use crate::config::Config;
use crate::store::SharedStore;

/// The `authserv_id` value that means "Exchange Online's header, which has no authserv-id".
pub const EXCHANGE_ONLINE: &str = "exchange-online";

/// What the trusted server said about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It vouches: `dmarc=pass` or an aligned `dkim=pass` (named).
    Pass(String),
    /// Its header is there but does not vouch; the results it gave, e.g. "dmarc=fail".
    NotPassed(String),
    /// No header from it.
    Missing,
}

impl Verdict {
    /// Why a reply with this verdict is refused (`None` when it passes).
    pub fn refusal(&self, authserv: &str) -> Option<String> {
        let server = server_name(authserv);
        match self {
            Verdict::Pass(_) => None,
            Verdict::NotPassed(results) => Some(format!(
                "{server} does not vouch for the sender (it reports {results}; a decision needs dmarc=pass or an aligned dkim=pass)"
            )),
            Verdict::Missing => Some(format!(
                "the message carries no Authentication-Results from {server}, so it cannot be shown to come from the gatekeeper"
            )),
        }
    }
}

fn server_name(authserv: &str) -> String {
    if authserv.eq_ignore_ascii_case(EXCHANGE_ONLINE) {
        "Exchange Online".to_string()
    } else {
        authserv.to_string()
    }
}

/// The trusted server's verdict on the message `raw` whose From domain is `from_domain`.
pub fn verdict(authserv: &str, raw: &[u8], from_domain: &str) -> Verdict {
    let values: Vec<String> = crate::classify::headers::all(raw, "authentication-results").collect();
    let results = if authserv.eq_ignore_ascii_case(EXCHANGE_ONLINE) {
        values.first().filter(|v| authserv_id(v).is_none()).map(String::as_str)
    } else {
        values.iter().find_map(|v| {
            let id = authserv_id(v)?;
            id.eq_ignore_ascii_case(authserv).then(|| v.split_once(';').map_or("", |(_, rest)| rest))
        })
    };
    match results {
        Some(results) => judge(results, from_domain),
        None => Verdict::Missing,
    }
}

/// The authserv-id a header value starts with, if it has one: a first `;`-separated part
/// that is a name (optionally with a version), not a `method=result`.
fn authserv_id(value: &str) -> Option<&str> {
    let first = value.split(';').next().unwrap_or_default();
    let word = first.split_whitespace().next()?;
    (!word.contains('=')).then_some(word)
}

/// Reads `method=result property=value …` items separated by `;`.
fn judge(results: &str, from_domain: &str) -> Verdict {
    let results = without_comments(results);
    let from_domain = from_domain.to_ascii_lowercase();
    let mut seen: Vec<String> = Vec::new();
    let mut aligned_dkim = None;
    let mut dmarc_pass = None;
    for item in results.split(';') {
        let mut words = item.split_whitespace();
        let Some((method, result)) = words.next().and_then(|w| w.split_once('=')) else { continue };
        let (method, result) = (method.to_ascii_lowercase(), result.to_ascii_lowercase());
        let property = |name: &str| {
            item.split_whitespace()
                .filter_map(|w| w.split_once('='))
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim_matches('"').to_ascii_lowercase())
        };
        match method.as_str() {
            "dmarc" => {
                if result == "fail" {
                    return Verdict::NotPassed("dmarc=fail".into());
                }
                let about_sender = property("header.from").is_none_or(|d| d == from_domain);
                if result == "pass" && about_sender {
                    dmarc_pass = Some("dmarc=pass".to_string());
                }
            }
            "dkim" if result == "pass" => {
                let signer = property("header.d").or_else(|| {
                    property("header.i").map(|i| i.rsplit_once('@').map_or(i.clone(), |(_, d)| d.to_string()))
                });
                if let Some(d) = signer.filter(|d| aligned(d, &from_domain)) {
                    aligned_dkim = Some(format!("dkim=pass (header.d={d})"));
                }
            }
            _ => {}
        }
        if matches!(method.as_str(), "dmarc" | "dkim" | "spf") {
            seen.push(format!("{method}={result}"));
        }
    }
    match dmarc_pass.or(aligned_dkim) {
        Some(what) => Verdict::Pass(what),
        None if seen.is_empty() => Verdict::NotPassed("no DMARC or DKIM result".into()),
        None => Verdict::NotPassed(seen.join(", ")),
    }
}

/// Relaxed alignment without a public-suffix list: the signing domain is the From domain or
/// a parent of it that still has a dot (`nhs.net` for `x.nhs.net`, never `net`).
fn aligned(signer: &str, from_domain: &str) -> bool {
    let signer = signer.trim_end_matches('.');
    !signer.is_empty()
        && (signer == from_domain
            || (signer.contains('.') && from_domain.strip_suffix(signer).is_some_and(|p| p.ends_with('.'))))
}

/// The text without RFC 5322 comments (`(sender IP is 1.2.3.4)`), which may hold `;`.
fn without_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// What `gatehouse check` says about the recent mail from gatekeepers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survey {
    /// How many messages from gatekeepers were read (the most recent).
    pub read: usize,
    /// How many carried a header from the trusted server.
    pub stamped: usize,
    /// How many it vouched for.
    pub passed: usize,
}

/// Reads the trusted server's verdict on the last `limit` messages from gatekeepers in the
/// store, so an operator sees before relying on `authserv_id` whether their mail carries it.
pub async fn survey(config: &Config, store: &SharedStore, limit: usize) -> anyhow::Result<Option<Survey>> {
    let Some(authserv) = config.triage.authserv_id.as_deref() else {
        return Ok(None);
    };
    let messages = store.list_messages().await?;
    let mut survey = Survey { read: 0, stamped: 0, passed: 0 };
    for m in messages.iter().rev() {
        if survey.read >= limit {
            break;
        }
        let Some(from) = m.from.as_deref().and_then(|f| crate::domain::EmailAddress::parse(f).ok()) else {
            continue;
        };
        if !config.is_gatekeeper(&from) {
            continue;
        }
        let raw = store.raw_message(m.id).await.context("Cannot read a stored message")?;
        survey.read += 1;
        match verdict(authserv, &raw, from.domain()) {
            Verdict::Pass(_) => {
                survey.stamped += 1;
                survey.passed += 1;
            }
            Verdict::NotPassed(_) => survey.stamped += 1,
            Verdict::Missing => {}
        }
    }
    Ok(Some(survey))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(headers: &str) -> Vec<u8> {
        format!("{headers}From: Jane <jane.doe@nhs.net>\r\nSubject: Re: x\r\n\r\nAuthentication-Results: mx.nhs.net; dmarc=pass\r\n")
            .into_bytes()
    }

    #[test]
    fn exchange_online_headers_as_microsoft_writes_them() {
        let pass = "Authentication-Results: spf=pass (sender IP is 1.2.3.4)\r\n smtp.mailfrom=nhs.net; dkim=pass (signature was verified)\r\n header.d=nhs.net;dmarc=pass action=none\r\n header.from=nhs.net;compauth=pass reason=100\r\n";
        assert_eq!(verdict(EXCHANGE_ONLINE, &with(pass), "nhs.net"), Verdict::Pass("dmarc=pass".into()));
        let fail = "Authentication-Results: spf=softfail (sender IP is 5.6.7.8)\r\n smtp.mailfrom=nhs.net; dkim=none (message not signed)\r\n header.d=none;dmarc=fail action=oreject\r\n header.from=nhs.net;compauth=fail reason=000\r\n";
        assert_eq!(verdict(EXCHANGE_ONLINE, &with(fail), "nhs.net"), Verdict::NotPassed("dmarc=fail".into()));
        // No DMARC record: Microsoft guesses; a guess does not vouch.
        let guess = "Authentication-Results: spf=pass (sender IP is 1.2.3.4)\r\n smtp.mailfrom=practice.example; dkim=none (message not signed)\r\n header.d=none;dmarc=bestguesspass action=none\r\n header.from=practice.example;compauth=pass reason=109\r\n";
        assert!(
            matches!(verdict(EXCHANGE_ONLINE, &with(guess), "practice.example"), Verdict::NotPassed(r) if r.contains("bestguesspass"))
        );
        // Mail inside the same tenant is not checked at all.
        let internal = "Authentication-Results: dkim=none (message not signed)\r\n header.d=none;dmarc=none action=none header.from=nhs.net;\r\n";
        assert!(
            matches!(verdict(EXCHANGE_ONLINE, &with(internal), "nhs.net"), Verdict::NotPassed(r) if r.contains("dmarc=none"))
        );
        // An aligned DKIM pass without a DMARC pass (a subdomain signing for the parent's mail).
        let dkim = "Authentication-Results: spf=none; dkim=pass (signature was verified)\r\n header.d=nhs.net;dmarc=temperror action=none header.from=gp.nhs.net\r\n";
        assert_eq!(
            verdict(EXCHANGE_ONLINE, &with(dkim), "gp.nhs.net"),
            Verdict::Pass("dkim=pass (header.d=nhs.net)".into())
        );
        // Only the topmost header, and only without an authserv-id: a sender's own header
        // lower down, or someone else's server on top, is not Exchange's.
        let below =
            format!("Authentication-Results: mx.other.example; dmarc=pass header.from=nhs.net\r\n{pass}");
        assert_eq!(verdict(EXCHANGE_ONLINE, &with(&below), "nhs.net"), Verdict::Missing);
        assert_eq!(verdict(EXCHANGE_ONLINE, &with(""), "nhs.net"), Verdict::Missing);
        // The ARC copy is another header.
        let arc = "ARC-Authentication-Results: i=1; mx.microsoft.com 1; spf=pass smtp.mailfrom=nhs.net; dmarc=pass header.from=nhs.net\r\n";
        assert_eq!(verdict(EXCHANGE_ONLINE, &with(arc), "nhs.net"), Verdict::Missing);
    }

    #[test]
    fn a_named_server_must_vouch_not_merely_not_fail() {
        let v = |h: &str| verdict("mx.gatehouse.test", &with(h), "nhs.net");
        assert_eq!(
            v(
                "Authentication-Results: mx.gatehouse.test;\r\n\tdmarc=pass (p=reject dis=none) header.from=nhs.net\r\n"
            ),
            Verdict::Pass("dmarc=pass".into())
        );
        assert_eq!(
            v(
                "Authentication-Results: MX.Gatehouse.Test 1; dkim=pass header.d=nhs.net header.s=s1; dmarc=none\r\n"
            ),
            Verdict::Pass("dkim=pass (header.d=nhs.net)".into())
        );
        assert_eq!(
            v("Authentication-Results: mx.gatehouse.test; dmarc=fail header.from=nhs.net\r\n"),
            Verdict::NotPassed("dmarc=fail".into())
        );
        assert_eq!(
            v(
                "Authentication-Results: mx.gatehouse.test; dmarc=temperror header.from=nhs.net; dkim=pass header.d=evil.example\r\n"
            ),
            Verdict::NotPassed("dmarc=temperror, dkim=pass".into())
        );
        assert_eq!(
            v("Authentication-Results: mx.gatehouse.test; none\r\n"),
            Verdict::NotPassed("no DMARC or DKIM result".into())
        );
        // Another domain's pass, or a signature by a bare top-level domain, is not the sender's.
        assert!(matches!(
            v("Authentication-Results: mx.gatehouse.test; dmarc=pass header.from=evil.example\r\n"),
            Verdict::NotPassed(_)
        ));
        assert!(matches!(
            v("Authentication-Results: mx.gatehouse.test; dkim=pass header.d=net\r\n"),
            Verdict::NotPassed(_)
        ));
        assert!(matches!(
            v("Authentication-Results: mx.gatehouse.test; dkim=pass header.d=hs.net\r\n"),
            Verdict::NotPassed(_)
        ));
        // Another server's header, or none at all: missing.
        assert_eq!(
            v("Authentication-Results: mx.evil.example; dmarc=pass header.from=nhs.net\r\n"),
            Verdict::Missing
        );
        assert_eq!(v(""), Verdict::Missing);
        // The topmost header from our server is the one it stamped.
        assert_eq!(
            v(
                "Authentication-Results: mx.gatehouse.test; dmarc=fail header.from=nhs.net\r\nAuthentication-Results: mx.gatehouse.test; dmarc=pass header.from=nhs.net\r\n"
            ),
            Verdict::NotPassed("dmarc=fail".into())
        );
    }

    #[test]
    fn alignment_is_the_domain_or_a_parent_with_a_dot() {
        assert!(aligned("nhs.net", "nhs.net"));
        assert!(aligned("nhs.net", "gp.nhs.net"));
        assert!(!aligned("gp.nhs.net", "nhs.net"));
        assert!(!aligned("hs.net", "nhs.net"));
        assert!(!aligned("net", "nhs.net"));
        assert!(!aligned("", "nhs.net"));
    }
}
