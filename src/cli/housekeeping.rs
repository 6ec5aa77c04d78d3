//! The commands an information-governance lead asks for: `purge` (retention now),
//! `export --person` (a subject access request), `erase` (the right to erasure) and
//! `backup`. Each is recorded in the event log by who ran it, with counts, never content.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::{Value, json};

use super::{TextFormat, event_json, message_json, print_json, request_json};
use crate::clock::{Clock, SystemClock, rfc3339};
use crate::config::Config;
use crate::domain::EmailAddress;
use crate::retention::{Purged, Retention, operator_actor};
use crate::store::retention::{Affected, PersonData, PurgeCounts};
use crate::store::{EventKind, SharedStore};

/// The kinds a purge takes, in the order shown, with how each is named and its JSON key.
fn kinds(c: &PurgeCounts) -> [(&'static str, &'static str, Affected); 4] {
    [
        ("raw_messages", "incoming messages' bytes (attachments included)", c.raw_messages),
        ("sent_mail", "sent emails' bytes and recipients", c.sent_mail),
        ("answer_records", "records of whom gatehouse answered", c.answer_records),
        ("closed_requests", "closed requests anonymised", c.closed_requests),
    ]
}

fn affected_json(a: &Affected) -> Value {
    json!({ "count": a.count, "oldest": a.oldest.map(rfc3339), "newest": a.newest.map(rfc3339) })
}

/// `gatehouse purge [--dry-run]`.
pub(super) async fn purge(
    config: &Config,
    store: SharedStore,
    dry_run: bool,
    format: TextFormat,
) -> anyhow::Result<ExitCode> {
    let retention = Retention::new(Arc::new(config.clone()), store, Arc::new(SystemClock));
    let (counts, purged) = if dry_run {
        (retention.preview().await?, None)
    } else {
        let p: Purged = retention.purge(operator_actor()).await?;
        (p.counts, Some(p))
    };
    match format {
        TextFormat::Json => {
            let mut v = json!({ "dry_run": dry_run });
            for (key, _, a) in kinds(&counts) {
                v[key] = affected_json(&a);
            }
            if let Some(p) = purged {
                v["database_bytes_before"] = json!(p.reclaimed.bytes_before);
                v["database_bytes_after"] = json!(p.reclaimed.bytes_after);
                v["space_reclaimed_by"] = json!(p.reclaimed.how);
            }
            print_json(&v)?;
        }
        TextFormat::Text => {
            let mut out = std::io::stdout().lock();
            let r = config.retention;
            writeln!(
                out,
                "{} (raw messages {} days, sent mail {} days, closed requests {} months):",
                if dry_run { "Would remove (dry run, nothing changed)" } else { "Removed" },
                r.raw_messages_days,
                r.sent_mail_days,
                r.closed_requests_months
            )?;
            for (_, name, a) in kinds(&counts) {
                let range = match (a.oldest, a.newest) {
                    (Some(o), Some(n)) => format!("  (oldest {}, newest {})", rfc3339(o), rfc3339(n)),
                    _ => String::new(),
                };
                writeln!(out, "  {:>7}  {name}{range}", a.count)?;
            }
            if let Some(p) = purged {
                writeln!(
                    out,
                    "Database: {} -> {} bytes (space given back: {})",
                    p.reclaimed.bytes_before, p.reclaimed.bytes_after, p.reclaimed.how
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `gatehouse erase REF`.
pub(super) async fn erase(store: SharedStore, reference: &str) -> anyhow::Result<ExitCode> {
    let Some(e) = store.erase_request(reference, operator_actor(), SystemClock.now()).await? else {
        eprintln!("gatehouse: no request {reference}");
        return Ok(ExitCode::FAILURE);
    };
    println!(
        "{reference}: personal data removed (requester, name, forwarder, subject, body, outcome text, notes), with the bytes of {} incoming message(s) and {} sent email(s); {} unsent email(s) cancelled. Its reference, dates, organisation, decision and priorities remain.",
        e.raw_messages, e.sent_mail, e.cancelled_mail
    );
    if e.in_flight_mail > 0 {
        println!(
            "{} email(s) about it were being sent at that moment; their bytes go at the next purge (`gatehouse purge`).",
            e.in_flight_mail
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates `dir` private to this user, refusing one that exists with anything in it: an
/// export must not mix with other files.
fn create_export_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).with_context(|| format!("Cannot read {}", dir.display()))?;
        if entries.next().is_some() {
            anyhow::bail!("{} is not empty: give a new folder for the export", dir.display());
        }
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    for sub in ["", "requests", "incoming", "sent"] {
        builder
            .create(dir.join(sub))
            .with_context(|| format!("Cannot create {}", dir.join(sub).display()))?;
    }
    Ok(())
}

/// Writes a file only this user can read: it holds someone's personal data.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("Cannot create {}", path.display()))?;
    file.write_all(bytes).with_context(|| format!("Cannot write {}", path.display()))
}

fn pretty(v: &Value) -> anyhow::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(v).context("Cannot write JSON")?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// `gatehouse export --person ADDRESS DIR`.
pub(super) async fn export(
    config: &Config,
    store: SharedStore,
    address: &str,
    dir: &Path,
) -> anyhow::Result<ExitCode> {
    let person = EmailAddress::parse(address).with_context(|| format!("--person {address:?}"))?;
    let data = store.person_data(&person).await?;
    create_export_dir(dir)?;
    write_export(config, &person, &data, dir)?;
    let (held, gone) =
        data.incoming.iter().fold((0, 0), |(h, g), m| if m.raw.is_some() { (h + 1, g) } else { (h, g + 1) });
    store
        .add_service_event(
            SystemClock.now(),
            operator_actor(),
            EventKind::Export,
            &format!(
                "subject access export: {} request(s), {} incoming message(s) ({held} with bytes), {} sent email(s)",
                data.requests.len(),
                data.incoming.len(),
                data.sent.len()
            ),
        )
        .await?;
    println!(
        "Wrote {}: {} request(s), {} incoming message(s) ({held} as .eml, {gone} whose bytes retention had already removed), {} sent email(s). See README.txt there.",
        dir.display(),
        data.requests.len(),
        data.incoming.len(),
        data.sent.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn write_export(config: &Config, person: &EmailAddress, data: &PersonData, dir: &Path) -> anyhow::Result<()> {
    // Someone who has written for years may have thousands of emails: say how far it got.
    let files = data.requests.len() + data.incoming.len() + data.sent.len();
    let mut progress = crate::progress::Progress::cli("Writing the export (files)", files as u64);
    for held in &data.requests {
        progress.add(1);
        let mut v = request_json(&held.request);
        v["body"] = json!(held.request.body);
        v["anonymised_at"] = json!(held.anonymised_at.map(rfc3339));
        v["events"] = Value::Array(held.events.iter().map(event_json).collect());
        // The reference is ours (prefix, year, number): safe as a file name.
        write_private(&dir.join("requests").join(format!("{}.json", held.request.reference)), &pretty(&v)?)?;
    }
    let mut incoming = Vec::new();
    for m in &data.incoming {
        progress.add(1);
        let file = match &m.raw {
            Some(raw) => {
                let name = format!("incoming/{:06}.eml", m.row.id);
                write_private(&dir.join(&name), raw)?;
                Some(name)
            }
            None => None,
        };
        let mut v = message_json(&m.row);
        v["fetched_at"] = json!(rfc3339(m.fetched_at));
        v["file"] = json!(file);
        incoming.push(v);
    }
    write_private(&dir.join("incoming.json"), &pretty(&Value::Array(incoming))?)?;
    let mut sent = Vec::new();
    for m in &data.sent {
        progress.add(1);
        let file = if m.raw.is_empty() {
            None
        } else {
            let name = format!(
                "sent/{:06}-{}.eml",
                m.id,
                m.kind.replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "-")
            );
            write_private(&dir.join(&name), &m.raw)?;
            Some(name)
        };
        sent.push(json!({
            "id": m.id,
            "kind": m.kind,
            "reference": m.reference,
            "message_id": m.message_id,
            "recipients": m.recipients,
            "subject": m.subject,
            "status": m.status,
            "created_at": rfc3339(m.created_at),
            "sent_at": m.sent_at.map(rfc3339),
            "file": file,
        }));
    }
    write_private(&dir.join("sent.json"), &pretty(&Value::Array(sent))?)?;
    progress.finish();
    let r = config.retention;
    let readme = format!(
        "Subject access export from gatehouse ({service})\n\
         Person: {person} (any +tag of this address, any letter case)\n\
         Written: {at}\n\n\
         requests/REF.json  each request where they are the requester or forwarded it: the\n\
         \x20                  details, the text, the decision and the request's event log\n\
         \x20                  ({requests} request(s))\n\
         incoming.json      every message from them, or from the requester or forwarder of\n\
         \x20                  one of those requests ({incoming} message(s)); \"file\" names\n\
         \x20                  its exact bytes (gatekeepers' replies are not included)\n\
         incoming/*.eml     those bytes, attachments included, as received\n\
         sent.json          every email gatehouse sent (or queued) to them ({sent} email(s))\n\
         sent/*.eml         those emails exactly as sent\n\n\
         A \"file\" of null means the bytes are no longer held: gatehouse keeps incoming\n\
         messages' bytes for {raw} days and sent emails for {sent_days} days, and keeps a closed\n\
         request's personal data for {months} months ([retention]; README \"Retention\").\n\
         Emails to the gatekeepers and the board that mention them are not included here;\n\
         the request's event log shows when those went.\n",
        service = config.service.name,
        at = rfc3339(SystemClock.now()),
        requests = data.requests.len(),
        incoming = data.incoming.len(),
        sent = data.sent.len(),
        raw = r.raw_messages_days,
        sent_days = r.sent_mail_days,
        months = r.closed_requests_months,
    );
    write_private(&dir.join("README.txt"), readme.as_bytes())
}

/// `gatehouse backup FILE [--force]`.
pub(super) async fn backup(store: SharedStore, file: &Path, force: bool) -> anyhow::Result<ExitCode> {
    if file.exists() && !force {
        eprintln!("gatehouse: {} exists; give a new file name, or --force to replace it", file.display());
        return Ok(ExitCode::FAILURE);
    }
    let name = file.file_name().context("FILE must name a file")?.to_string_lossy().into_owned();
    // Written beside the target and moved into place only once checked, so FILE is never a
    // half-written copy.
    let partial: PathBuf = file.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    write_private(&partial, b"")?;
    let started = std::time::Instant::now();
    let done = match store.backup_to(&partial).await {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.into());
        }
    };
    let placed = if force {
        std::fs::rename(&partial, file)
    } else {
        // A hard link refuses to replace a file that appeared meanwhile.
        std::fs::hard_link(&partial, file).and_then(|()| std::fs::remove_file(&partial))
    };
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&partial);
        return Err(e).with_context(|| format!("Cannot put the backup at {}", file.display()));
    }
    let took = started.elapsed();
    store
        .add_service_event(
            SystemClock.now(),
            operator_actor(),
            EventKind::Backup,
            &format!("{} bytes ({} pages), integrity_check ok", done.bytes, done.pages),
        )
        .await?;
    println!(
        "Backup written to {} ({} bytes, integrity_check ok) in {:.1} s",
        file.display(),
        done.bytes,
        took.as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
