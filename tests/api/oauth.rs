//! OAuth2 (XOAUTH2) against the real Dovecot and Postfix of the local stack.
//!
//! Dovecot checks every bearer token with the stack's OAuth2 stand-in
//! (`deploy/local/oauth2-standin`, the one stand-in: Microsoft's token endpoint cannot exist
//! here), and Postfix submission authenticates through Dovecot, so both IMAP and SMTP
//! really verify the tokens gatehouse gets. Each test registers its own OAuth client with
//! the stand-in and changes only that client (lifetimes, revocation, errors, outages), so
//! the tests run in parallel.

use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use gatehouse::oauth::http;
use serde_json::{Value, json};

use crate::helpers::{Options, Proxy, TestApp, header, rand_suffix, readable, wait_until};

const SECRET: &str = "stand-in-client-secret";

/// One test's OAuth client at the stand-in.
struct Client {
    id: String,
    base: String,
}

impl Client {
    async fn register(username: &str, lifetime_secs: f64) -> Client {
        let base = crate::helpers::stack().oauth_url.clone();
        let id = format!("gh-test-{}", rand_suffix());
        let c = Client { id: id.clone(), base };
        c.admin(
            "/admin/client",
            json!({"client_id": id, "client_secret": SECRET, "username": username, "lifetime": lifetime_secs}),
        )
        .await;
        c
    }

    async fn admin(&self, path: &str, body: Value) -> Value {
        let r = http::request(
            http::Method::POST,
            &format!("{}{path}", self.base),
            Some(("application/json", body.to_string().into_bytes())),
            Duration::from_secs(10),
            None,
        )
        .await
        .expect("the OAuth2 stand-in answers");
        assert_eq!(r.status, 200, "stand-in {path}: {}", r.snippet());
        serde_json::from_slice(&r.body).unwrap()
    }

    async fn set(&self, changes: Value) -> Value {
        self.admin(&format!("/admin/client/{}", self.id), changes).await
    }

    async fn revoke(&self) -> Value {
        self.admin(&format!("/admin/client/{}/revoke", self.id), json!({})).await
    }

    async fn state(&self) -> Value {
        let r = http::request(
            http::Method::GET,
            &format!("{}/admin/client/{}", self.base, self.id),
            None,
            Duration::from_secs(10),
            None,
        )
        .await
        .expect("the OAuth2 stand-in answers");
        serde_json::from_slice(&r.body).unwrap()
    }

    fn token_endpoint(&self) -> String {
        format!("{}/{{tenant}}/oauth2/v2.0/token", self.base)
    }
}

/// What to put in the config besides the [imap.oauth2] table.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Smtp {
    /// SMTP logs in with XOAUTH2 too, sharing [imap.oauth2].
    XOAuth2,
    /// SMTP keeps its password, so alerts still go out when the OAuth2 app is broken.
    Password,
}

/// Rewrites a test app's config for XOAUTH2 with the given [imap.oauth2] table.
fn use_oauth(app: &TestApp, table: &str, smtp: Smtp, imap_port: Option<u16>) {
    let text = std::fs::read_to_string(&app.config_path).unwrap();
    let smtp_at = text.find("[smtp]").unwrap();
    let (imap_part, smtp_part) = text.split_at(smtp_at);
    let mut imap_part = imap_part.replace("password_file = \"imap.password\"", "auth = \"xoauth2\"");
    if let Some(port) = imap_port {
        let line = imap_part.lines().find(|l| l.starts_with("port = ")).unwrap().to_string();
        imap_part = imap_part.replace(&line, &format!("port = {port}"));
    }
    let smtp_part = match smtp {
        Smtp::XOAuth2 => smtp_part.replace("password_file = \"imap.password\"", "auth = \"xoauth2\""),
        Smtp::Password => smtp_part.to_string(),
    };
    std::fs::write(&app.config_path, format!("{imap_part}{smtp_part}\n[imap.oauth2]\n{table}\n")).unwrap();
    app.config(); // must load
}

fn app_table(client: &Client, extra: &str) -> String {
    format!(
        "flow = \"client_credentials\"\ntenant = \"gatehouse-test\"\nclient_id = \"{}\"\nclient_secret_file = \"client.secret\"\ntoken_endpoint = \"{}\"\ntimeout_secs = 10\n{extra}",
        client.id,
        client.token_endpoint()
    )
}

async fn oauth_app(lifetime_secs: f64, smtp: Smtp, imap_port: Option<u16>, extra: &str) -> (TestApp, Client) {
    let app = TestApp::new(Options::default()).await;
    let client = Client::register(&app.shared, lifetime_secs).await;
    std::fs::write(app.dir.path().join("client.secret"), format!("{SECRET}\n")).unwrap();
    use_oauth(&app, &app_table(&client, extra), smtp, imap_port);
    (app, client)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn status(app: &TestApp) -> Value {
    let out = app.cli(&["status", "--format", "json"]);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// Messages in `address` whose subject says gatehouse cannot log in.
fn login_alerts(app: &TestApp, address: &str) -> Vec<String> {
    app.stack
        .mailbox(address)
        .iter()
        .filter(|m| header(m, "Subject").is_some_and(|s| s.contains("cannot log in")))
        .map(|m| readable(m))
        .collect()
}

#[tokio::test]
async fn check_and_the_daemon_log_in_to_imap_and_smtp_with_xoauth2() {
    let (mut app, client) = oauth_app(3600.0, Smtp::XOAuth2, None, "").await;
    let out = app.cli(&["check"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "check failed:\n{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("OAuth2 OK ([imap.oauth2] client_credentials, app {}", client.id)),
        "{stdout}"
    );
    assert!(stdout.lines().any(|l| l.starts_with("IMAP OK") && l.contains("(XOAUTH2)")), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("SMTP OK") && l.contains("XOAUTH2")), "{stdout}");
    // One token served the IMAP and SMTP checks; Dovecot asked about it for each login.
    let s = client.state().await;
    assert_eq!(s["tokens_issued"], 1, "{s}");
    assert!(s["introspections"].as_u64().unwrap() >= 2, "{s}");

    app.start().await;
    let partner = app.stack.user("oauth-partner", "icb.test");
    app.stack.send(&partner, &app.shared, "Community pharmacy pilot", "Could the group discuss this?").await;
    let rows = app.wait_for_messages(1).await;
    assert_eq!(rows[0].classification.map(|c| c.as_str()), Some("new"));
    // The acknowledgement went through Postfix submission, which only lets it through
    // after Dovecot accepted the token: there is no password in this config.
    let ack = app.stack.wait_for_mail(&partner, 1).await.remove(0);
    assert!(header(&ack, "Subject").unwrap().contains("GP-"), "{}", readable(&ack));
    app.stop().await;
}

#[tokio::test]
async fn tokens_expiring_mid_run_are_renewed_without_losing_mail() {
    // Tokens last 3 s, so the daemon renews them (and starts new IMAP sessions and SMTP
    // transports with them) many times while mail keeps arriving.
    let (mut app, client) = oauth_app(3.0, Smtp::XOAuth2, None, "").await;
    app.start().await;
    let partners =
        app.stack.users(&[("expiry-a", "icb.test"), ("expiry-b", "trust.test"), ("expiry-c", "icb.test")]);
    for (i, partner) in partners.iter().enumerate() {
        app.stack
            .send(partner, &app.shared, &format!("Approach {i} across token renewals"), "Please log me")
            .await;
        app.wait_for_messages(i + 1).await;
        // Let at least one more token expire before the next message arrives.
        let issued = client.state().await["tokens_issued"].as_u64().unwrap();
        wait_until("a renewed token", || {
            let client = &client;
            async move { (client.state().await["tokens_issued"].as_u64()? > issued + 1).then_some(()) }
        })
        .await;
    }
    let rows = app.wait_for_messages(3).await;
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|m| m.classification.map(|c| c.as_str()) == Some("new")));
    for partner in &partners {
        app.stack.wait_for_mail(partner, 1).await;
    }
    app.wait_for_outbox_drain().await;
    let s = client.state().await;
    assert!(s["tokens_issued"].as_u64().unwrap() >= 4, "{s}");
    let v = status(&app).await;
    assert!(matches!(v["imap"].as_str(), Some("idle" | "connecting")), "{v}");
    assert_eq!(v["outbox_failed"], 0, "{v}");
    assert!(login_alerts(&app, &app.gatekeeper).is_empty(), "renewal must not look like a failure");
    app.stop().await;
}

#[tokio::test]
async fn a_token_revoked_early_is_replaced_on_the_servers_refusal() {
    let proxy = Proxy::start(crate::helpers::stack().imap_port).await;
    let (mut app, client) = oauth_app(3600.0, Smtp::XOAuth2, Some(proxy.port), "").await;
    app.start().await;
    assert_eq!(client.state().await["tokens_issued"], 1);
    // An admin revokes the token an hour early; the daemon only finds out when the
    // servers refuse it (the cut connection makes IMAP log in again).
    client.revoke().await;
    proxy.cut();
    let partner = app.stack.user("revoked-early", "icb.test");
    app.stack.send(&partner, &app.shared, "After the revocation", "Still logged?").await;
    app.wait_for_messages(1).await;
    app.stack.wait_for_mail(&partner, 1).await;
    let s = client.state().await;
    assert!(s["tokens_issued"].as_u64().unwrap() >= 2, "{s}");
    assert!(login_alerts(&app, &app.gatekeeper).is_empty());
    app.stop().await;
}

#[tokio::test]
async fn revoked_credentials_are_reported_by_step_in_status_check_and_to_the_gatekeeper() {
    let proxy = Proxy::start(crate::helpers::stack().imap_port).await;
    let (mut app, client) = oauth_app(3600.0, Smtp::Password, Some(proxy.port), "").await;
    app.start().await;
    // The app's secret expires and its tokens are revoked.
    client
        .set(json!({"token_error": {"status": 401, "error": "invalid_client",
            "error_description": "AADSTS7000222: The provided client secret keys for app are expired."}}))
        .await;
    client.revoke().await;
    proxy.cut();
    wait_until("status auth_failed", || {
        let app = &app;
        async move { (status(app).await["imap"] == "auth_failed").then_some(()) }
    })
    .await;
    let v = status(&app).await;
    let detail = v["imap_detail"].as_str().unwrap();
    assert!(detail.contains("client credentials"), "{detail}");
    assert!(detail.contains("AADSTS7000222"), "{detail}");
    assert!(detail.contains("Certificates & secrets"), "{detail}");

    // The gatekeeper hears of it (mail still goes out: SMTP has its own login here).
    let alert = wait_until("the gatekeeper's alert", || {
        let alerts = login_alerts(&app, &app.gatekeeper);
        async move { alerts.into_iter().next() }
    })
    .await;
    assert!(alert.contains("client credentials"), "{alert}");
    assert!(alert.contains(&client.id), "{alert}");
    assert!(!alert.contains(SECRET), "the alert leaked the client secret");

    let out = app.cli(&["check"]);
    let stdout = text(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    let line = stdout.lines().find(|l| l.starts_with("OAuth2")).unwrap();
    assert!(line.starts_with("OAuth2 FAILED ([imap.oauth2] client_credentials"), "{stdout}");
    assert!(line.contains("OAuth2 failed (client credentials)"), "{line}");
    assert!(line.contains("expired"), "{line}");
    assert!(stdout.contains("SMTP OK"), "SMTP's own login is unaffected: {stdout}");
    assert!(!stdout.contains(SECRET));
    app.stop().await;
}

#[tokio::test]
async fn check_names_missing_consent_and_missing_mailbox_permission() {
    let (app, client) = oauth_app(3600.0, Smtp::XOAuth2, None, "").await;
    client
        .set(json!({"token_error": {"status": 400, "error": "invalid_grant",
            "error_description": "AADSTS65001: The user or administrator has not consented to use the application."}}))
        .await;
    let stdout = text(&app.cli(&["check"]).stdout);
    assert!(stdout.contains("OAuth2 failed (consent)"), "{stdout}");
    assert!(stdout.contains("Grant admin consent"), "{stdout}");

    // Tokens are issued, but the app has no right to this mailbox.
    client.set(json!({"token_error": null, "mailbox_access": false})).await;
    let out = app.cli(&["check"]);
    let stdout = text(&out.stdout);
    assert!(!out.status.success());
    assert!(stdout.contains("OAuth2 OK"), "{stdout}");
    let imap = stdout.lines().find(|l| l.starts_with("IMAP")).unwrap();
    assert!(imap.starts_with("IMAP FAILED: OAuth2 failed (mailbox permission)"), "{stdout}");
    assert!(imap.contains("Add-MailboxPermission"), "{imap}");
    let smtp = stdout.lines().find(|l| l.starts_with("SMTP")).unwrap();
    assert!(smtp.starts_with("SMTP FAILED: OAuth2 failed (mailbox permission)"), "{stdout}");
}

#[tokio::test]
async fn a_token_endpoint_that_is_down_delays_mail_but_loses_none() {
    // Nothing listens on port 1: check says the token endpoint cannot be reached.
    let (app, _) = oauth_app(3600.0, Smtp::XOAuth2, None, "").await;
    let text_now = std::fs::read_to_string(&app.config_path).unwrap();
    let unreachable = text_now.replace(&crate::helpers::stack().oauth_url, "http://127.0.0.1:1");
    std::fs::write(&app.config_path, &unreachable).unwrap();
    let out = app.cli(&["check"]);
    let stdout = text(&out.stdout);
    assert!(!out.status.success());
    let line = stdout.lines().find(|l| l.starts_with("OAuth2")).unwrap();
    assert!(line.contains("OAuth2 failed (token endpoint)"), "{line}");
    assert!(line.contains("127.0.0.1:1"), "{line}");
    drop(app);

    // Mid-run, the endpoint answers 503 while the 3 s tokens run out: the daemon cannot log
    // in again until it is back, and then catches up.
    let (mut app, client) = oauth_app(3.0, Smtp::XOAuth2, None, "").await;
    app.start().await;
    client.set(json!({"down": true})).await;
    let detail = wait_until("status down, naming the token endpoint", || {
        let app = &app;
        async move {
            let v = status(app).await;
            let detail = v["imap_detail"].as_str()?.to_string();
            (v["imap"] == "down" && detail.contains("token endpoint")).then_some(detail)
        }
    })
    .await;
    assert!(detail.contains("503"), "{detail}");
    let partner = app.stack.user("outage", "icb.test");
    app.stack.send(&partner, &app.shared, "Sent during the outage", "Hello").await;
    assert!(app.store.list_messages().await.unwrap().is_empty());
    client.set(json!({"down": false})).await;
    app.wait_for_messages(1).await;
    app.stack.wait_for_mail(&partner, 1).await;
    assert!(login_alerts(&app, &app.gatekeeper).is_empty(), "an outage is not a refused login");
    app.stop().await;
}

#[tokio::test]
async fn delegated_sign_in_saves_a_private_refresh_token_that_rotates_and_survives_restarts() {
    let app = TestApp::new(Options::default()).await;
    let client = Client::register(&app.shared, 3.0).await;
    let table = format!(
        "flow = \"refresh_token\"\ntenant = \"organizations\"\nclient_id = \"{id}\"\ntoken_endpoint = \"{base}/{{tenant}}/oauth2/v2.0/token\"\ndevice_code_endpoint = \"{base}/{{tenant}}/oauth2/v2.0/devicecode\"",
        id = client.id,
        base = client.base
    );
    use_oauth(&app, &table, Smtp::XOAuth2, None);
    let mut app = app;
    let file = app.dir.path().join(format!("data/oauth2-{}.refresh_token", client.id));

    // Before signing in, check says what to do.
    let stdout = text(&app.cli(&["check"]).stdout);
    assert!(
        stdout.contains("OAuth2 failed (refresh token)") && stdout.contains("gatehouse oauth login"),
        "{stdout}"
    );

    // `gatehouse oauth login` shows the code; the user signs in with it elsewhere.
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("--config")
        .arg(&app.config_path)
        .args(["oauth", "login"])
        .env_remove("GATEHOUSE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let code = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        let line = lines.by_ref().map_while(Result::ok).find(|l| l.contains("enter the code")).unwrap();
        let code =
            line.split("enter the code ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
        (code, lines)
    })
    .await
    .unwrap();
    let (code, rest) = code;
    client.admin(&format!("/admin/device/{code}/approve"), json!({})).await;
    let out = tokio::task::spawn_blocking(move || {
        let tail: Vec<String> = rest.map_while(Result::ok).collect();
        (child.wait().unwrap(), tail)
    })
    .await
    .unwrap();
    assert!(out.0.success(), "oauth login failed: {:?}", out.1);
    assert!(out.1.iter().any(|l| l.contains("Signed in")), "{:?}", out.1);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let first = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert_eq!(client.state().await["current_refresh_token"], first.as_str());

    // The daemon renews (3 s tokens), each renewal rotating the refresh token on disk.
    app.start().await;
    let partner = app.stack.user("delegated", "icb.test");
    app.stack.send(&partner, &app.shared, "Delegated access", "Hello").await;
    app.wait_for_messages(1).await;
    app.stack.wait_for_mail(&partner, 1).await;
    wait_until("two refreshes", || {
        let client = &client;
        async move { (client.state().await["refreshes"].as_u64()? >= 2).then_some(()) }
    })
    .await;
    app.stop().await;
    let saved = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert_ne!(saved, first, "the rotated refresh token was not saved");
    assert_eq!(client.state().await["current_refresh_token"], saved.as_str(), "the file holds the live one");

    // After a restart the saved token still works.
    app.start().await;
    let partner2 = app.stack.user("delegated-2", "icb.test");
    app.stack.send(&partner2, &app.shared, "After the restart", "Hello again").await;
    app.wait_for_messages(2).await;
    app.stack.wait_for_mail(&partner2, 1).await;
    app.stop().await;
}

#[tokio::test]
async fn a_token_command_supplies_the_token() {
    let app = TestApp::new(Options::default()).await;
    let client = Client::register(&app.shared, 3600.0).await;
    // A helper script in the style of isync's PassCmd helpers: prints only the token.
    let script = app.dir.path().join("get-token");
    std::fs::write(
        &script,
        format!(
            "#!/usr/bin/env python3\nimport json, urllib.parse, urllib.request\nform = urllib.parse.urlencode({{'grant_type': 'client_credentials', 'client_id': '{id}', 'client_secret': '{SECRET}', 'scope': 'x'}}).encode()\nprint(json.load(urllib.request.urlopen('{base}/t/oauth2/v2.0/token', form))['access_token'])\n",
            id = client.id,
            base = client.base
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
    use_oauth(
        &app,
        &format!("flow = \"token_command\"\ncommand = \"{}\"", script.display()),
        Smtp::XOAuth2,
        None,
    );
    let out = app.cli(&["check"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("OAuth2 OK ([imap.oauth2] token_command: token obtained)"), "{stdout}");
    assert!(stdout.contains("IMAP OK") && stdout.contains("SMTP OK"), "{stdout}");

    std::fs::write(&script, "#!/bin/sh\necho 'vault is sealed' >&2\nexit 2\n").unwrap();
    let stdout = text(&app.cli(&["check"]).stdout);
    assert!(
        stdout.contains("OAuth2 failed (token command)") && stdout.contains("vault is sealed"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_client_secret_near_expiry_is_warned_about_once_a_day() {
    let today = chrono::Utc::now().with_timezone(&chrono_tz::Europe::London).date_naive();
    let expires = today + chrono::Duration::days(3);
    let port = crate::monitoring::free_port();
    let extra = format!("secret_expires = \"{expires}\"\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"");
    let (mut app, client) = oauth_app(3600.0, Smtp::XOAuth2, None, &extra).await;
    let out = app.cli(&["check"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "a warning is not a failure: {stdout}");
    assert!(
        stdout.contains(&format!("OAuth2 WARNING: The OAuth2 client secret of app {}", client.id)),
        "{stdout}"
    );
    assert!(stdout.contains("(in 3 days)"), "{stdout}");

    // Once a day, remembered in the database across restarts.
    let config = std::sync::Arc::new(app.config());
    let clock: std::sync::Arc<dyn gatehouse::clock::Clock> =
        std::sync::Arc::new(gatehouse::clock::SystemClock);
    let templates = std::sync::Arc::new(gatehouse::templates::Templates::load(&config).unwrap());
    let alerts =
        gatehouse::mailings::alerts::Alerts::new(config.clone(), app.store.clone(), clock.clone(), templates);
    let first =
        gatehouse::jobs::secret_expiry::warn_once_a_day(&config, &alerts, clock.as_ref()).await.unwrap();
    let again =
        gatehouse::jobs::secret_expiry::warn_once_a_day(&config, &alerts, clock.as_ref()).await.unwrap();
    assert_eq!((first, again), (1, 0));
    let open: Vec<String> = app.store.open_alerts().await.unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(open, [gatehouse::jobs::secret_expiry::alert_key("imap.oauth2")]);

    app.start().await;
    let warning = app.stack.wait_for_mail(&app.gatekeeper, 1).await.remove(0);
    let subject = header(&warning, "Subject").unwrap();
    assert!(subject.contains("expires in 3 day(s)"), "{subject}");
    let body = readable(&warning);
    assert!(body.contains("Certificates & secrets") && body.contains(&client.id), "{body}");
    app.wait_for_outbox_drain().await;
    // Monitoring sees both clocks: the secret's days and the access token's hour.
    let (_, _, body) = crate::monitoring::get(port, "/metrics").await.unwrap();
    let m = crate::monitoring::samples(&body);
    let secret = m["gatehouse_oauth_client_secret_expiry_seconds{section=\"imap.oauth2\"}"];
    assert!((2.0 * 86400.0..=3.0 * 86400.0 + 3600.0).contains(&secret), "{body}");
    let token = m["gatehouse_oauth_token_expiry_seconds{section=\"imap.oauth2\"}"];
    assert!(token > 0.0 && token <= 3600.0, "{body}");
    app.stop().await;
    assert_eq!(
        app.stack.mailbox(&app.gatekeeper).len(),
        1,
        "the daemon's own daily check sent no second one"
    );
}

#[tokio::test]
async fn no_token_or_client_secret_reaches_the_log_even_at_trace_level() {
    let (app, client) = oauth_app(3.0, Smtp::XOAuth2, None, "").await;
    // The client secret from the environment this time.
    let config = std::fs::read_to_string(&app.config_path).unwrap().replace(
        "client_secret_file = \"client.secret\"",
        "client_secret_env = \"GATEHOUSE_TEST_CLIENT_SECRET\"",
    );
    std::fs::write(&app.config_path, config).unwrap();
    // To a file: a trace log fills a pipe that nobody reads until the end, and stalls the daemon.
    let log_path = app.dir.path().join("trace.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("--config")
        .arg(&app.config_path)
        .arg("run")
        .env("GATEHOUSE_TEST_CLIENT_SECRET", SECRET)
        .env(
            "GATEHOUSE_LOG",
            "trace,async_imap=trace,lettre=trace,imap_proto=trace,hyper=trace,hyper_util=trace,reqwest=trace",
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    wait_until("the daemon to watch the inbox", || {
        let app = &app;
        async move { (status(app).await["imap"] == "idle").then_some(()) }
    })
    .await;
    let partner = app.stack.user("oauth-secrets", "icb.test");
    app.stack.send(&partner, &app.shared, "Log me", "body").await;
    app.stack.wait_for_mail(&partner, 1).await;
    wait_until("several tokens used", || {
        let client = &client;
        async move { (client.state().await["tokens_issued"].as_u64()? >= 3).then_some(()) }
    })
    .await;
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("OAuth2") || log.contains("access token"),
        "the trace log shows no OAuth2 activity: {log}"
    );
    let tokens: Vec<String> = client.state().await["access_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    assert!(tokens.len() >= 3);
    let mut forms = vec![SECRET.to_string(), crate::security::base64(SECRET.as_bytes())];
    for t in &tokens {
        forms.push(t.clone());
        let sasl = format!("user={}\x01auth=Bearer {t}\x01\x01", app.shared);
        forms.push(crate::security::base64(sasl.as_bytes()));
    }
    for form in forms {
        if let Some(at) = log.find(&form) {
            let line = log[..at].rsplit('\n').next().unwrap_or_default();
            panic!("the log contains a secret ({form}) after: {line}");
        }
    }
}

/// The token endpoint over HTTPS, as Microsoft's is: TLS with the local stack's own server
/// certificate (for localhost, signed by the stack's CA) in front of the OAuth2 stand-in.
async fn https_front_for_the_standin() -> u16 {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let tls_dir = crate::helpers::stack().ca_file.parent().unwrap().to_path_buf();
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(tls_dir.join("server.pem")).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(tls_dir.join("server.key")).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let standin: std::net::SocketAddr = {
        let base = crate::helpers::stack().oauth_url.trim_start_matches("http://").trim_end_matches('/');
        tokio::net::lookup_host(base.to_string()).await.unwrap().next().unwrap()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut plain) = tokio::net::TcpStream::connect(standin).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

/// A web proxy as corporate networks have: it answers `CONNECT host:port`, records the
/// request line, connects there and splices the two connections.
struct ConnectProxy {
    port: u16,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ConnectProxy {
    async fn start() -> ConnectProxy {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    // The client says nothing more until the proxy answers, so reading up
                    // to the blank line takes exactly the request head.
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if inbound.read_exact(&mut byte).await.is_err() || head.len() > 8192 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let line = head.lines().next().unwrap_or_default().to_string();
                    seen.lock().unwrap().push(line.clone());
                    let mut words = line.split(' ');
                    let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
                        let _ = inbound.write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n").await;
                        return;
                    };
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        let _ = inbound.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                        return;
                    };
                    if inbound.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.is_ok() {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        ConnectProxy { port, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// `gatehouse check` with exactly the given proxy variables (any others the test runner
/// has are removed, in either case). Waited for off the runtime's thread, which the proxy
/// and the HTTPS front run on.
async fn check_with_proxy_env(app: &TestApp, vars: &[(&str, String)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    command.arg("--config").arg(&app.config_path).arg("check").env_remove("GATEHOUSE_CONFIG");
    for name in ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"] {
        command.env_remove(name).env_remove(name.to_lowercase());
    }
    for (name, value) in vars {
        command.env(name, value);
    }
    command.stdin(Stdio::null());
    tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap()
}

#[tokio::test]
async fn the_token_endpoint_is_reached_through_https_proxy_unless_no_proxy_names_it() {
    let (app, client) = oauth_app(3600.0, Smtp::XOAuth2, None, "").await;
    let https_port = https_front_for_the_standin().await;
    let endpoint = format!("https://localhost:{https_port}/{{tenant}}/oauth2/v2.0/token");
    let config = std::fs::read_to_string(&app.config_path).unwrap().replace(
        &format!("token_endpoint = \"{}\"", client.token_endpoint()),
        &format!("token_endpoint = \"{endpoint}\"\ntls_ca_file = \"{}\"", app.stack.ca_file.display()),
    );
    assert!(config.contains(&endpoint));
    std::fs::write(&app.config_path, config).unwrap();
    let proxy = ConnectProxy::start().await;
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);

    let out = check_with_proxy_env(&app, &[("HTTPS_PROXY", proxy_url.clone())]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "check failed through the proxy:\n{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("OAuth2 OK ([imap.oauth2] client_credentials"), "{stdout}");
    assert_eq!(
        proxy.requests(),
        [format!("CONNECT localhost:{https_port} HTTP/1.1")],
        "the token request did not go through the proxy"
    );
    assert_eq!(client.state().await["tokens_issued"], 1);

    // NO_PROXY names the host: straight there, the proxy sees nothing more.
    let out =
        check_with_proxy_env(&app, &[("HTTPS_PROXY", proxy_url), ("NO_PROXY", "localhost".into())]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "check failed with NO_PROXY:\n{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("OAuth2 OK ([imap.oauth2] client_credentials"), "{stdout}");
    assert_eq!(proxy.requests().len(), 1, "NO_PROXY was not honoured: {:?}", proxy.requests());
    assert_eq!(client.state().await["tokens_issued"], 2);
}

#[tokio::test]
async fn a_proxy_that_refuses_is_named_in_checks_answer() {
    let (app, client) = oauth_app(3600.0, Smtp::XOAuth2, None, "").await;
    let https_port = https_front_for_the_standin().await;
    let endpoint = format!("https://localhost:{https_port}/{{tenant}}/oauth2/v2.0/token");
    let config = std::fs::read_to_string(&app.config_path).unwrap().replace(
        &format!("token_endpoint = \"{}\"", client.token_endpoint()),
        &format!("token_endpoint = \"{endpoint}\"\ntls_ca_file = \"{}\"", app.stack.ca_file.display()),
    );
    std::fs::write(&app.config_path, config).unwrap();
    // Nothing listens there: a proxy that is down.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out =
        check_with_proxy_env(&app, &[("HTTPS_PROXY", format!("http://user:proxy-pass@127.0.0.1:{closed}"))])
            .await;
    let stdout = text(&out.stdout);
    assert!(!out.status.success(), "check passed with the proxy down:\n{stdout}");
    let line = stdout.lines().find(|l| l.starts_with("OAuth2 FAILED")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains(&format!("localhost:{https_port}")), "{line}");
    assert!(!stdout.contains("proxy-pass") && !text(&out.stderr).contains("proxy-pass"), "{stdout}");
    assert_eq!(client.state().await["tokens_issued"], 0);
}
