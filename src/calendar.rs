//! The calendar invitation a `meeting` outcome carries: one RFC 5545 VCALENDAR with
//! `METHOD:REQUEST` (an iTIP request, RFC 5546) and one VEVENT, which Outlook and Gmail
//! offer to add to the calendar in one click.
//!
//! Pure: text in, text out. Everything in it but the configured place and the shared
//! address comes from the requester's email (subject, name), so every value is escaped and
//! every line folded here, in one place: no value can end its line and start a property or
//! component of its own.
//!
//! The event's UID is the request's, so a later decision for the same request (another
//! date, the same date again) updates the one event in the requester's calendar rather than
//! adding a second; its SEQUENCE grows with the time of the decision.

use chrono::{DateTime, Duration, NaiveDate, TimeZone as _, Utc};
use chrono_tz::Tz;

use crate::classify::AttachmentBody;
use crate::config::{Config, MeetingSlot};
use crate::domain::EmailAddress;

/// The MIME type of the invitation: `method` must match the calendar's METHOD, or Outlook
/// shows "not supported calendar message".
pub const CONTENT_TYPE: &str = "text/calendar; method=REQUEST; charset=UTF-8";

/// The file name the invitation is also attached under.
pub const FILE_NAME: &str = "invite.ics";

/// At most this many characters of the requester's subject go into the event's title.
const SUMMARY_SUBJECT_CHARS: usize = 150;

/// RFC 5545 §3.1: content lines are folded to at most 75 octets, excluding the line break.
const FOLD_AT: usize = 75;

/// A person in the invitation: the organiser (the shared address) or the attendee (the
/// requester).
#[derive(Debug, Clone)]
pub struct Person<'a> {
    pub name: Option<&'a str>,
    pub address: &'a EmailAddress,
}

/// What one invitation says.
#[derive(Debug, Clone)]
pub struct Invitation<'a> {
    /// The request's reference (GP-2026-0042): the event's identity and the start of its
    /// title.
    pub reference: &'a str,
    /// The requester's subject, as written.
    pub subject: &'a str,
    /// The service's name, for the title's end and the description.
    pub service: &'a str,
    pub slot: &'a MeetingSlot,
    /// The zone `slot.time` is a local time in (`[service] timezone`).
    pub timezone: Tz,
    pub organizer: Person<'a>,
    pub attendee: Person<'a>,
    /// When the decision was made: DTSTAMP, and the SEQUENCE.
    pub decided: DateTime<Utc>,
}

/// The stable identity of a request's meeting event: the same for every decision on it,
/// so each new invitation replaces the last in the requester's calendar.
pub fn uid(reference: &str, organizer: &EmailAddress) -> String {
    format!("meeting-{}@{}", reference.to_ascii_lowercase(), organizer.domain())
}

/// The revision number of an invitation sent at `at`: minutes since 2026, so a later
/// decision always has a higher SEQUENCE without gatehouse counting earlier ones (calendar
/// clients only compare it), and it fits iCalendar's 32-bit INTEGER for millennia.
pub fn sequence(at: DateTime<Utc>) -> i64 {
    let epoch = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap_or_default();
    ((at - epoch).num_minutes()).clamp(0, i64::from(i32::MAX))
}

/// The VCALENDAR text, CRLF line ends, every line folded.
pub fn invitation(i: &Invitation<'_>) -> String {
    let stamp = utc(i.decided);
    let (start, end) = match i.slot.time {
        Some(time) => {
            let local = i.slot.date.and_time(time);
            // A time the clocks skip (never 13:00, but the config allows any) is taken an
            // hour later, as the clocks show it.
            let start = i
                .timezone
                .from_local_datetime(&local)
                .earliest()
                .or_else(|| i.timezone.from_local_datetime(&(local + Duration::hours(1))).earliest())
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_else(|| Utc.from_utc_datetime(&local));
            let end = start + Duration::minutes(i64::from(i.slot.length_minutes));
            (format!("DTSTART:{}", utc(start)), format!("DTEND:{}", utc(end)))
        }
        // No time known: an all-day event on the meeting's date (DTEND is exclusive).
        None => (
            format!("DTSTART;VALUE=DATE:{}", date(i.slot.date)),
            format!("DTEND;VALUE=DATE:{}", date(i.slot.date + Duration::days(1))),
        ),
    };
    let subject: String = i.subject.chars().take(SUMMARY_SUBJECT_CHARS).collect();
    let title = format!("{}: {} ({})", i.reference, subject.trim(), i.service);
    let mut description = format!(
        "Your approach {} (\"{}\") will come to the {} meeting on {}.",
        i.reference,
        subject.trim(),
        i.service,
        crate::templates::long_date(i.slot.date)
    );
    if i.slot.time.is_none() {
        description.push_str(" The time will follow.");
    }
    if let Some(place) = &i.slot.place {
        description.push_str(&format!("\n\nWhere: {place}"));
    }
    let mut lines = vec![
        "BEGIN:VCALENDAR".to_string(),
        "VERSION:2.0".into(),
        "PRODID:-//gatehouse//meeting invitation//EN".into(),
        "CALSCALE:GREGORIAN".into(),
        "METHOD:REQUEST".into(),
        "BEGIN:VEVENT".into(),
        format!("UID:{}", text(&uid(i.reference, i.organizer.address))),
        format!("SEQUENCE:{}", sequence(i.decided)),
        format!("DTSTAMP:{stamp}"),
        start,
        end,
        format!("SUMMARY:{}", text(&title)),
    ];
    if let Some(place) = &i.slot.place {
        lines.push(format!("LOCATION:{}", text(place)));
    }
    lines.extend([
        format!("DESCRIPTION:{}", text(&description)),
        format!("ORGANIZER{}:{}", common_name(&i.organizer), mailto(i.organizer.address)),
        // RSVP=FALSE: the requester need not answer, and an answer would only land in the
        // shared mailbox as a new email.
        format!(
            "ATTENDEE{};ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=FALSE:{}",
            common_name(&i.attendee),
            mailto(i.attendee.address)
        ),
        "STATUS:CONFIRMED".into(),
        "TRANSP:OPAQUE".into(),
        "END:VEVENT".into(),
        "END:VCALENDAR".into(),
    ]);
    lines.iter().map(|l| fold(l)).collect()
}

/// The invitation to `attendee` for the meeting on `date` that request `reference`
/// (`subject`) was given, decided at `decided`: an attachment entry the outbox makes the
/// email's calendar part (see [`CONTENT_TYPE`]).
pub fn for_request(
    config: &Config,
    reference: &str,
    subject: &str,
    date: NaiveDate,
    attendee: Person<'_>,
    decided: DateTime<Utc>,
) -> AttachmentBody {
    let slot = config.meetings.slot(date);
    let from = &config.smtp.from;
    let ics = invitation(&Invitation {
        reference,
        subject,
        service: &config.service.name,
        slot: &slot,
        timezone: config.service.timezone,
        organizer: Person { name: from.name.as_deref(), address: &from.address },
        attendee,
        decided,
    });
    AttachmentBody { name: FILE_NAME.into(), content_type: CONTENT_TYPE.into(), bytes: ics.into_bytes() }
}

/// Whether an attachment entry is an invitation built here (the outbox places it).
pub fn is_invitation(content_type: &str) -> bool {
    content_type.to_ascii_lowercase().starts_with("text/calendar")
}

fn utc(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

fn date(d: NaiveDate) -> String {
    d.format("%Y%m%d").to_string()
}

/// A TEXT value (RFC 5545 §3.3.11): backslash, semicolon and comma escaped, a line break
/// written as `\n`, and any other control character (which TEXT may not hold) a space.
pub fn text(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\r' => {
                chars.next_if_eq(&'\n');
                out.push_str("\\n");
            }
            '\n' | '\u{2028}' | '\u{2029}' | '\u{85}' => out.push_str("\\n"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// `;CN="…"` for a person with a usable name, else nothing. A parameter value may not hold
/// a double quote or a control character at all (RFC 5545 §3.1), so those become spaces.
fn common_name(p: &Person<'_>) -> String {
    let Some(name) = p.name.and_then(crate::domain::display_name) else { return String::new() };
    let clean: String = name.chars().map(|c| if c == '"' || c.is_control() { ' ' } else { c }).collect();
    let clean = clean.split_whitespace().collect::<Vec<_>>().join(" ");
    if clean.is_empty() { String::new() } else { format!(";CN=\"{clean}\"") }
}

/// `mailto:` and the address, any character a URI may not carry as it is percent-encoded
/// (the mail library accepts addresses with characters a calendar line must not hold).
fn mailto(address: &EmailAddress) -> String {
    let mut out = String::from("mailto:");
    for b in address.as_str().bytes() {
        if b.is_ascii_alphanumeric() || b"@.-_+!$&'*=?^`{|}~%".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One content line folded at [`FOLD_AT`] octets (never inside a UTF-8 character), each
/// continuation starting with a space, and ended with CRLF.
fn fold(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + line.len() / FOLD_AT * 3 + 2);
    let mut used = 0;
    for c in line.chars() {
        let len = c.len_utf8();
        if used + len > FOLD_AT {
            out.push_str("\r\n ");
            used = 1;
        }
        out.push(c);
        used += len;
    }
    out.push_str("\r\n");
    out
}

#[cfg(test)]
mod tests {
    use chrono::NaiveTime;
    use chrono_tz::Europe::London;

    use super::*;

    fn slot(time: Option<(u32, u32)>, place: Option<&str>) -> MeetingSlot {
        MeetingSlot {
            date: NaiveDate::from_ymd_opt(2027, 1, 7).unwrap(),
            time: time.map(|(h, m)| NaiveTime::from_hms_opt(h, m, 0).unwrap()),
            length_minutes: 90,
            place: place.map(str::to_string),
        }
    }

    fn render(subject: &str, name: Option<&str>, slot: &MeetingSlot) -> String {
        let shared = EmailAddress::parse("gp-access@nhs.test").unwrap();
        let requester = EmailAddress::parse("jo.bloggs@icb.test").unwrap();
        invitation(&Invitation {
            reference: "GP-2026-0042",
            subject,
            service: "Anytown GP Leadership Group",
            slot,
            timezone: London,
            organizer: Person { name: Some("Anytown GP Single Point of Access"), address: &shared },
            attendee: Person { name, address: &requester },
            decided: Utc.with_ymd_and_hms(2026, 12, 6, 9, 30, 0).unwrap(),
        })
    }

    /// The content lines, unfolded as a calendar client reads them.
    fn unfolded(ics: &str) -> Vec<String> {
        assert!(ics.ends_with("\r\n"));
        assert!(!ics.replace("\r\n", "").contains(['\r', '\n']), "a bare CR or LF: {ics:?}");
        ics.replace("\r\n ", "").split("\r\n").filter(|l| !l.is_empty()).map(str::to_string).collect()
    }

    fn property<'a>(lines: &'a [String], name: &str) -> Vec<&'a str> {
        lines.iter().filter(|l| l.split([':', ';']).next() == Some(name)).map(String::as_str).collect()
    }

    #[test]
    fn a_timed_meeting_is_an_event_in_utc_for_its_local_time_and_length() {
        let ics = render("Phlebotomy, in practices", Some("Jo Bloggs"), &slot(Some((13, 0)), Some("Room 2")));
        let lines = unfolded(&ics);
        assert_eq!(lines[0], "BEGIN:VCALENDAR");
        assert!(lines.contains(&"METHOD:REQUEST".to_string()));
        // January: London is on GMT.
        assert_eq!(property(&lines, "DTSTART"), ["DTSTART:20270107T130000Z"]);
        assert_eq!(property(&lines, "DTEND"), ["DTEND:20270107T143000Z"]);
        assert_eq!(property(&lines, "UID"), ["UID:meeting-gp-2026-0042@nhs.test"]);
        assert_eq!(
            property(&lines, "SUMMARY"),
            ["SUMMARY:GP-2026-0042: Phlebotomy\\, in practices (Anytown GP Leadership Group)"]
        );
        assert_eq!(property(&lines, "LOCATION"), ["LOCATION:Room 2"]);
        assert_eq!(
            property(&lines, "ORGANIZER"),
            ["ORGANIZER;CN=\"Anytown GP Single Point of Access\":mailto:gp-access@nhs.test"]
        );
        assert_eq!(
            property(&lines, "ATTENDEE"),
            [
                "ATTENDEE;CN=\"Jo Bloggs\";ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=FALSE:mailto:jo.bloggs@icb.test"
            ]
        );
        assert_eq!(property(&lines, "DTSTAMP"), ["DTSTAMP:20261206T093000Z"]);
        // Summer: 13:00 in London is 12:00 UTC.
        let mut june = slot(Some((13, 0)), None);
        june.date = NaiveDate::from_ymd_opt(2027, 6, 3).unwrap();
        let lines = unfolded(&render("x", None, &june));
        assert_eq!(property(&lines, "DTSTART"), ["DTSTART:20270603T120000Z"]);
        assert!(property(&lines, "LOCATION").is_empty());
        assert_eq!(
            property(&lines, "ATTENDEE")[0].split(':').next(),
            Some("ATTENDEE;ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=FALSE")
        );
    }

    #[test]
    fn without_a_time_the_meeting_is_an_all_day_event() {
        let lines = unfolded(&render("x", None, &slot(None, None)));
        assert_eq!(property(&lines, "DTSTART"), ["DTSTART;VALUE=DATE:20270107"]);
        assert_eq!(property(&lines, "DTEND"), ["DTEND;VALUE=DATE:20270108"]);
        assert!(property(&lines, "DESCRIPTION")[0].contains("The time will follow."));
    }

    #[test]
    fn a_later_decision_updates_the_same_event() {
        let shared = EmailAddress::parse("gp-access@nhs.test").unwrap();
        assert_eq!(uid("GP-2026-0042", &shared), uid("GP-2026-0042", &shared));
        assert_ne!(uid("GP-2026-0042", &shared), uid("GP-2026-0043", &shared));
        let first = Utc.with_ymd_and_hms(2026, 12, 6, 9, 30, 0).unwrap();
        assert!(sequence(first + Duration::minutes(1)) > sequence(first));
        assert!(sequence(Utc.with_ymd_and_hms(3000, 1, 1, 0, 0, 0).unwrap()) <= i64::from(i32::MAX));
    }

    #[test]
    fn hostile_subjects_and_names_cannot_add_properties_or_components() {
        let subject = "Hi\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nATTENDEE:mailto:victim@example.org\nORGANIZER:mailto:evil@example.org\r\nBEGIN:VALARM;x=\"y\":z\\,\u{2028}METHOD:CANCEL\u{0}\u{1b}";
        let name = "Eve\"\r\n:mailto:evil@example.org;ROLE=CHAIR\r\nATTENDEE:mailto:x@example.org";
        let place = "Room 2; Floor 1, Anytown \\ Teams";
        let ics = render(subject, Some(name), &slot(Some((13, 0)), Some(place)));
        let lines = unfolded(&ics);
        let names: Vec<&str> = lines.iter().map(|l| l.split([':', ';']).next().unwrap()).collect();
        assert_eq!(
            names,
            [
                "BEGIN",
                "VERSION",
                "PRODID",
                "CALSCALE",
                "METHOD",
                "BEGIN",
                "UID",
                "SEQUENCE",
                "DTSTAMP",
                "DTSTART",
                "DTEND",
                "SUMMARY",
                "LOCATION",
                "DESCRIPTION",
                "ORGANIZER",
                "ATTENDEE",
                "STATUS",
                "TRANSP",
                "END",
                "END"
            ],
            "{ics}"
        );
        assert_eq!(lines.iter().filter(|l| l.starts_with("METHOD")).count(), 1);
        let attendee = property(&lines, "ATTENDEE")[0];
        // The name is one quoted parameter value: no quote of its own, so it cannot close it.
        let cn = attendee.strip_prefix("ATTENDEE;CN=\"").unwrap();
        let (value, rest) = cn.split_once('"').unwrap();
        assert!(!value.contains(['\r', '\n']));
        assert!(rest.starts_with(";ROLE=REQ-PARTICIPANT;"), "{attendee}");
        assert!(attendee.ends_with(":mailto:jo.bloggs@icb.test"));
        assert_eq!(property(&lines, "LOCATION"), ["LOCATION:Room 2\\; Floor 1\\, Anytown \\\\ Teams"]);
        let summary = property(&lines, "SUMMARY")[0];
        assert!(summary.contains("Hi\\nEND:VEVENT\\nBEGIN:VEVENT"), "{summary}");
        assert!(summary.contains("z\\\\\\,\\nMETHOD"), "{summary}");
        assert!(!summary.contains('\u{0}') && !summary.contains('\u{1b}'));
    }

    #[test]
    fn long_lines_fold_at_75_octets_without_splitting_a_character() {
        let subject = "Überweisung für Phlebotomie – ".repeat(6);
        let ics = render(&subject, Some(&"Ø".repeat(80)), &slot(Some((13, 0)), Some(&"é".repeat(200))));
        for line in ics.split("\r\n") {
            assert!(line.len() <= 75, "{} octets: {line}", line.len());
        }
        let lines = unfolded(&ics);
        assert_eq!(property(&lines, "LOCATION"), [format!("LOCATION:{}", "é".repeat(200))]);
        // The title keeps the start of a long subject.
        assert!(property(&lines, "SUMMARY")[0].starts_with("SUMMARY:GP-2026-0042: Überweisung für"));
    }

    #[test]
    fn text_values_escape_what_rfc_5545_says() {
        assert_eq!(text("a\\b;c,d\ne\r\nf\rg"), "a\\\\b\\;c\\,d\\ne\\nf\\ng");
        assert_eq!(text("tab\there"), "tab here");
        assert_eq!(text("Teams: https://x.example/?a=1&b=2"), "Teams: https://x.example/?a=1&b=2");
    }
}
