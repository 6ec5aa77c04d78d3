//! The `gatehouse` command line: parsing (clap) and the commands that read or change the
//! database directly. The daemon itself lives in [`crate::daemon`].
//!
//! Output formats are part of the interface contract (PRODUCT.md): JSON is one array of
//! every matching row, addresses bare and lower-case, absent values `null`, times RFC 3339.

mod db;
mod housekeeping;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock as _, SystemClock, rfc3339};
use crate::config::Config;
use crate::domain::Status;
use crate::store::postgres::lease::NodeRole;
use crate::store::{
    self, EventRow, MessageId, MessageRow, RequestFilter, RequestRow, RetryRequest, SharedStore,
};

/// gatehouse: the single point of access for local general practice.
///
/// Watches the shared inbox, logs every approach from the system as a request with a
/// reference, answers the sender, tells the gatekeeper, takes decisions by email reply, and
/// sends the board a weekly summary.
#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, about, long_about = None)]
pub struct Cli {
    /// Config file [default: $GATEHOUSE_CONFIG, then config/gatehouse.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (logs to stderr; stop with Ctrl-C or SIGTERM).
    Run,
    /// Check the config, the IMAP and SMTP logins and the database; exit non-zero on any failure.
    Check,
    /// Bring the database schema up to date (the daemon also does this at start).
    Migrate,
    /// List or show logged requests.
    Requests {
        #[command(subcommand)]
        command: RequestsCommand,
    },
    /// List every message taken from the inbox, and what it was classified as.
    Messages {
        #[command(subcommand)]
        command: MessagesCommand,
    },
    /// Preview or send the board's weekly summary.
    Summary {
        #[command(subcommand)]
        command: SummaryCommand,
    },
    /// Preview or send a meeting's agenda.
    Agenda {
        #[command(subcommand)]
        command: AgendaCommand,
    },
    /// Decide on a request, exactly as a gatekeeper's emailed reply would (recorded as the operator).
    ///
    /// DECISION is one of meeting, paper, message, more-work, decline, redirect, duplicate.
    /// ARG is the meeting date (YYYY-MM-DD; default the next meeting), the work needed, the
    /// reason, where it belongs, or the earlier reference.
    Triage {
        /// The reference, e.g. GP-2026-0042.
        reference: String,
        decision: String,
        arg: Option<String>,
        /// Text for the requester, sent with the outcome.
        #[arg(long, value_name = "TEXT")]
        message: Option<String>,
        /// Tag an agreed priority (may repeat).
        #[arg(long, value_name = "KEY")]
        priority: Vec<String>,
        /// An internal note, never sent to the requester.
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
    },
    /// OAuth2 sign-in for `flow = "refresh_token"` (delegated access).
    Oauth {
        #[command(subcommand)]
        command: OauthCommand,
    },
    /// Apply the retention periods ([retention]) now; the daemon does it once a day.
    Purge {
        /// Show what would go (counts per kind, oldest and newest) and change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_enum, default_value_t = TextFormat::Text)]
        format: TextFormat,
    },
    /// Write everything held about one person into DIR, for a subject access request.
    Export {
        /// Their address; any +tag and any letter case match too.
        #[arg(long, value_name = "ADDRESS")]
        person: String,
        /// A new (or empty) folder; created private to you.
        dir: PathBuf,
    },
    /// Remove one request's personal data (right to erasure); recorded in its event log.
    Erase {
        /// The reference, e.g. GP-2026-0042.
        reference: String,
    },
    /// Copy the database to FILE (mode 0600) while the daemon runs, and check the copy.
    Backup {
        file: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Database moves: `db copy --to postgres://…` (SQLite to PostgreSQL).
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Show what the running daemon is doing; exit 0 if it is alive and watching the inbox.
    Status {
        #[arg(long, value_enum, default_value_t = TextFormat::Text)]
        format: TextFormat,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Copy everything from the SQLite database in data_dir into an empty PostgreSQL
    /// database, in one transaction, and keep it only if every table's count and checksum
    /// match (exit non-zero otherwise). Stop the daemon first. The password and TLS are the
    /// config's database_* settings when its database_url is this URL, else $PGPASSWORD.
    Copy {
        /// The PostgreSQL database: postgres://USER@HOST:PORT/DB (no password in it).
        #[arg(long, value_name = "URL")]
        to: String,
        #[arg(long, value_enum, default_value_t = TextFormat::Text)]
        format: TextFormat,
    },
}

#[derive(Debug, Subcommand)]
pub enum OauthCommand {
    /// Sign in once with the device-code flow (open a web page on any device, type a code)
    /// and save the refresh token in the data directory (mode 0600).
    Login,
}

#[derive(Debug, Subcommand)]
pub enum RequestsCommand {
    /// List requests, oldest first.
    List {
        /// Only requests with this status (awaiting_triage, waiting_on_requester, scheduled, closed).
        #[arg(long, value_name = "S")]
        status: Option<String>,
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Show one request with its messages and its event log.
    Show {
        /// The reference, e.g. GP-2026-0042.
        reference: String,
        #[arg(long, value_enum, default_value_t = TextFormat::Text)]
        format: TextFormat,
    },
}

#[derive(Debug, Subcommand)]
pub enum SummaryCommand {
    /// Print the summary exactly as it would be sent, without sending it.
    Preview {
        /// Any date (YYYY-MM-DD) in the Monday-to-Sunday week to summarise [default: the seven days up to now].
        #[arg(long, value_name = "YYYY-MM-DD")]
        week: Option<String>,
        #[arg(long, value_enum, default_value_t = SummaryFormat::Text)]
        format: SummaryFormat,
    },
    /// Send the summary to the board now (once per week unless --force).
    Send {
        /// Any date (YYYY-MM-DD) in the Monday-to-Sunday week to summarise [default: the seven days up to now, counting as this week's].
        #[arg(long, value_name = "YYYY-MM-DD")]
        week: Option<String>,
        /// Send even if this week's summary went already.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgendaCommand {
    /// Print the meeting's agenda exactly as `agenda send` would send it now, without sending it.
    Preview {
        /// The meeting date (YYYY-MM-DD).
        date: String,
        #[arg(long, value_enum, default_value_t = SummaryFormat::Text)]
        format: SummaryFormat,
    },
    /// Send the meeting's agenda to the board now, with everything decided for it (once per
    /// meeting unless --force; later changes go as agenda updates).
    Send {
        /// The meeting date (YYYY-MM-DD).
        date: String,
        /// Send even if this meeting's agenda went already.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SummaryFormat {
    Text,
    Html,
}

#[derive(Debug, Subcommand)]
pub enum MessagesCommand {
    /// List every message, in the order it was taken from the inbox.
    List {
        #[arg(long, value_enum, default_value_t = TableFormat::Table)]
        format: TableFormat,
    },
    /// Have a quarantined message processed again (after an upgrade, say): the running
    /// daemon takes it within seconds, or the next one at start.
    Retry {
        /// The message's ID, as `messages list` and the gatekeepers' alert show it.
        id: MessageId,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TableFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TextFormat {
    Text,
    Json,
}

/// Runs the parsed command line; the exit code says whether it worked.
pub async fn run(cli: Cli) -> ExitCode {
    match dispatch(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gatehouse: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let path = Config::default_path(cli.config);
    let config = Config::load(&path)?;
    match cli.command {
        Command::Run => {
            let shutdown = CancellationToken::new();
            tokio::spawn(crate::daemon::cancel_on_signal(shutdown.clone()));
            crate::daemon::run(config, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => Ok(check(&config).await),
        Command::Oauth { command: OauthCommand::Login } => oauth_login(&config).await,
        Command::Migrate => {
            let store = store::open(&config).await?;
            let applied = store.migrate().await?;
            println!("database ready ({}): {applied} migration(s) applied", store.describe());
            Ok(ExitCode::SUCCESS)
        }
        Command::Requests { command } => {
            let store = open_migrated(&config).await?;
            match command {
                RequestsCommand::List { status, format } => {
                    let status = status.as_deref().map(str::parse::<Status>).transpose()?;
                    let rows = store.list_requests(&RequestFilter { status }).await?;
                    print_requests(&rows, format)?;
                    Ok(ExitCode::SUCCESS)
                }
                RequestsCommand::Show { reference, format } => {
                    let Some(request) = store.find_request(&reference).await? else {
                        eprintln!("gatehouse: no request {reference}");
                        return Ok(ExitCode::FAILURE);
                    };
                    show_request(&store, &request, format).await?;
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        Command::Messages { command: MessagesCommand::List { format } } => {
            let store = open_migrated(&config).await?;
            let rows = store.list_messages().await?;
            print_messages(&rows, format)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Messages { command: MessagesCommand::Retry { id } } => {
            let store = open_migrated(&config).await?;
            match store.request_retry(id, SystemClock.now()).await? {
                RetryRequest::Requested => {
                    println!(
                        "message {id} will be processed again: by the running daemon within seconds, or at its next start"
                    );
                    Ok(ExitCode::SUCCESS)
                }
                RetryRequest::Missing => {
                    eprintln!("gatehouse: no message {id} (see `gatehouse messages list`)");
                    Ok(ExitCode::FAILURE)
                }
                RetryRequest::NotQuarantined(class) => {
                    let what = class.map_or("not processed yet", |c| c.as_str());
                    eprintln!(
                        "gatehouse: message {id} is not quarantined ({what}); only a quarantined message is retried"
                    );
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Purge { dry_run, format } => {
            housekeeping::purge(&config, open_migrated(&config).await?, dry_run, format).await
        }
        Command::Export { person, dir } => {
            housekeeping::export(&config, open_migrated(&config).await?, &person, &dir).await
        }
        Command::Erase { reference } => housekeeping::erase(open_migrated(&config).await?, &reference).await,
        Command::Backup { file, force } => {
            housekeeping::backup(open_migrated(&config).await?, &file, force).await
        }
        Command::Db { command: DbCommand::Copy { to, format } } => db::copy(&config, &to, format).await,
        Command::Status { format } => status(&config, format).await,
        Command::Summary { command } => summary(&config, command).await,
        Command::Agenda { command } => agenda(&config, command).await,
        Command::Triage { reference, decision, arg, message, priority, note } => {
            triage(&config, &reference, &decision, arg.as_deref(), message, priority, note).await
        }
    }
}

/// Opens the database for a CLI command, applying migrations so a CLI run before the first
/// daemon start still works.
async fn open_migrated(config: &Config) -> anyhow::Result<SharedStore> {
    let store = store::open(config).await?;
    store.migrate().await?;
    Ok(store)
}

/// One line per check, each saying OK or FAILED and why; every check runs even after a
/// failure so the operator sees everything at once.
async fn check(config: &Config) -> ExitCode {
    let mut failed = false;
    match crate::templates::Templates::load(config) {
        Ok(_) => println!("config OK ({})", config.path.display()),
        Err(e) => {
            failed = true;
            println!("config FAILED: {e}");
        }
    }
    // OAuth2 first, so a token problem is named as such, not as "IMAP login failed".
    let clock: std::sync::Arc<dyn crate::clock::Clock> = std::sync::Arc::new(crate::clock::SystemClock);
    let providers = crate::oauth::Providers::default();
    for (section, settings) in config.oauth_sections() {
        let tokens = providers.get(settings, clock.clone());
        let what = format!(
            "[{section}] {}{}",
            settings.flow_name(),
            settings.client_id().map(|c| format!(", app {c}")).unwrap_or_default()
        );
        match tokens.token().await {
            Ok(t) => {
                let valid = match t.expires_at {
                    Some(e) => format!("token valid for {} min", (e - SystemClock.now()).num_minutes()),
                    None => "token obtained".to_string(),
                };
                println!("OAuth2 OK ({what}: {valid})");
            }
            Err(e) => {
                failed = true;
                println!("OAuth2 FAILED ({what}): {e}");
            }
        }
    }
    let today = SystemClock.now().with_timezone(&config.service.timezone).date_naive();
    for due in crate::jobs::secret_expiry::due(config, today) {
        if due.days_left < 0 {
            failed = true;
            println!("OAuth2 FAILED: {}: create a new client secret and set secret_expires", due.describe());
        } else {
            println!("OAuth2 WARNING: {}: create a new client secret before then", due.describe());
        }
    }
    let imap_tokens = config.imap.auth.oauth().map(|o| providers.get(o, clock.clone()));
    match crate::inbox::connection::check(&config.imap, imap_tokens.as_deref()).await {
        Ok(detail) => println!("IMAP OK ({detail})"),
        Err(e) => {
            failed = true;
            println!("IMAP FAILED: {e:#}");
        }
    }
    let smtp_tokens = config
        .smtp
        .auth
        .as_ref()
        .and_then(crate::config::Auth::oauth)
        .map(|o| providers.get(o, clock.clone()));
    match crate::mail::check(&config.smtp, smtp_tokens.as_deref()).await {
        Ok(detail) => println!("SMTP OK ({detail})"),
        Err(e) => {
            failed = true;
            println!("SMTP FAILED: {e:#}");
        }
    }
    match open_migrated(config).await {
        Ok(store) => match store.ping().await {
            Ok(()) => {
                match crate::daemon::leadership::describe_database(config, &store).await {
                    Ok(line) => println!("database ready ({line})"),
                    Err(e) => println!("database ready ({}; {e:#})", store.describe()),
                }
                failed |= !check_node(config).await;
                failed |= !check_authentication(config, &store).await;
            }
            Err(e) => {
                failed = true;
                println!("database FAILED: {e:#}");
            }
        },
        Err(e) => {
            failed = true;
            println!("database FAILED: {e:#}");
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// This node's name and role as the lease stands (on SQLite: the one node, leading); a
/// node name that another live node also uses would make them take turns, so it is named.
async fn check_node(config: &Config) -> bool {
    let me = &config.service.node_name;
    match crate::daemon::leadership::nodes(config, SystemClock.now()).await {
        Ok(nodes) => {
            let role =
                nodes.iter().find(|n| &n.node == me).map_or("not yet seen (start it)", |n| n.role.as_str());
            let leader = nodes.iter().find(|n| n.role == NodeRole::Leader).map(|n| n.node.as_str());
            let others = match (config.service.database.is_some(), leader) {
                (false, _) => "SQLite: the only node".to_string(),
                (true, Some(l)) if l != me => format!("{l} leads, {} node(s) known", nodes.len()),
                (true, Some(_)) => format!("{} node(s) known", nodes.len()),
                (true, None) => format!("no node leads now, {} node(s) known", nodes.len()),
            };
            println!("node OK ({me}: {role}; {others})");
            true
        }
        Err(e) => {
            println!("node FAILED ({me}): {e:#}");
            false
        }
    }
}

/// With `[triage] authserv_id` set: whether the recent mail from gatekeepers carried that
/// server's `Authentication-Results`, since without it every decision by email is refused.
/// False (FAILED) when gatekeepers' mail is stored and none of it carried the header.
async fn check_authentication(config: &Config, store: &SharedStore) -> bool {
    const RECENT: usize = 20;
    let Some(authserv) = config.triage.authserv_id.as_deref() else {
        return true;
    };
    match crate::triage::auth::survey(config, store, RECENT).await {
        Ok(None) => true,
        Ok(Some(s)) if s.read == 0 => {
            println!(
                "authentication WARNING: no mail from a gatekeeper stored yet to show whether {authserv} stamps Authentication-Results; send one reply and run check again"
            );
            true
        }
        Ok(Some(s)) => {
            let line = format!(
                "{} of the last {} messages from gatekeepers carried Authentication-Results from {authserv}; {} passed (dmarc=pass or an aligned dkim=pass)",
                s.stamped, s.read, s.passed
            );
            if s.stamped == 0 {
                println!(
                    "authentication FAILED: {line}: every decision by email would be refused; check [triage] authserv_id (\"exchange-online\" for Microsoft 365 / NHSmail)"
                );
                false
            } else if s.passed < s.read {
                println!("authentication WARNING: {line}: replies like the others would be refused");
                true
            } else {
                println!("authentication OK ({line})");
                true
            }
        }
        Err(e) => {
            println!("authentication FAILED: {e:#}");
            false
        }
    }
}

/// `gatehouse oauth login`: the device-code flow for each `refresh_token` source.
async fn oauth_login(config: &Config) -> anyhow::Result<ExitCode> {
    let sections: Vec<_> = config
        .oauth_sections()
        .into_iter()
        .filter(|(_, s)| matches!(s.flow, crate::oauth::Flow::RefreshToken { .. }))
        .collect();
    if sections.is_empty() {
        eprintln!(
            "gatehouse: nothing to sign in to: no [imap.oauth2] or [smtp.oauth2] uses flow = \"refresh_token\" (client_credentials and token_command need no sign-in)"
        );
        return Ok(ExitCode::FAILURE);
    }
    // The data directory must exist (0700) before the token is written into it.
    open_migrated(config).await?;
    let mut done: Vec<PathBuf> = Vec::new();
    for (section, settings) in sections {
        if let crate::oauth::Flow::RefreshToken { refresh_token_file, .. } = &settings.flow
            && done.contains(refresh_token_file)
        {
            continue;
        }
        println!("Signing in for [{section}] (scope: {})", settings.scope);
        let mut say = |text: &str| {
            println!("{text}");
            let _ = std::io::stdout().flush();
        };
        match crate::oauth::sources::device_login(settings, &mut say).await {
            Ok(file) => {
                println!("Signed in. The refresh token is saved in {} (mode 0600).", file.display());
                done.push(file);
            }
            Err(e) => {
                eprintln!("gatehouse: {e}");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    println!("Run `gatehouse check` to test IMAP and SMTP with it.");
    Ok(ExitCode::SUCCESS)
}

/// A request as the contract's JSON row.
pub fn request_json(r: &RequestRow) -> Value {
    json!({
        "reference": r.reference,
        "status": r.status.as_str(),
        "decision": r.decision.map(|d| d.as_str()),
        "decision_detail": r.decision_detail,
        "requester": r.requester,
        "requester_name": r.requester_name,
        "organisation": r.organisation,
        "via": r.via,
        "subject": r.subject,
        "received_at": rfc3339(r.received_at),
        "decided_at": r.decided_at.map(rfc3339),
        "meeting_date": r.meeting_date.map(|d| d.format("%Y-%m-%d").to_string()),
        "priorities": r.priorities,
        "duplicate_of": r.duplicate_of,
        "probable_duplicate_of": r.probable_duplicate_of,
        "message_count": r.message_count,
    })
}

pub fn message_json(m: &MessageRow) -> Value {
    json!({
        "id": m.id,
        "message_id": m.message_id,
        "received_at": m.received_at.map(rfc3339),
        "from": m.from,
        "subject": m.subject,
        "classification": m.classification.map(|c| c.as_str()),
        "reference": m.reference,
        "detail": m.detail,
        "attempts": m.attempts,
    })
}

fn event_json(e: &EventRow) -> Value {
    json!({ "at": rfc3339(e.at), "actor": e.actor, "kind": e.kind.as_str(), "detail": e.detail })
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn print_requests(rows: &[RequestRow], format: ListFormat) -> anyhow::Result<()> {
    match format {
        ListFormat::Json => print_json(&Value::Array(rows.iter().map(request_json).collect())),
        ListFormat::Csv => write_requests_csv(rows, std::io::stdout().lock()),
        ListFormat::Table => {
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.reference.clone(),
                        r.status.to_string(),
                        r.decision.map(|d| d.to_string()).unwrap_or_default(),
                        r.received_at.format("%Y-%m-%d %H:%M").to_string(),
                        r.organisation.clone().unwrap_or_else(|| r.requester.clone()),
                        r.subject.clone(),
                    ]
                })
                .collect();
            print_table(&["REFERENCE", "STATUS", "DECISION", "RECEIVED (UTC)", "FROM", "SUBJECT"], &table)
        }
    }
}

fn print_messages(rows: &[MessageRow], format: TableFormat) -> anyhow::Result<()> {
    match format {
        TableFormat::Json => print_json(&Value::Array(rows.iter().map(message_json).collect())),
        TableFormat::Table => {
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|m| {
                    vec![
                        m.id.to_string(),
                        m.received_at.map(|t| t.format("%Y-%m-%d %H:%M").to_string()).unwrap_or_default(),
                        m.classification
                            .map(|c| c.as_str().to_string())
                            .unwrap_or_else(|| "(pending)".into()),
                        m.reference.clone().unwrap_or_default(),
                        m.from.clone().unwrap_or_default(),
                        m.subject.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            print_table(&["ID", "RECEIVED (UTC)", "CLASS", "REFERENCE", "FROM", "SUBJECT"], &table)
        }
    }
}

async fn show_request(store: &SharedStore, r: &RequestRow, format: TextFormat) -> anyhow::Result<()> {
    let messages = store.request_messages(r.id).await?;
    let events = store.request_events(r.id).await?;
    match format {
        TextFormat::Json => {
            let mut v = request_json(r);
            v["messages"] = Value::Array(messages.iter().map(message_json).collect());
            v["events"] = Value::Array(events.iter().map(event_json).collect());
            print_json(&v)
        }
        TextFormat::Text => {
            let mut out = std::io::stdout().lock();
            let requester = crate::mailings::requester_display(r.requester_name.as_deref(), &r.requester);
            writeln!(out, "{}  {}", r.reference, r.subject)?;
            writeln!(out, "Status:       {}", r.status)?;
            if let Some(d) = r.decision {
                let detail = r.decision_detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default();
                writeln!(out, "Decision:     {d}{detail}")?;
            }
            if let Some(date) = r.meeting_date {
                writeln!(out, "Meeting:      {date}")?;
            }
            writeln!(out, "Requester:    {requester}")?;
            if let Some(org) = &r.organisation {
                writeln!(out, "Organisation: {org}")?;
            }
            if let Some(via) = &r.via {
                writeln!(out, "Forwarded by: {via}")?;
            }
            writeln!(out, "Received:     {}", rfc3339(r.received_at))?;
            if !r.priorities.is_empty() {
                writeln!(out, "Priorities:   {}", r.priorities.join(", "))?;
            }
            if let Some(d) = &r.duplicate_of {
                writeln!(out, "Duplicate of: {d}")?;
            }
            if let Some(d) = &r.probable_duplicate_of {
                writeln!(out, "Probably the same as: {d}")?;
            }
            writeln!(out, "\n{}\n", r.body.trim())?;
            writeln!(out, "Messages ({}):", messages.len())?;
            for m in &messages {
                writeln!(
                    out,
                    "  {}  {:<10} {}  {}",
                    m.received_at.map(rfc3339).unwrap_or_default(),
                    m.classification.map(|c| c.as_str()).unwrap_or("(pending)"),
                    m.from.as_deref().unwrap_or_default(),
                    m.subject.as_deref().unwrap_or_default()
                )?;
            }
            writeln!(out, "Events:")?;
            for e in &events {
                let detail = e.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
                writeln!(out, "  {}  {} ({}){detail}", rfc3339(e.at), e.kind, e.actor)?;
            }
            Ok(())
        }
    }
}

async fn summary(config: &Config, command: SummaryCommand) -> anyhow::Result<ExitCode> {
    use crate::summary::{Period, Sent};
    let tz = config.service.timezone;
    let period = |week: Option<String>| -> anyhow::Result<Period> {
        Ok(match week {
            Some(w) => Period::week_containing(
                chrono::NaiveDate::parse_from_str(w.trim(), "%Y-%m-%d")
                    .with_context(|| format!("--week {w:?} is not a date: write YYYY-MM-DD"))?,
                tz,
            ),
            None => Period::seven_days_to(SystemClock.now(), tz),
        })
    };
    let summaries = summaries(config).await?;
    match command {
        SummaryCommand::Preview { week, format } => {
            let text = summaries.render(&period(week)?, matches!(format, SummaryFormat::Html)).await?;
            print!("{text}");
        }
        SummaryCommand::Send { week, force } => match summaries.send(&period(week)?, force).await? {
            Sent::Sent { period, to } => {
                println!("summary for the week of {period} queued for {}", to.join(", "));
            }
            Sent::AlreadySent { period } => {
                println!(
                    "the summary for the week of {period} was already sent; nothing sent (use --force to send it again)"
                );
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

/// The board's mailings as the CLI drives them: the system clock, the migrated store.
async fn summaries(config: &Config) -> anyhow::Result<crate::summary::Summaries> {
    let templates = std::sync::Arc::new(crate::templates::Templates::load(config)?);
    let store = open_migrated(config).await?;
    Ok(crate::summary::Summaries::new(
        std::sync::Arc::new(config.clone()),
        store,
        std::sync::Arc::new(crate::clock::SystemClock),
        templates,
    ))
}

async fn agenda(config: &Config, command: AgendaCommand) -> anyhow::Result<ExitCode> {
    use crate::summary::agenda::AgendaSent;
    let date = |d: &str| -> anyhow::Result<chrono::NaiveDate> {
        chrono::NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d")
            .with_context(|| format!("{d:?} is not a date: write YYYY-MM-DD"))
    };
    let summaries = summaries(config).await?;
    match command {
        AgendaCommand::Preview { date: d, format } => {
            let text = summaries.render_agenda(date(&d)?, matches!(format, SummaryFormat::Html)).await?;
            print!("{text}");
        }
        AgendaCommand::Send { date: d, force } => {
            let date = date(&d)?;
            match summaries.send_agenda_now(date, force).await? {
                AgendaSent::Sent { items, to } => {
                    println!(
                        "agenda for the meeting on {date} ({items} item(s)) queued for {}",
                        to.join(", ")
                    );
                }
                AgendaSent::AlreadySent => println!(
                    "the agenda for the meeting on {date} was already sent; nothing sent (changes since go as agenda updates; use --force to send it again)"
                ),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn triage(
    config: &Config,
    reference: &str,
    decision: &str,
    arg: Option<&str>,
    message: Option<String>,
    priorities: Vec<String>,
    note: Option<String>,
) -> anyhow::Result<ExitCode> {
    use crate::triage::grammar::{Command as Decide, Reply};
    let decision: crate::domain::Decision = decision.parse()?;
    let command = match Decide::from_parts(decision, arg) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gatehouse: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let templates = std::sync::Arc::new(crate::templates::Templates::load(config)?);
    let store = open_migrated(config).await?;
    let Some(request) = store.find_request(reference).await? else {
        eprintln!("gatehouse: no request {reference}");
        return Ok(ExitCode::FAILURE);
    };
    let reply = Reply {
        decision: Some(command),
        priorities: priorities.iter().map(|p| p.trim().to_ascii_lowercase()).collect(),
        notes: note.into_iter().collect(),
        message: message.unwrap_or_default(),
        circulate: None,
    };
    let triage = crate::triage::Triage::new(std::sync::Arc::new(config.clone()), templates);
    let mut tx = store.begin().await?;
    match triage
        .decide(&mut *tx, &request, &reply, &crate::triage::Actor::Operator, SystemClock.now())
        .await?
    {
        Ok(summary) => {
            tx.commit().await?;
            println!("{}: {summary}", request.reference);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("gatehouse: {}: {e}; nothing changed", request.reference);
            Ok(ExitCode::FAILURE)
        }
    }
}

/// How stale the daemon's heartbeat may be before `status` says it is not running.
const HEARTBEAT_LIMIT_SECS: i64 = 120;

async fn status(config: &Config, format: TextFormat) -> anyhow::Result<ExitCode> {
    let store = open_migrated(config).await?;
    let daemon = store.daemon_status().await?;
    let outbox = store.outbox_counts().await?;
    let last_summary = store.last_summary().await?;
    let now = SystemClock.now();
    let alive = daemon.as_ref().is_some_and(|d| (now - d.last_seen).num_seconds() <= HEARTBEAT_LIMIT_SECS);
    let imap = match &daemon {
        Some(d) if alive => d.imap.clone(),
        _ => "down".to_string(),
    };
    let watching = matches!(imap.as_str(), "idle" | "polling");
    let smtp_error = daemon.as_ref().and_then(|d| d.smtp_last_error.as_ref());
    let nodes = crate::daemon::leadership::nodes(config, now).await?;
    match format {
        TextFormat::Json => print_json(&json!({
            "imap": imap,
            "imap_detail": daemon.as_ref().and_then(|d| d.imap_detail.clone()),
            "last_seen": daemon.as_ref().map(|d| rfc3339(d.last_seen)),
            "started_at": daemon.as_ref().map(|d| rfc3339(d.started_at)),
            "running": alive,
            "outbox_pending": outbox.pending,
            "outbox_failed": outbox.failed,
            "smtp_last_sent": daemon.as_ref().and_then(|d| d.smtp_last_sent).map(rfc3339),
            "smtp_last_error": smtp_error.map(|(e, _)| e),
            "smtp_last_error_at": smtp_error.map(|(_, at)| rfc3339(*at)),
            "last_summary": last_summary.map(rfc3339),
            "nodes": nodes.iter().map(|n| json!({
                "node": n.node,
                "role": n.role.as_str(),
                "last_seen": rfc3339(n.last_seen),
            })).collect::<Vec<_>>(),
        }))?,
        TextFormat::Text => {
            let seen = daemon.as_ref().map(|d| rfc3339(d.last_seen)).unwrap_or_else(|| "never".into());
            println!("daemon:        {}", if alive { "running" } else { "not running" });
            println!("imap:          {imap}");
            if let Some(detail) = daemon.as_ref().and_then(|d| d.imap_detail.as_deref()) {
                println!("               {detail}");
            }
            println!("last seen:     {seen}");
            println!("outbox:        {} pending, {} failed", outbox.pending, outbox.failed);
            let sent = daemon.as_ref().and_then(|d| d.smtp_last_sent).map(rfc3339);
            println!("smtp sent:     {}", sent.unwrap_or_else(|| "never".into()));
            if let Some((error, at)) = smtp_error {
                println!("smtp error:    {} {error}", rfc3339(*at));
            }
            println!("last summary:  {}", last_summary.map(rfc3339).unwrap_or_else(|| "never".into()));
            for (i, n) in nodes.iter().enumerate() {
                let label = if i == 0 { "nodes:" } else { "" };
                println!("{label:<15}{} {} (last seen {})", n.node, n.role.as_str(), rfc3339(n.last_seen));
            }
        }
    }
    Ok(if alive && watching { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The CSV columns of `requests list`, named as in the JSON rows.
const CSV_COLUMNS: [&str; 14] = [
    "reference",
    "status",
    "decision",
    "requester",
    "requester_name",
    "organisation",
    "via",
    "subject",
    "received_at",
    "decided_at",
    "meeting_date",
    "priorities",
    "duplicate_of",
    "message_count",
];

/// `requests list --format csv` (RFC 4180, by the `csv` crate): a header row, then one row
/// per request with the JSON row's values; absent is empty, a list is joined with `;`.
fn write_requests_csv(rows: &[RequestRow], out: impl std::io::Write) -> anyhow::Result<()> {
    let mut csv = csv::Writer::from_writer(out);
    csv.write_record(CSV_COLUMNS).context("Cannot write the CSV")?;
    for r in rows {
        let v = request_json(r);
        let cells = CSV_COLUMNS.iter().map(|c| match &v[*c] {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(";"),
            other => other.to_string(),
        });
        csv.write_record(cells).context("Cannot write the CSV")?;
    }
    csv.flush().context("Cannot write the CSV")?;
    Ok(())
}

fn print_table(headers: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
    const MAX: usize = 60;
    let clip = |s: &str| -> String {
        let one_line = s.replace(['\r', '\n', '\t'], " ");
        if one_line.chars().count() > MAX {
            format!("{}…", one_line.chars().take(MAX - 1).collect::<String>())
        } else {
            one_line
        }
    };
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|c| clip(c)).collect()).collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    let line = |cells: Vec<String>| -> String {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}", w = *w))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(out, "{}", line(headers.iter().map(|h| h.to_string()).collect()))?;
    for row in rows {
        writeln!(out, "{}", line(row))?;
    }
    out.flush().context("Cannot write")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_keep_commas_quotes_and_line_breaks() {
        let row = RequestRow {
            id: crate::store::RequestId(1),
            reference: "GP-2026-0042".into(),
            status: Status::AwaitingTriage,
            decision: None,
            decision_detail: None,
            requester: "jo@icb.test".into(),
            requester_name: Some("Bloggs, Jo \"JB\"".into()),
            organisation: Some("Anytown ICB".into()),
            via: None,
            subject: "Phlebotomy, \"urgent\"\r\nfrom April".into(),
            body: String::new(),
            received_at: chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default(),
            decided_at: None,
            meeting_date: None,
            priorities: vec!["workforce".into(), "shift".into()],
            duplicate_of: None,
            probable_duplicate_of: None,
            message_count: 2,
            token: String::new(),
            answer: true,
            requester_unverified: false,
        };
        let mut out = Vec::new();
        write_requests_csv(std::slice::from_ref(&row), &mut out).unwrap();
        let mut reader = csv::Reader::from_reader(out.as_slice());
        assert_eq!(reader.headers().unwrap().iter().collect::<Vec<_>>(), CSV_COLUMNS);
        let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(records.len(), 1);
        let cell = |name: &str| &records[0][CSV_COLUMNS.iter().position(|c| *c == name).unwrap()];
        assert_eq!(cell("subject"), "Phlebotomy, \"urgent\"\r\nfrom April");
        assert_eq!(cell("requester_name"), "Bloggs, Jo \"JB\"");
        assert_eq!(cell("priorities"), "workforce;shift");
        assert_eq!(cell("decision"), "");
        assert_eq!(cell("message_count"), "2");
    }
}
