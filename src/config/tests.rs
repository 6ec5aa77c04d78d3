use super::Flow;
use super::*;

pub(crate) const VALID: &str = r#"
[service]
name = "Anytown General Practice Leadership Group"
timezone = "Europe/London"
data_dir = "data"
reference_prefix = "GP"

[imap]
host = "outlook.office365.com"
port = 993
security = "tls"
username = "gp-access@nhs.net"
password_env = "GATEHOUSE_IMAP_PASSWORD"
mailbox = "INBOX"
idle = true
poll_interval_secs = 60

[smtp]
host = "smtp.office365.com"
port = 587
security = "starttls"
username = "gp-access@nhs.net"
password_env = "GATEHOUSE_SMTP_PASSWORD"
from = "Anytown GP Single Point of Access <gp-access@nhs.net>"

[gatekeepers]
addresses = ["jane.doe@nhs.net", "sam.patel@nhs.net"]

[board]
addresses = ["pcn-cds@nhs.net", "lmc.chair@example.org"]
summary_schedule = "0 8 * * MON"

[meetings]
dates = ["2026-12-03", "2027-01-07"]
agenda_days_before = 3

[priorities]
resilience = "Strengthening resilience support for local practices"
workforce = "Recruiting hard-to-find staff groups"

[organisations]
"anytown-icb.example" = "Anytown ICB"
"jo.bloggs@nhs.net" = "Anytown Hospitals NHS Trust"
"nhs.net" = "NHSmail"
"#;

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/gatehouse/gatehouse.toml"))
}

#[test]
fn the_product_example_loads() {
    let c = load(VALID).unwrap();
    assert_eq!(c.gatekeepers.len(), 2);
    assert_eq!(c.service.data_dir, PathBuf::from("/etc/gatehouse/data"));
    assert_eq!(c.smtp.from.name.as_deref(), Some("Anytown GP Single Point of Access"));
    assert_eq!(c.imap.after_processing, AfterProcessing::Keep);
    // What the board sees of requesters and of the gatekeepers' notes: nothing unless asked.
    assert!(!c.board.share_notes && !c.board.share_addresses);
    let shared = load(&VALID.replace(
        "summary_schedule = \"0 8 * * MON\"",
        "summary_schedule = \"0 8 * * MON\"\nshare_notes = true\nshare_addresses = true",
    ))
    .unwrap();
    assert!(shared.board.share_notes && shared.board.share_addresses);
}

#[test]
fn retention_defaults_to_a_year_of_mail_and_two_years_of_closed_requests_and_refuses_nonsense() {
    let c = load(VALID).unwrap();
    assert_eq!(
        c.retention,
        RetentionSettings { raw_messages_days: 365, sent_mail_days: 365, closed_requests_months: 24 }
    );
    let set = |extra: &str| VALID.replace("[board]", &format!("[retention]\n{extra}\n\n[board]"));
    let c = load(&set("raw_messages_days = 90\nclosed_requests_months = 36")).unwrap();
    assert_eq!((c.retention.raw_messages_days, c.retention.sent_mail_days), (90, 365));
    assert_eq!(c.retention.closed_requests_months, 36);
    let e = load(&set("sent_mail_days = 0")).unwrap_err();
    assert_eq!(e.key, "retention.sent_mail_days");
    assert!(e.fix.contains("1 to 3653 days"), "{}", e.fix);
    assert_eq!(
        load(&set("closed_requests_months = 121")).unwrap_err().key,
        "retention.closed_requests_months"
    );
    assert_eq!(load(&set("attachments_days = 30")).unwrap_err().key, "retention.attachments_days");
}

#[test]
fn alerts_go_to_the_gatekeepers_and_any_operator_once_each() {
    let c = load(VALID).unwrap();
    assert_eq!(c.alert_recipients(), c.gatekeepers);
    assert_eq!(c.operator_recipients(), c.gatekeepers);
    let with = VALID
        .replace("[board]", "[operator]\naddresses = [\"IT@Example.org\", \"jane.doe@nhs.net\"]\n\n[board]");
    let c = load(&with).unwrap();
    let to: Vec<String> = c.alert_recipients().iter().map(ToString::to_string).collect();
    assert_eq!(to, ["jane.doe@nhs.net", "sam.patel@nhs.net", "it@example.org"]);
    let technical: Vec<String> = c.operator_recipients().iter().map(ToString::to_string).collect();
    assert_eq!(technical, ["it@example.org", "jane.doe@nhs.net"]);
    let bad = VALID.replace("[board]", "[operator]\naddresses = [\"it@nhs\"]\n\n[board]");
    assert_eq!(load(&bad).unwrap_err().key, "operator.addresses");
    let unknown = VALID.replace("[board]", "[operator]\nemail = \"it@example.org\"\n\n[board]");
    assert_eq!(load(&unknown).unwrap_err().key, "operator.email");
}

#[test]
fn metrics_listen_is_off_unless_given_and_must_be_an_address_and_port() {
    assert_eq!(load(VALID).unwrap().metrics_listen, None);
    let on = VALID.replace("[board]", "[metrics]\nlisten = \"127.0.0.1:9464\"\n\n[board]");
    assert_eq!(load(&on).unwrap().metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
    for bad in ["localhost", "127.0.0.1", "9464", ""] {
        let text = VALID.replace("[board]", &format!("[metrics]\nlisten = \"{bad}\"\n\n[board]"));
        let e = load(&text).unwrap_err();
        assert_eq!(e.key, "metrics.listen", "{bad}");
    }
    let unknown = VALID.replace("[board]", "[metrics]\nport = 9464\n\n[board]");
    assert_eq!(load(&unknown).unwrap_err().key, "metrics.port");
}

#[test]
fn organisations_prefer_the_exact_address_then_the_closest_domain() {
    let c = load(VALID).unwrap();
    let org = |a: &str| c.organisation_for(&EmailAddress::parse(a).unwrap()).map(str::to_string);
    assert_eq!(org("jo.bloggs@nhs.net").as_deref(), Some("Anytown Hospitals NHS Trust"));
    assert_eq!(org("someone@nhs.net").as_deref(), Some("NHSmail"));
    assert_eq!(org("a@mail.anytown-icb.example").as_deref(), Some("Anytown ICB"));
    assert_eq!(org("a@elsewhere.org"), None);
}

#[test]
fn members_are_addresses_or_domains_and_their_sub_domains() {
    let c = load(VALID).unwrap();
    assert!(c.members.domains.is_empty() && c.members.addresses.is_empty());
    assert_eq!(c.acknowledgements.domain_limit_per_day, 50);
    assert_eq!(c.acknowledgements.limit_per_hour, 100);
    let text = VALID.replace(
        "[priorities]\n",
        "[members]\ndomains = [\"Anytown-PCN.nhs.test\"]\naddresses = [\"LMC.Secretary@example.org\"]\n[priorities]\n",
    );
    let c = load(&text).unwrap();
    let member = |a: &str| c.is_member(&EmailAddress::parse(a).unwrap());
    assert!(member("pm@anytown-pcn.nhs.test"));
    assert!(member("pm@mail.anytown-pcn.nhs.test"));
    assert!(!member("pm@evil-anytown-pcn.nhs.test"));
    assert!(!member("pm@nhs.test"));
    assert!(member("lmc.secretary@example.org"));
    assert!(member("lmc.secretary+forwards@example.org"));
    assert!(!member("someone.else@example.org"));
}

#[test]
fn debug_output_never_contains_a_secret_value() {
    // SAFETY of the test: the variable name is unique to this test.
    unsafe { std::env::set_var("GATEHOUSE_IMAP_PASSWORD_DEBUG_TEST", "pw-that-must-not-leak") };
    let text = VALID.replace("GATEHOUSE_IMAP_PASSWORD", "GATEHOUSE_IMAP_PASSWORD_DEBUG_TEST");
    let c = load(&text).unwrap();
    let Auth::Password(source) = &c.imap.auth else { panic!("password auth expected") };
    let secret = source.load().unwrap();
    assert_eq!(secret.expose(), "pw-that-must-not-leak");
    assert!(!format!("{c:?} {secret:?}").contains("pw-that-must-not-leak"));
}

#[test]
fn postgres_is_verified_tls_unless_on_this_machine_and_its_password_never_shows() {
    let with = |keys: &str| {
        load(&VALID.replace("reference_prefix = \"GP\"", &format!("reference_prefix = \"GP\"\n{keys}")))
    };
    // SQLite unless a URL is given; the node is named after the host by default.
    let sqlite = load(VALID).unwrap();
    assert_eq!(sqlite.service.database, None);
    assert!(!sqlite.service.node_name.is_empty());

    let remote =
        with("database_url = \"postgres://gh@db.example:5432/gatehouse\"\nnode_name = \"gatehouse-a\"")
            .unwrap();
    let db = remote.service.database.as_ref().unwrap();
    assert_eq!(db.host, "db.example");
    assert_eq!(db.tls, DatabaseTls::VerifyFull { ca_file: None });
    assert_eq!(db.password, None, "no source named: $PGPASSWORD is used");
    assert_eq!(remote.service.node_name, "gatehouse-a");

    let local = with("database_url = \"postgres://gh@127.0.0.1:15432/gatehouse\"").unwrap();
    assert_eq!(local.service.database.unwrap().tls, DatabaseTls::Off);
    let local_verified =
        with("database_url = \"postgres://gh@localhost/gatehouse\"\ndatabase_tls = \"verify-full\"").unwrap();
    assert_eq!(local_verified.service.database.unwrap().tls, DatabaseTls::VerifyFull { ca_file: None });

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), "not read at load").unwrap();
    std::fs::write(dir.path().join("db.pw"), "db-pw-that-must-not-leak\n").unwrap();
    let config_path = dir.path().join("gatehouse.toml");
    let text = VALID.replace(
        "reference_prefix = \"GP\"",
        "reference_prefix = \"GP\"\ndatabase_url = \"postgres://gh@db.example/g\"\ndatabase_password_file = \"db.pw\"\ndatabase_ca_file = \"ca.pem\"",
    );
    let c = Config::parse(&text, &config_path).unwrap();
    let db = c.service.database.as_ref().unwrap();
    assert_eq!(db.tls, DatabaseTls::VerifyFull { ca_file: Some(dir.path().join("ca.pem")) });
    let password = db.password().unwrap().unwrap();
    assert_eq!(password.expose(), "db-pw-that-must-not-leak");
    assert!(!format!("{c:?} {password:?} {password}").contains("db-pw-that-must-not-leak"));
}

#[test]
fn each_meeting_takes_its_date_s_own_time_length_and_place_or_the_defaults() {
    let date = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    // Without any of them: no time or place, an hour long, papers attached up to 10 MB.
    let plain = load(VALID).unwrap().meetings;
    let slot = plain.slot(date("2026-12-03"));
    assert_eq!((slot.time, slot.length_minutes, slot.place), (None, 60, None));
    assert_eq!(plain.agenda_attachments_max_bytes, 10 * 1024 * 1024);
    let text = VALID.replace(
        "agenda_days_before = 3",
        "agenda_days_before = 3\ntime = \"13:00\"\nlength_minutes = 90\nplace = \"Anytown Federation, Room 2\"\nagenda_attachments_max_mb = 0\n\n[meetings.on.\"2027-01-07\"]\ntime = \"10:30\"\nplace = \"https://teams.example/l/meetup-join/19%3ameeting?context=%7b%7d\"",
    );
    let m = load(&text).unwrap().meetings;
    assert_eq!(m.agenda_attachments_max_bytes, 0);
    let december = m.slot(date("2026-12-03"));
    assert_eq!(december.time, NaiveTime::from_hms_opt(13, 0, 0));
    assert_eq!(december.length_minutes, 90);
    assert_eq!(december.place.as_deref(), Some("Anytown Federation, Room 2"));
    assert_eq!(december.hours().as_deref(), Some("13:00 to 14:30"));
    let january = m.slot(date("2027-01-07"));
    assert_eq!(january.time, NaiveTime::from_hms_opt(10, 30, 0));
    assert_eq!(january.length_minutes, 90, "the default length where the date gives none");
    assert!(january.place.unwrap().starts_with("https://teams.example/"));
}

/// Each bad config must be refused with a message naming the file and the key.
#[test]
fn each_config_error_names_the_file_and_key() {
    let cases: &[(&str, &str, &str)] = &[
        ("[imap]\n", "[imap]\nhots = \"x\"\n", "imap.hots"),
        ("[board]\n", "[bored]\nx = 1\n[board]\n", "bored"),
        (
            "addresses = [\"jane.doe@nhs.net\", \"sam.patel@nhs.net\"]",
            "addresses = []",
            "gatekeepers.addresses",
        ),
        (
            "addresses = [\"jane.doe@nhs.net\", \"sam.patel@nhs.net\"]",
            "addresses = [\"a@nhs.net\", \"b@nhs.net\", \"c@nhs.net\"]",
            "gatekeepers.addresses",
        ),
        ("security = \"tls\"", "security = \"plain\"", "imap.security"),
        ("security = \"starttls\"", "security = \"plain\"", "smtp.security"),
        ("timezone = \"Europe/London\"", "timezone = \"Europe/Londn\"", "service.timezone"),
        ("summary_schedule = \"0 8 * * MON\"", "summary_schedule = \"0 8 * MON\"", "board.summary_schedule"),
        (
            "summary_schedule = \"0 8 * * MON\"",
            "summary_schedule = \"0 25 * * MON\"",
            "board.summary_schedule",
        ),
        ("\"pcn-cds@nhs.net\"", "\"pcn-cds-at-nhs.net\"", "board.addresses"),
        ("\"jane.doe@nhs.net\",", "\"jane.doe@nhs\",", "gatekeepers.addresses"),
        ("<gp-access@nhs.net>\"", "<gp-access>\"", "smtp.from"),
        ("[meetings]\n", "[templates]\ndir = \"no-such-folder\"\n[meetings]\n", "templates.dir"),
        ("\"2026-12-03\"", "\"3 Dec 2026\"", "meetings.dates"),
        ("agenda_days_before = 3", "agenda_days_before = 3\ntime = \"1pm\"", "meetings.time"),
        ("agenda_days_before = 3", "agenda_days_before = 3\ntime = \"25:00\"", "meetings.time"),
        (
            "agenda_days_before = 3",
            "agenda_days_before = 3\nsend_empty_agenda = \"no\"",
            "meetings.send_empty_agenda",
        ),
        ("agenda_days_before = 3", "agenda_days_before = 3\nsend_empty = true", "meetings.send_empty"),
        ("agenda_days_before = 3", "agenda_days_before = 3\nlength_minutes = 0", "meetings.length_minutes"),
        (
            "agenda_days_before = 3",
            "agenda_days_before = 3\nlength_minutes = \"90\"",
            "meetings.length_minutes",
        ),
        ("agenda_days_before = 3", "agenda_days_before = 3\nplace = \"\"", "meetings.place"),
        ("agenda_days_before = 3", "agenda_days_before = 3\nplace = \"Room 2\\nBcc: x\"", "meetings.place"),
        (
            "agenda_days_before = 3",
            "agenda_days_before = 3\nagenda_attachments_max_mb = 100",
            "meetings.agenda_attachments_max_mb",
        ),
        ("agenda_days_before = 3", "agenda_days_before = 3\non = 1", "meetings.on"),
        (
            "agenda_days_before = 3",
            "agenda_days_before = 3\n[meetings.on.\"2027-01-07\"]\nplase = \"Room 3\"",
            "meetings.on.\"2027-01-07\".plase",
        ),
        (
            "agenda_days_before = 3",
            "agenda_days_before = 3\n[meetings.on.\"2027-01-08\"]\nplace = \"Room 3\"",
            "meetings.on.\"2027-01-08\"",
        ),
        (
            "agenda_days_before = 3",
            "agenda_days_before = 3\n[meetings.on.\"7 Jan\"]\nplace = \"Room 3\"",
            "meetings.on.\"7 Jan\"",
        ),
        (
            "agenda_days_before = 3",
            "agenda_days_before = 3\n[meetings.on.\"2027-01-07\"]\ntime = \"9am\"",
            "meetings.on.\"2027-01-07\".time",
        ),
        ("port = 993", "port = \"nine\"", "imap.port"),
        ("name = \"Anytown General Practice Leadership Group\"\n", "", "service.name"),
        ("password_env = \"GATEHOUSE_IMAP_PASSWORD\"\n", "", "imap.password_env"),
        ("mailbox = \"INBOX\"", "after_processing = \"delete\"", "imap.after_processing"),
        ("# database", "database_url = \"postgres://u:pw@db/g\"", "service.database_url"),
        ("# database", "database_url = \"postgres://u@db/g?sslmode=disable\"", "service.database_url"),
        (
            "# database",
            "database_url = \"postgres://u@db/g\"\ndatabase_tls = \"off\"",
            "service.database_tls",
        ),
        (
            "# database",
            "database_url = \"postgres://u@db/g\"\ndatabase_tls = \"prefer\"",
            "service.database_tls",
        ),
        ("# database", "database_password_env = \"PGPW\"", "service.database_password_env"),
        (
            "# database",
            "database_url = \"postgres://u@db/g\"\ndatabase_password_env = \"PGPW\"\ndatabase_password_file = \"pw\"",
            "service.database_password_file",
        ),
        (
            "# database",
            "database_url = \"postgres://u@db/g\"\ndatabase_ca_file = \"no-such.pem\"",
            "service.database_ca_file",
        ),
        (
            "# database",
            "database_url = \"postgres://u@db/g\"\ndatabase_pasword_env = \"PGPW\"",
            "service.database_pasword_env",
        ),
        ("# database", "node_name = \"node a\"", "service.node_name"),
        ("\"sam.patel@nhs.net\"]", "\"sam..patel@nhs.net\"]", "gatekeepers.addresses"),
        ("[priorities]\n", "[members]\ndomains = [\"not a domain\"]\n[priorities]\n", "members.domains"),
        ("[priorities]\n", "[members]\naddresses = [\"lmc\"]\n[priorities]\n", "members.addresses"),
        ("[priorities]\n", "[members]\nfriends = []\n[priorities]\n", "members.friends"),
        (
            "[priorities]\n",
            "[acknowledgements]\nlimit_per_hour = -1\n[priorities]\n",
            "acknowledgements.limit_per_hour",
        ),
        (
            "[meetings]\n",
            "[triage]\nauthserv_id = \"mx.nhs.net; dmarc=pass\"\n[meetings]\n",
            "triage.authserv_id",
        ),
        (
            "summary_schedule = \"0 8 * * MON\"",
            "summary_schedule = \"0 8 * * MON\"\nshare_note = true",
            "board.share_note",
        ),
        (
            "summary_schedule = \"0 8 * * MON\"",
            "summary_schedule = \"0 8 * * MON\"\nshare_notes = \"yes\"",
            "board.share_notes",
        ),
    ];
    for (from, to, key) in cases {
        let text = if *from == "# database" {
            VALID.replace("reference_prefix = \"GP\"", &format!("reference_prefix = \"GP\"\n{to}"))
        } else {
            assert!(VALID.contains(from), "test case pattern {from:?} not in example");
            VALID.replacen(from, to, 1)
        };
        let e = load(&text).expect_err(&format!("accepted config with {to:?}"));
        let msg = e.to_string();
        assert_eq!(e.key, *key, "wrong key for {to:?}: {msg}");
        assert!(msg.starts_with("/etc/gatehouse/gatehouse.toml: "), "{msg}");
        assert!(msg.contains(key), "{msg}");
        assert!(msg.contains("Fix: "), "{msg}");
    }
}

/// VALID with IMAP and SMTP on XOAUTH2 and the given [imap.oauth2] body.
fn oauth(table: &str) -> String {
    VALID
        .replace("password_env = \"GATEHOUSE_IMAP_PASSWORD\"\n", "auth = \"xoauth2\"\n")
        .replace("password_env = \"GATEHOUSE_SMTP_PASSWORD\"\n", "auth = \"xoauth2\"\n")
        .replace("[smtp]", &format!("[imap.oauth2]\n{table}\n[smtp]"))
}

const APP: &str = "flow = \"client_credentials\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"0f6e-app\"\nclient_secret_env = \"GATEHOUSE_OAUTH_SECRET\"\nsecret_expires = \"2027-03-31\"";

#[test]
fn an_app_only_oauth2_config_loads_and_smtp_shares_it() {
    let c = load(&oauth(APP)).unwrap();
    let o = c.imap.auth.oauth().unwrap();
    assert_eq!(o.scope, "https://outlook.office365.com/.default");
    assert_eq!(
        o.token_endpoint,
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    );
    assert_eq!(o.secret_expires, NaiveDate::from_ymd_opt(2027, 3, 31));
    assert_eq!(o.secret_expires_warn_days, 14);
    assert!(
        matches!(&o.flow, Flow::ClientCredentials { client_secret: SecretSource::Env(v), .. } if v == "GATEHOUSE_OAUTH_SECRET")
    );
    assert_eq!(c.smtp.auth.as_ref().and_then(Auth::oauth), Some(o));
    assert_eq!(c.oauth_sections().len(), 1, "a shared source counts once");
}

#[test]
fn a_delegated_config_keeps_its_refresh_token_in_the_data_dir() {
    let c = load(&oauth("flow = \"refresh_token\"\ntenant = \"organizations\"\nclient_id = \"abc-123\""))
        .unwrap();
    let o = c.imap.auth.oauth().unwrap();
    assert!(o.scope.contains("offline_access") && o.scope.contains("IMAP.AccessAsUser.All"));
    let Flow::RefreshToken { refresh_token_file, device_code_endpoint, client_secret, .. } = &o.flow else {
        panic!("refresh_token flow expected");
    };
    assert_eq!(refresh_token_file, &PathBuf::from("/etc/gatehouse/data/oauth2-abc-123.refresh_token"));
    assert!(device_code_endpoint.ends_with("/organizations/oauth2/v2.0/devicecode"));
    assert!(client_secret.is_none());
    let c = load(&oauth("flow = \"token_command\"\ncommand = \"get-token imap\"")).unwrap();
    assert!(
        matches!(&c.imap.auth.oauth().unwrap().flow, Flow::TokenCommand { command } if command == "get-token imap")
    );
}

/// Every OAuth2 mistake names the file, the dotted key and a fix.
#[test]
fn oauth2_config_errors_name_the_key() {
    let cases: &[(String, &str)] = &[
        (oauth(&format!("{APP}\nclientid = \"x\"")), "imap.oauth2.clientid"),
        (oauth(APP).replacen("auth = \"xoauth2\"", "auth = \"kerberos\"", 1), "imap.auth"),
        (oauth(APP).replacen("[imap.oauth2]", "[unused]", 1), "unused"),
        (oauth(APP).replace("[imap.oauth2]\n", "").replace(APP, ""), "imap.oauth2"),
        (
            oauth(APP).replacen("auth = \"xoauth2\"", "auth = \"xoauth2\"\npassword_env = \"P\"", 1),
            "imap.password_env",
        ),
        (oauth(&APP.replace("flow = \"client_credentials\"\n", "")), "imap.oauth2.flow"),
        (oauth(&APP.replace("client_credentials", "implicit")), "imap.oauth2.flow"),
        (
            oauth(&APP.replace("client_secret_env = \"GATEHOUSE_OAUTH_SECRET\"\n", "")),
            "imap.oauth2.client_secret_env",
        ),
        (oauth(&APP.replace("tenant = \"contoso.onmicrosoft.com\"\n", "")), "imap.oauth2.tenant"),
        (
            oauth(&format!("{APP}\ntoken_endpoint = \"http://login.example.org/token\"")),
            "imap.oauth2.token_endpoint",
        ),
        (oauth(&APP.replace("2027-03-31", "31/03/2027")), "imap.oauth2.secret_expires"),
        (oauth(&format!("{APP}\ncommand = \"x\"")), "imap.oauth2.command"),
        (
            oauth(APP).replace(
                "username = \"gp-access@nhs.net\"\nauth = \"xoauth2\"\nfrom",
                "auth = \"xoauth2\"\nfrom",
            ),
            "smtp.username",
        ),
        (VALID.replace("password_env = \"GATEHOUSE_SMTP_PASSWORD\"", "auth = \"xoauth2\""), "smtp.oauth2"),
    ];
    for (text, key) in cases {
        let e = load(text).expect_err(&format!("accepted a config that should fail on {key}"));
        assert_eq!(e.key, *key, "{e}");
        assert!(e.to_string().starts_with("/etc/gatehouse/gatehouse.toml: "), "{e}");
        assert!(e.to_string().contains("Fix: "), "{e}");
    }
    // A token endpoint on this machine may be plain http (the local test stand-in).
    assert!(
        load(&oauth(&format!("{APP}\ntoken_endpoint = \"http://127.0.0.1:1880/{{tenant}}/token\""))).is_ok()
    );
}

#[test]
fn plain_is_allowed_to_loopback() {
    let text = VALID
        .replace("host = \"outlook.office365.com\"", "host = \"127.0.0.1\"")
        .replace("security = \"tls\"", "security = \"plain\"");
    assert!(load(&text).is_ok());
    assert!(is_loopback("localhost") && is_loopback("::1") && is_loopback("127.0.0.2"));
    assert!(!is_loopback("10.0.0.1") && !is_loopback("mail.example.org"));
}

#[test]
fn the_channel_webhook_is_named_never_written_and_the_nudge_defaults_to_five_days() {
    let c = load(VALID).unwrap();
    assert!(c.channel.webhook_url.is_none());
    assert_eq!(c.channel.timeout, std::time::Duration::from_secs(30));
    assert_eq!(c.triage.more_work_nudge_days, 5);
    let set = |extra: &str| VALID.replace("[board]", &format!("{extra}\n\n[board]"));
    // SAFETY of the test: the variable name is unique to this test.
    unsafe { std::env::set_var("GATEHOUSE_CHANNEL_DEBUG_TEST", "https://hooks.example/secret-path-xyz") };
    let c = load(&set("[channel]\nwebhook_url_env = \"GATEHOUSE_CHANNEL_DEBUG_TEST\"\ntimeout_secs = 10"))
        .unwrap();
    let source = c.channel.webhook_url.clone().unwrap();
    assert_eq!(source.load().unwrap().expose(), "https://hooks.example/secret-path-xyz");
    assert!(!format!("{c:?}").contains("secret-path-xyz"), "the URL is in the config's Debug");
    assert_eq!(c.channel.timeout, std::time::Duration::from_secs(10));
    let c = load(&set("[channel]\nwebhook_url_file = \"channel.url\"")).unwrap();
    assert_eq!(
        c.channel.webhook_url,
        Some(crate::secret::SecretSource::File(PathBuf::from("/etc/gatehouse/channel.url")))
    );
    let off = load(&set("[triage]\nmore_work_nudge_days = 0")).unwrap();
    assert_eq!(off.triage.more_work_nudge_days, 0);
    for (extra, key) in [
        ("[channel]\nwebhook_url = \"https://hooks.example/x\"", "channel.webhook_url"),
        ("[channel]\nwebhook_url_env = \"A\"\nwebhook_url_file = \"b\"", "channel.webhook_url_file"),
        ("[channel]\nwebhook_url_env = \"https://hooks.example/x?a=b\"", "channel.webhook_url_env"),
        ("[channel]\ntimeout_secs = 0", "channel.timeout_secs"),
        ("[triage]\nmore_work_nudge_days = -1", "triage.more_work_nudge_days"),
    ] {
        let e = load(&set(extra)).unwrap_err();
        assert_eq!(e.key, key, "{extra}: {e}");
        assert!(!e.to_string().contains("hooks.example/x?a=b"), "a URL given as a name is echoed: {e}");
    }
}
