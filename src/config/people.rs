//! `[gatekeepers]`, `[operator]`, `[organisations]`, `[members]` and `[acknowledgements]`:
//! who gatehouse writes to, who it trusts, and how often it may answer anyone.

use std::collections::BTreeMap;

use super::raw::{RawAcknowledgements, RawAddresses, RawMembers};
use super::{AcknowledgementSettings, ConfigError, Members, Source};
use crate::domain::EmailAddress;

/// `[gatekeepers] addresses`: the single point of access has one or two.
pub(super) fn gatekeepers(raw: &RawAddresses, src: &Source) -> Result<Vec<EmailAddress>, ConfigError> {
    let gatekeepers = addresses(&raw.addresses, "gatekeepers.addresses", src)?;
    if gatekeepers.is_empty() || gatekeepers.len() > 2 {
        return Err(src.err(
            "gatekeepers.addresses",
            format!(
                "{} addresses given; the single point of access has one or two gatekeepers",
                gatekeepers.len()
            ),
            "list one or two addresses",
        ));
    }
    Ok(gatekeepers)
}

/// `[organisations]`: an address or a domain each, keyed in lower case.
pub(super) fn organisations(
    raw: BTreeMap<String, String>,
    src: &Source,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut organisations = BTreeMap::new();
    for (key, name) in raw {
        let lower = key.trim().to_lowercase();
        let ok = if lower.contains('@') {
            EmailAddress::parse(&lower).is_ok()
        } else {
            EmailAddress::parse(&format!("x@{lower}")).is_ok()
        };
        if !ok {
            return Err(src.err(
                &format!("organisations.\"{key}\""),
                "not an email address or a domain".into(),
                "use a sender address (\"jo.bloggs@nhs.net\") or a domain (\"anytown-icb.example\")",
            ));
        }
        organisations.insert(lower, name);
    }
    Ok(organisations)
}

/// `[members]`: domains and addresses whose forwards speak for the original sender.
pub(super) fn members(raw: &RawMembers, src: &Source) -> Result<Members, ConfigError> {
    let mut domains = Vec::new();
    for d in &raw.domains {
        let domain = d.trim().trim_start_matches('@').to_lowercase();
        if domain.is_empty() || EmailAddress::parse_mailable(&format!("x@{domain}")).is_err() {
            return Err(src.err(
                "members.domains",
                format!("{d:?} is not a domain"),
                "list domains like \"anytown-pcn.nhs.uk\" (no @); put single people in members.addresses",
            ));
        }
        if !domains.contains(&domain) {
            domains.push(domain);
        }
    }
    Ok(Members { domains, addresses: addresses(&raw.addresses, "members.addresses", src)? })
}

/// `[acknowledgements]`: every value is usable as it is (0 sends none).
pub(super) fn acknowledgements(raw: &RawAcknowledgements) -> AcknowledgementSettings {
    AcknowledgementSettings {
        rate_limit_per_day: raw.rate_limit_per_day,
        domain_limit_per_day: raw.domain_limit_per_day,
        limit_per_hour: raw.limit_per_hour,
        acknowledge_forwarded: raw.acknowledge_forwarded,
    }
}

/// A list of addresses under `key`, duplicates dropped.
pub(super) fn addresses(list: &[String], key: &str, src: &Source) -> Result<Vec<EmailAddress>, ConfigError> {
    let mut out = Vec::new();
    for item in list {
        // gatehouse writes to these, so they must be addresses mail can be sent to.
        let address = EmailAddress::parse_mailable(item).map_err(|e| ConfigError {
            file: src.path.to_path_buf(),
            key: key.into(),
            problem: e.to_string(),
            fix: "write bare addresses like \"jane.doe@nhs.net\"".into(),
        })?;
        if !out.contains(&address) {
            out.push(address);
        }
    }
    Ok(out)
}
