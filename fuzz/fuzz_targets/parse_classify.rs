//! Raw bytes as they arrive in the shared inbox → `classify::parse`, then everything the
//! daemon does with the result (src/intake/). Nothing here may panic, hang or
//! blow up memory, whatever the bytes.
#![no_main]

use gatehouse::classify::{self, Context};
use libfuzzer_sys::fuzz_target;

const OWN: &[&str] = &["gp-access@gatehouse.test"];
/// An earlier request's text, for the probable-duplicate score.
const EARLIER: &str = "Anytown ICB is inviting practices to host a phlebotomy service for \
    housebound patients from January. Funding of £12 per draw is available.";

fuzz_target!(|data: &[u8]| {
    let own: Vec<String> = OWN.iter().map(|s| s.to_string()).collect();
    let ctx = Context { own_addresses: &own, own_message_id_domain: Some("gatehouse.test") };
    // The dedup key is read straight from the raw bytes, parseable or not.
    let _ = gatehouse::inbox::dedup::message_id(data);
    let Ok(parsed) = classify::parse(data, &ctx) else {
        return;
    };
    let new_text = classify::strip_quoted(&parsed.body_text);
    let _ = classify::normalise_subject(&parsed.subject);
    let _ = classify::find_reference(&parsed.subject, "GP");
    let score = classify::similarity(&parsed.body_text, EARLIER);
    assert!((0.0..=1.0).contains(&score), "similarity out of range: {score}");
    let _ = classify::similarity(&new_text, &parsed.body_text);
    let _ = classify::forwarded_chain(&parsed);
    if let Some(fwd) = &parsed.forwarded {
        let _ = classify::strip_quoted(&fwd.body_text);
        let _ = classify::similarity(&fwd.body_text, &parsed.body_text);
    }
    // A gatekeeper's reply goes through the triage grammar after strip_quoted.
    let _ = gatehouse::triage::grammar::parse(&new_text);
    // Logging a message formats it.
    let _ = format!("{parsed:?}");
});
