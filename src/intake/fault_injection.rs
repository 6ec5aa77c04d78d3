//! Test-only faults, compiled only with the `fault-injection` feature (which only the tests'
//! build turns on), so that the tests can make one message fail every time it is processed,
//! as a poisoned message would. A message carrying `X-Gatehouse-Test-Fault: fail TOKEN`
//! fails to process, and one carrying `panic TOKEN` panics half-way (its attempt cut short,
//! as a crash would cut it), until the test calls [`fix`] for TOKEN, as an upgrade would.

use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex};

static FIXED: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);
static RUNS: LazyLock<Mutex<HashMap<String, u32>>> = LazyLock::new(Mutex::default);

/// Fails (or panics) as the message's fault header asks, unless its token was fixed.
pub fn check(raw: &[u8]) -> anyhow::Result<()> {
    let Some(value) = crate::classify::headers::first(raw, "x-gatehouse-test-fault") else {
        return Ok(());
    };
    let Some((kind, token)) = value.trim().split_once(' ') else { return Ok(()) };
    let token = token.trim().to_string();
    if let Ok(mut runs) = RUNS.lock() {
        *runs.entry(token.clone()).or_default() += 1;
    }
    if FIXED.lock().is_ok_and(|fixed| fixed.contains(&token)) {
        return Ok(());
    }
    match kind {
        "fail" => anyhow::bail!("injected fault {token}"),
        "panic" => panic!("injected crash {token}"),
        _ => Ok(()),
    }
}

/// From now on, messages with `token` process normally.
pub fn fix(token: &str) {
    if let Ok(mut fixed) = FIXED.lock() {
        fixed.insert(token.to_string());
    }
}

/// How many times processing reached a message with `token`.
pub fn runs(token: &str) -> u32 {
    RUNS.lock().ok().and_then(|r| r.get(token).copied()).unwrap_or(0)
}
