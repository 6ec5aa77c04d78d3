//! The inbox watcher against real Dovecot: every message logged once, with the right
//! requester, across restarts, reconnects and UIDVALIDITY changes.

use crate::helpers::TestApp;

#[tokio::test]
async fn a_new_approach_becomes_a_request_with_a_reference() {
    let app = TestApp::spawn().await;
    let partner = app.stack.user("jo.bloggs", "icb.test");
    app.stack
        .send(&partner, &app.shared, "Phlebotomy service from April", "Could practices take this on?")
        .await;
    app.wait_for_messages(1).await;
    let requests = app.cli_json(&["requests", "list", "--format", "json"]);
    let requests = requests.as_array().unwrap();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    let year = chrono::Utc::now().format("%Y").to_string();
    assert_eq!(r["reference"], format!("GP-{year}-0001"));
    assert_eq!(r["status"], "awaiting_triage");
    assert_eq!(r["requester"], partner.as_str());
    assert_eq!(r["requester_name"], "Test Sender");
    assert_eq!(r["organisation"], "Anytown ICB");
    assert_eq!(r["via"], serde_json::Value::Null);
    assert_eq!(r["subject"], "Phlebotomy service from April");
    assert_eq!(r["message_count"], 1);
    assert_eq!(r["priorities"], serde_json::json!([]));
}
