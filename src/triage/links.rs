//! How a gatekeeper answers a notification or a digest: the shared address with the
//! request's token as a sub-address, and one `mailto:` link per decision that opens a reply
//! carrying it. What the links write is what [`super::grammar`] reads back.

use crate::config::Config;
use crate::domain::Decision;
use crate::templates::LinkView;

/// One `mailto:` link per decision, each opening a reply that carries the token.
pub fn decision_links(config: &Config, token: &str, reply_subject: &str) -> Vec<LinkView> {
    let reply_to = reply_address(config, token);
    Decision::ALL
        .iter()
        .map(|d| {
            let body = match d {
                Decision::Meeting | Decision::Paper | Decision::Message => d.command().to_string(),
                Decision::Duplicate => "duplicate GP-YYYY-NNNN".to_string(),
                other => format!("{}: ", other.command()),
            };
            let label = match d {
                Decision::MoreWork => "More work".to_string(),
                other => capitalise(other.command()),
            };
            LinkView { label, href: mailto(&reply_to, reply_subject, &format!("{body}\n\n")) }
        })
        .collect()
}

/// The shared address with the request's token as a sub-address
/// (`gp-access+TOKEN@nhs.net`): a plain reply carries it back.
pub fn reply_address(config: &Config, token: &str) -> String {
    let address = config.smtp.from.address.as_str();
    match address.split_once('@') {
        Some((local, domain)) => format!("{local}+{token}@{domain}"),
        None => address.to_string(),
    }
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A `mailto:` link with subject and body filled in (RFC 6068 percent-encoding).
pub fn mailto(to: &str, subject: &str, body: &str) -> String {
    format!("mailto:{}?subject={}&body={}", to, percent(subject), percent(body))
}

fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailto_links_are_percent_encoded() {
        assert_eq!(
            mailto("a+t@x.org", "Re: [GP-2026-0001] A & B", "decline: \n"),
            "mailto:a+t@x.org?subject=Re%3A%20%5BGP-2026-0001%5D%20A%20%26%20B&body=decline%3A%20%0A"
        );
    }
}
