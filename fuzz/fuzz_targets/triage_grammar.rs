//! A gatekeeper's reply text → the triage command grammar. Never panics; an error is a
//! reply the gatekeeper gets, never a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(reply) = gatehouse::triage::grammar::parse(&text)
        && let Some(command) = &reply.decision
    {
        let _ = command.decision();
        let _ = command.detail();
    }
    // The daemon strips quoted history first; fuzz that path too.
    let _ = gatehouse::triage::grammar::parse(&gatehouse::classify::strip_quoted(&text));
});
