//! A gatekeeper's whole reply email, as it arrives → `classify::parse` → `strip_quoted` on
//! its text → the triage grammar: the path `Intake::process` takes for an authorised
//! reply, without the store. Seeds are replies from Outlook, Gmail, Thunderbird and Apple
//! Mail with commands, text, notes and quoted notifications in every order. Never panics.
#![no_main]

use gatehouse::classify::{self, Context};
use gatehouse::triage::grammar;
use libfuzzer_sys::fuzz_target;

const OWN: &[&str] = &["gp-access@gatehouse.test"];

fuzz_target!(|data: &[u8]| {
    let own: Vec<String> = OWN.iter().map(|s| s.to_string()).collect();
    let ctx = Context { own_addresses: &own, own_message_id_domain: Some("gatehouse.test") };
    let Ok(parsed) = classify::parse(data, &ctx) else {
        return;
    };
    let text = classify::strip_quoted(&parsed.body_text);
    let Ok(reply) = grammar::parse(&text) else {
        return;
    };
    if let Some(command) = &reply.decision {
        let _ = command.decision();
        let _ = command.detail();
    }
    // What would go to the requester is part of what the gatekeeper wrote just now.
    assert!(text.len() >= reply.message.len(), "the message grew: {:?}", reply.message);
    // Command lines anywhere in the new text are commands, or the reply is refused: text for
    // the requester never holds one (a `note:` below the text would reach the requester).
    for line in reply.message.lines() {
        assert!(
            !grammar::is_command_line(line),
            "a command line in the text for the requester: {line:?} (reply {reply:?})"
        );
    }
});
