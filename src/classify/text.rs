//! Plain-text helpers shared by the rest of the classifier: turning HTML
//! into readable text, cutting quoted history off a reply, and normalising
//! subjects and reference tags.
//!
//! Everything here works on `&str` and slices only at character boundaries
//! (positions of ASCII bytes, or `get(..)`), so no input can make it panic.
//! mail-parser has its own `html_to_text`, but it only breaks lines at
//! `<br>` and `</p>`: Outlook's forwarded-header blocks, Thunderbird's
//! header tables and Gmail's `<div>` lines would all run together, and the
//! forward detector works line by line, so we convert HTML ourselves.

/// Lines of at least this many underscores are Outlook's separator between
/// the new text and the quoted or forwarded message.
const MIN_UNDERSCORES: usize = 10;

/// The separator line our HTML conversion writes for `<hr>`, so that an
/// Outlook-on-the-web forward (which uses `<hr>` instead of the underscore
/// line) looks the same as a desktop Outlook forward once it is text.
pub(super) const SEPARATOR_LINE: &str = "________________________________";

/// How many `<hr>` become [`SEPARATOR_LINE`]s; later ones are only line
/// breaks. Without a cap a 40 MB mail of `<hr>` turned into 330 MB of text
/// (and 2 GB of memory downstream); a real mail has a handful.
const MAX_SEPARATORS: usize = 1000;

/// How much of a text the line-by-line scans for quoted history and
/// forward markers read ([`strip_quoted`], `forward::detect_in_text`).
/// They hold a normalised copy of every line they read, which for a 40 MB
/// body of short lines came to gigabytes; a person's new text above a quote
/// or a forward is never a megabyte long.
pub(super) const MAX_SCAN_BYTES: usize = 1 << 20;

/// Convert an HTML body into readable plain text: tags removed, entities
/// decoded, block elements turned into line breaks and paragraphs into
/// blank lines, runs of white space collapsed.
///
/// Why our own: see the module overview. Runs in one pass, O(n).
pub fn html_to_text(html: &str) -> String {
    let mut out = TextBuilder::with_capacity(html.len() / 2);
    let bytes = html.as_bytes();
    let mut pos = 0;
    let mut text_start = 0;
    let mut pre_depth: u32 = 0;

    while let Some(&b) = bytes.get(pos) {
        match b {
            b'<' => {
                out.text(html.get(text_start..pos).unwrap_or(""), pre_depth > 0);
                pos = handle_markup(html, pos, &mut out, &mut pre_depth);
                text_start = pos;
            }
            b'&' => {
                out.text(html.get(text_start..pos).unwrap_or(""), pre_depth > 0);
                pos = handle_entity(html, pos, &mut out);
                text_start = pos;
            }
            _ => pos += 1,
        }
    }
    out.text(html.get(text_start..).unwrap_or(""), pre_depth > 0);
    out.finish()
}

/// Handles the markup starting at `pos` (which holds `<`) and returns the
/// position just after it.
fn handle_markup(html: &str, pos: usize, out: &mut TextBuilder, pre_depth: &mut u32) -> usize {
    let bytes = html.as_bytes();
    let rest = bytes.get(pos + 1..).unwrap_or(&[]);

    // Comments, including Outlook's conditional `<!--[if mso]>` blocks.
    if rest.starts_with(b"!--") {
        return find_bytes(bytes, pos + 4, b"-->").map_or(bytes.len(), |end| end + 3);
    }
    // Doctype, `<![if ...]>`, processing instructions: no text inside.
    if rest.first().is_some_and(|c| *c == b'!' || *c == b'?') {
        return find_byte(bytes, pos + 1, b'>').map_or(bytes.len(), |end| end + 1);
    }

    let closing = rest.first() == Some(&b'/');
    let name_start = pos + 1 + usize::from(closing);
    let name_end = bytes
        .get(name_start..)
        .unwrap_or(&[])
        .iter()
        .position(|c| !(c.is_ascii_alphanumeric() || matches!(c, b':' | b'-' | b'_')))
        .map_or(bytes.len(), |n| name_start + n);
    let starts_with_letter = bytes.get(name_start).is_some_and(|c| c.is_ascii_alphabetic());
    if !starts_with_letter {
        // A bare `<` in text ("a < b"): keep it as text.
        out.text("<", *pre_depth > 0);
        return pos + 1;
    }

    let tag_end = find_tag_end(bytes, name_end);
    let name = html.get(name_start..name_end).unwrap_or("").to_ascii_lowercase();
    let attrs = html.get(name_end..tag_end.saturating_sub(1)).unwrap_or("");
    let after = tag_end;

    // Elements whose content is never shown as text.
    if !closing && matches!(name.as_str(), "script" | "style" | "title" | "template" | "xml") {
        let closer = format!("</{name}");
        return find_ci(bytes, after, closer.as_bytes())
            .and_then(|start| find_byte(bytes, start, b'>'))
            .map_or(bytes.len(), |end| end + 1);
    }
    if !closing && name == "head" && !out.head_never_closes {
        // Some generators never close <head>; then there is nothing to skip
        // to, and remembering that keeps many <head> tags from each
        // scanning to the end (quadratic time on hostile input).
        match find_ci(bytes, after, b"</head").and_then(|start| find_byte(bytes, start, b'>')) {
            Some(end) => return end + 1,
            None => out.head_never_closes = true,
        }
    }

    match name.as_str() {
        "br" => out.hard_break(),
        "hr" if out.separators < MAX_SEPARATORS => {
            out.separators += 1;
            out.line_break();
            out.raw(SEPARATOR_LINE);
            out.line_break();
        }
        "hr" => out.line_break(),
        "p" => {
            // Outlook writes every line as <p class=MsoNormal> with zero
            // margins and marks blank lines with an explicit empty paragraph,
            // so treating those as paragraphs would double-space everything.
            // A closing tag has no class, so it follows its opening tag.
            if !closing {
                out.in_mso_paragraph = contains_ci(attrs.as_bytes(), b"msonormal");
            }
            if out.in_mso_paragraph {
                out.line_break();
            } else {
                out.paragraph_break();
            }
        }
        "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "blockquote" | "table" | "ul" | "ol" | "dl" => {
            out.paragraph_break()
        }
        "pre" => {
            out.paragraph_break();
            if closing {
                *pre_depth = pre_depth.saturating_sub(1);
            } else {
                *pre_depth = pre_depth.saturating_add(1);
            }
        }
        "li" => {
            out.line_break();
            if !closing {
                out.raw("- ");
            }
        }
        "div" | "tr" | "dt" | "dd" | "section" | "article" | "header" | "footer" | "center" | "address"
        | "form" | "tbody" | "thead" | "tfoot" | "caption" | "fieldset" | "nav" | "main" | "aside"
        | "figure" => out.line_break(),
        "td" | "th" if closing => out.space(),
        _ => {}
    }
    after
}

/// Position just after the `>` that ends a tag, honouring quoted attribute
/// values (which may contain `>`); the end of input if it never closes.
fn find_tag_end(bytes: &[u8], from: usize) -> usize {
    let mut quote: Option<u8> = None;
    let mut pos = from;
    while let Some(&c) = bytes.get(pos) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(c),
            (None, b'>') => return pos + 1,
            (None, _) => {}
        }
        pos += 1;
    }
    bytes.len()
}

/// Decodes the entity at `pos` (which holds `&`) and returns the position
/// after it; a lone `&` is kept as text.
fn handle_entity(html: &str, pos: usize, out: &mut TextBuilder) -> usize {
    let bytes = html.as_bytes();
    // Entity names are short; a `;` further away means this is a bare `&`.
    let limit = (pos + 34).min(bytes.len());
    let semi = bytes
        .get(pos + 1..limit)
        .and_then(|window| window.iter().position(|c| *c == b';'))
        .map(|n| pos + 1 + n);
    let Some(semi) = semi else {
        out.text("&", false);
        return pos + 1;
    };
    let body = html.get(pos + 1..semi).unwrap_or("");
    let decoded = if let Some(num) = body.strip_prefix('#') {
        let parsed = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => num.parse::<u32>().ok(),
        };
        parsed.map(|code| char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER))
    } else if !body.is_empty() && body.bytes().all(|c| c.is_ascii_alphanumeric()) {
        named_entity(body)
    } else {
        None
    };
    match decoded {
        Some(ch) => {
            let mut buf = [0u8; 4];
            // NBSP is content (Outlook's blank lines are `&nbsp;` paragraphs),
            // so it is pushed as a character and only turned into a space
            // when the text is finished.
            out.raw(ch.encode_utf8(&mut buf));
            semi + 1
        }
        None => {
            out.text("&", false);
            pos + 1
        }
    }
}

/// Looks up a named entity. The common ones are listed here; anything else
/// is handed to mail-parser's full HTML5 table.
fn named_entity(name: &str) -> Option<char> {
    let ch = match name {
        "nbsp" => '\u{a0}',
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "pound" => '£',
        "euro" => '€',
        "ndash" => '–',
        "mdash" => '—',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "hellip" => '…',
        "bull" => '•',
        "middot" => '·',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "shy" => '\u{ad}',
        "zwnj" => '\u{200c}',
        "zwj" => '\u{200d}',
        _ => {
            let mut decoded = String::new();
            let token = format!("&{name};");
            // The token is ASCII, so mail-parser's internal UTF-8 check on it
            // cannot fail.
            mail_parser::decoders::html::add_html_token(&mut decoded, token.as_bytes(), false);
            let mut chars = decoded.chars();
            return match (chars.next(), chars.next()) {
                (Some(ch), None) => Some(ch),
                _ => None,
            };
        }
    };
    Some(ch)
}

/// Accumulates converted text, collapsing white space the way a browser
/// does and tracking line starts so block elements do not pile up blank
/// lines.
struct TextBuilder {
    out: String,
    pending_space: bool,
    /// Whether the last `<p>` opened was an Outlook "MsoNormal" line.
    in_mso_paragraph: bool,
    /// Set once a search for `</head>` has failed.
    head_never_closes: bool,
    /// How many `<hr>` separator lines were written.
    separators: usize,
}

impl TextBuilder {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            out: String::with_capacity(capacity),
            pending_space: false,
            in_mso_paragraph: false,
            head_never_closes: false,
            separators: 0,
        }
    }

    fn at_line_start(&self) -> bool {
        self.out.is_empty() || self.out.ends_with('\n')
    }

    /// Adds character data; white space collapses unless inside `<pre>`.
    fn text(&mut self, s: &str, preformatted: bool) {
        if s.is_empty() {
            return;
        }
        if preformatted {
            self.flush_space();
            for ch in s.chars() {
                if ch != '\r' {
                    self.out.push(ch);
                }
            }
            return;
        }
        for ch in s.chars() {
            if matches!(ch, ' ' | '\t' | '\r' | '\n' | '\u{c}') {
                self.pending_space = true;
            } else {
                self.flush_space();
                self.out.push(ch);
            }
        }
    }

    /// Adds text that must appear as is (entities, list bullets).
    fn raw(&mut self, s: &str) {
        self.flush_space();
        self.out.push_str(s);
    }

    fn space(&mut self) {
        self.pending_space = true;
    }

    fn flush_space(&mut self) {
        if self.pending_space && !self.at_line_start() && !self.out.ends_with(' ') {
            self.out.push(' ');
        }
        self.pending_space = false;
    }

    fn hard_break(&mut self) {
        self.pending_space = false;
        self.out.push('\n');
    }

    fn line_break(&mut self) {
        self.pending_space = false;
        if !self.at_line_start() {
            self.out.push('\n');
        }
    }

    fn paragraph_break(&mut self) {
        self.pending_space = false;
        if self.out.is_empty() {
            return;
        }
        if !self.out.ends_with('\n') {
            self.out.push('\n');
        }
        if !self.out.ends_with("\n\n") {
            self.out.push('\n');
        }
    }

    fn finish(self) -> String {
        tidy_lines(&self.out)
    }
}

/// Final clean-up shared by HTML conversion: odd spaces become plain
/// spaces, trailing space goes, and at most one blank line is kept in a row.
pub(super) fn tidy_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0usize;
    for line in text.split('\n') {
        let line: String = line
            .chars()
            .filter(|c| !matches!(c, '\r' | '\u{ad}' | '\u{200b}' | '\u{feff}'))
            .map(|c| if is_odd_space(c) { ' ' } else { c })
            .collect();
        let line = line.trim_end();
        if line.is_empty() {
            blank_run += 1;
            if blank_run > 1 || out.is_empty() {
                continue;
            }
        } else {
            blank_run = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim_end().to_string()
}

/// Spaces that mail clients use in place of a plain space (Apple Mail's
/// forward headers use NBSP, Outlook uses NBSP for blank lines).
pub(super) fn is_odd_space(c: char) -> bool {
    matches!(c, '\u{a0}' | '\u{2000}'..='\u{200a}' | '\u{202f}' | '\u{205f}' | '\u{3000}')
}

/// A line with odd spaces replaced, trimmed, and Markdown-style bold
/// markers removed from the ends, ready for marker and label matching.
pub(super) fn normalise_line(line: &str) -> String {
    let to_space = |c: char| is_odd_space(c) || c == '\t';
    let dropped = |c: char| matches!(c, '\r' | '\u{200b}' | '\u{feff}');
    // Most lines need nothing but the trim: one copy instead of a char-by-char rebuild.
    if !line.contains(|c| to_space(c) || dropped(c)) {
        return line.trim().to_string();
    }
    let line: String =
        line.chars().filter(|c| !dropped(*c)).map(|c| if to_space(c) { ' ' } else { c }).collect();
    line.trim().to_string()
}

fn find_byte(bytes: &[u8], from: usize, needle: u8) -> Option<usize> {
    bytes.get(from..)?.iter().position(|c| *c == needle).map(|n| from + n)
}

fn find_bytes(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let hay = bytes.get(from..)?;
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle).map(|n| from + n)
}

/// Case-insensitive (ASCII) search; the needles are short tag names.
fn find_ci(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let hay = bytes.get(from..)?;
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w.eq_ignore_ascii_case(needle)).map(|n| from + n)
}

pub(super) fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    find_ci(hay, 0, needle).is_some()
}

/// Case-insensitive `starts_with` that never slices inside a character.
pub(super) fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// Splits a long text into the whole lines within its first
/// [`MAX_SCAN_BYTES`] (the part that is scanned line by line) and the rest,
/// which starts on a new line. A text that short is all head.
pub(super) fn scan_window(text: &str) -> (&str, &str) {
    if text.len() <= MAX_SCAN_BYTES {
        return (text, "");
    }
    let head = truncate_at_char(text, MAX_SCAN_BYTES);
    // Only whole lines: a cut line could read as something it is not.
    let cut = head.rfind('\n').map_or(0, |i| i + 1);
    (text.get(..cut).unwrap_or(""), text.get(cut..).unwrap_or(""))
}

/// The longest prefix of `s` no longer than `max` bytes that ends on a
/// character boundary: used to cap the work done on very long texts.
/// The longest subject kept, in bytes. Real subjects are a line; a megabyte one is
/// hostile, and it used to be copied into every email about the request (a 17.5 MB
/// notification, the whole megabyte back to the sender). The raw message keeps it all.
pub(super) const MAX_SUBJECT_BYTES: usize = 1000;

/// `subject`, cut to `MAX_SUBJECT_BYTES` (at a character boundary, marked with "…").
pub(super) fn cap_subject(subject: String) -> String {
    if subject.len() <= MAX_SUBJECT_BYTES {
        return subject;
    }
    format!("{}…", truncate_at_char(&subject, MAX_SUBJECT_BYTES))
}

pub(super) fn truncate_at_char(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

// ---------------------------------------------------------------------------
// Reply and forward markers
// ---------------------------------------------------------------------------

// The labels of the "From: / Sent: / To: / Subject:" block that Outlook (desktop, web and
// mobile), Gmail's forwards and Apple Mail write above a quoted or forwarded message, in
// the languages they ship in the UK and Europe: English, Welsh, Irish, French, German,
// Dutch, Spanish, Portuguese, Italian, Polish, Swedish, Danish, Norwegian, Finnish, Czech
// and Hungarian. Lower case, without the colon (French puts a space before it).

/// Labels of the "From" line.
pub(super) const FROM_LABELS: &[&str] =
    &["from", "oddi wrth", "ó", "de", "von", "van", "da", "od", "från", "fra", "lähettäjä", "feladó"];
/// Labels of the date line ("Sent:", "Date:").
pub(super) const DATE_LABELS: &[&str] = &[
    "sent",
    "date",
    "anfonwyd",
    "dyddiad",
    "seolta",
    "dáta",
    "envoyé",
    "envoyé le",
    "gesendet",
    "datum",
    "verzonden",
    "verzonden op",
    "enviado",
    "enviado el",
    "enviado em",
    "enviada em",
    "fecha",
    "data",
    "inviato",
    "wysłane",
    "wysłano",
    "skickat",
    "sendt",
    "dato",
    "lähetetty",
    "päivämäärä",
    "odesláno",
    "elküldve",
    "dátum",
];
/// Labels of the "To" line.
pub(super) const TO_LABELS: &[&str] = &[
    "to",
    "at",
    "chuig",
    "à",
    "an",
    "aan",
    "para",
    "a",
    "do",
    "till",
    "til",
    "vastaanottaja",
    "komu",
    "címzett",
];
/// Labels of the "Cc" line.
pub(super) const CC_LABELS: &[&str] = &["cc", "kopie", "kopia", "kopio", "kopi", "másolat", "copie"];
/// Labels of the "Subject" line.
pub(super) const SUBJECT_LABELS: &[&str] = &[
    "subject",
    "pwnc",
    "ábhar",
    "objet",
    "betreff",
    "onderwerp",
    "asunto",
    "assunto",
    "oggetto",
    "temat",
    "ämne",
    "emne",
    "aihe",
    "předmět",
    "tárgy",
];

/// Splits a header-ish line "Label: value" into its label (lower-cased, bold
/// markers dropped) and value. Only short labels made of letters count, so
/// ordinary sentences with a colon are not taken for header lines.
pub(super) fn split_label(line: &str) -> Option<(String, &str)> {
    let colon = line.find(':')?;
    let label = line.get(..colon)?;
    let value = line.get(colon + 1..)?;
    let label = label.trim().trim_matches('*').trim();
    if label.is_empty()
        || label.chars().count() > 20
        || !label.chars().all(|c| c.is_alphabetic() || c == ' ' || c == '-')
    {
        return None;
    }
    let value = value.trim().trim_start_matches('*').trim();
    Some((label.to_lowercase(), value))
}

/// Whether a normalised line carries one of `labels` ("From:", "Sent:", ...).
pub(super) fn has_label(line: &str, labels: &[&str]) -> bool {
    split_label(line).is_some_and(|(label, _)| labels.contains(&label.as_str()))
}

/// "-----Original Message-----" and its translations.
pub(super) fn is_original_message_line(line: &str) -> bool {
    let core = line.trim_matches(|c: char| c == '-' || c == ' ');
    if core.len() == line.len() || !line.starts_with("--") {
        return false;
    }
    let core = core.to_lowercase();
    matches!(
        core.as_str(),
        "original message"
            | "neges wreiddiol"
            | "bunteachtaireacht"
            | "ursprüngliche nachricht"
            | "message d'origine"
            | "oorspronkelijk bericht"
            | "mensaje original"
            | "mensagem original"
            | "messaggio originale"
            | "oryginalna wiadomość"
            | "wiadomość oryginalna"
            | "ursprungligt meddelande"
            | "oprindelig meddelelse"
            | "opprinnelig melding"
            | "alkuperäinen viesti"
            | "původní zpráva"
            | "eredeti üzenet"
    )
}

/// Outlook's underscore separator line (or ours, from `<hr>`).
pub(super) fn is_underscore_line(line: &str) -> bool {
    line.len() >= MIN_UNDERSCORES && line.bytes().all(|c| c == b'_')
}

/// Which client's explicit forward marker a normalised line is, if any.
pub(super) fn forward_marker(line: &str) -> Option<ForwardMarker> {
    if line.starts_with("--") {
        let core = line.trim_matches(|c: char| c == '-' || c == ' ');
        // Thunderbird writes "-------- Forwarded Message --------" with a
        // capital M, Gmail "---------- Forwarded message ---------"; the
        // distinction only feeds `ForwardSource`, both are handled alike.
        if core == "Forwarded Message" {
            return Some(ForwardMarker::Thunderbird);
        }
        let core = core.to_lowercase();
        if matches!(core.as_str(), "forwarded message" | "weitergeleitete nachricht" | "message transféré")
        {
            return Some(ForwardMarker::Gmail);
        }
    }
    let lower = line.to_lowercase();
    let without_colon = lower.trim_end_matches([':', ' ']);
    match without_colon {
        "begin forwarded message"
        | "début du message réexpédié"
        | "anfang der weitergeleiteten nachricht" => Some(ForwardMarker::AppleMail),
        _ => None,
    }
}

/// The explicit "this is a forward" lines clients write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ForwardMarker {
    Gmail,
    Thunderbird,
    AppleMail,
}

/// The verbs that end (or, in German, Dutch, Swedish and Irish, come before the name in) a
/// reply attribution, as Gmail, Apple Mail, Thunderbird and Outlook write it in the
/// languages they ship in the UK and Europe: "On … wrote:", "Ar … ysgrifennodd:",
/// "Le … a écrit :", "Am … schrieb …:", "Op … schreef …:", "El … escribió:",
/// "Em … escreveu:", "Il giorno … ha scritto:", "W dniu … pisze:" / "napisał(a):",
/// "Den … skrev …:", "… kirjoitti:", "Dne … napsal(a):", "… scríobh …:", "… írta:".
const WROTE: &[&str] = &[
    "wrote",
    "ysgrifennodd",
    "scríobh",
    "a écrit",
    "schrieb",
    "schreef",
    "geschreven",
    "escribió",
    "escreveu",
    "ha scritto",
    "scrisse",
    "napisał",
    "napisała",
    "pisze",
    "skrev",
    "kirjoitti",
    "napsal",
    "napsala",
    "írta",
];

/// How long an attribution may be once its wrapped lines are joined.
const MAX_ATTRIBUTION_CHARS: usize = 400;

/// Whether `lines[i]` starts an "On `<date>`, `<someone>` wrote:" attribution in any of the
/// [`WROTE`] languages: a line (or up to four, as Gmail wraps long names) ending with `:`
/// whose first line holds a time or numeric date (`09:12`, `9.12`, `16.11.2026`) and which
/// holds one of the verbs as a word of its own. A wrapped one must start a paragraph, so a
/// cut never takes the line above it. "As we wrote on 3 March:" is not one.
pub(super) fn is_attribution(lines: &[String], i: usize) -> bool {
    let Some(first) = lines.get(i) else {
        return false;
    };
    if !has_time(first) {
        return false;
    }
    let mut joined = first.to_lowercase();
    if ends_with_wrote(&joined) {
        return true;
    }
    let starts_paragraph = i == 0 || lines.get(i - 1).is_some_and(String::is_empty);
    if !starts_paragraph || first.trim_end().ends_with(':') {
        return false;
    }
    for next in lines.iter().skip(i + 1).take(3) {
        if next.is_empty() || joined.len() > MAX_ATTRIBUTION_CHARS {
            break;
        }
        joined.push(' ');
        joined.push_str(&next.to_lowercase());
        if ends_with_wrote(&joined) {
            return true;
        }
    }
    false
}

/// Whether `s` holds a digit, `:` or `.`, and two digits: a time (`09:12`, `9.12`) or a
/// numeric date (`16.11.2026`), as every client's attribution does.
fn has_time(s: &str) -> bool {
    s.as_bytes().windows(4).any(|w| {
        matches!(w, [a, b':' | b'.', c, d] if a.is_ascii_digit() && c.is_ascii_digit() && d.is_ascii_digit())
    })
}

/// Whether a (lower-cased) attribution candidate ends with `:` and holds one of the
/// [`WROTE`] verbs as a word.
fn ends_with_wrote(s: &str) -> bool {
    let s = s.trim_end();
    if !s.ends_with(':') || s.chars().count() > MAX_ATTRIBUTION_CHARS {
        return false;
    }
    WROTE.iter().any(|verb| {
        s.match_indices(verb).any(|(at, _)| {
            let before = s.get(..at).and_then(|b| b.chars().next_back());
            let after = s.get(at + verb.len()..).and_then(|a| a.chars().next());
            before.is_none_or(|c| !c.is_alphanumeric()) && after.is_none_or(|c| !c.is_alphanumeric())
        })
    })
}

/// Whether `lines[i]` starts an Outlook-style header block without a
/// separator line: "From: ..." followed within a few lines by "Sent:" or
/// "Date:" (Outlook's HTML draws the separator as a CSS border, which
/// vanishes when the HTML becomes text).
pub(super) fn is_header_block_start(lines: &[String], i: usize) -> bool {
    let Some(line) = lines.get(i) else {
        return false;
    };
    if !has_label(line, FROM_LABELS) {
        return false;
    }
    lines.iter().skip(i + 1).filter(|l| !l.is_empty()).take(4).any(|l| has_label(l, DATE_LABELS))
}

/// The signature delimiter "-- " (many clients drop the trailing space).
pub(super) fn is_signature_delimiter(raw_line: &str) -> bool {
    raw_line.trim_end() == "--"
}

/// Whether a line starts quoted or forwarded history of any kind.
pub(super) fn is_history_marker(lines: &[String], i: usize) -> bool {
    let Some(line) = lines.get(i) else {
        return false;
    };
    line.starts_with('>')
        || is_original_message_line(line)
        || is_underscore_line(line)
        || forward_marker(line).is_some()
        || is_attribution(lines, i)
        || is_header_block_start(lines, i)
}

/// The new text of a reply: everything before the first quoted-original
/// marker ("On … wrote:", Outlook's "From: … Sent: …" block,
/// "-----Original Message-----", "> " quoted lines, "Begin forwarded
/// message", the underscore separator) and before a signature delimiter
/// "-- ". Used for follow-ups and gatekeeper replies, where only what the
/// person just wrote matters. Markers are looked for in the first
/// [`MAX_SCAN_BYTES`]; a text with none there is kept whole.
pub fn strip_quoted(text: &str) -> String {
    let (head, _) = scan_window(text);
    let raw_lines: Vec<&str> = head.lines().collect();
    let lines: Vec<String> = raw_lines.iter().map(|l| normalise_line(l)).collect();
    let end = raw_lines
        .iter()
        .enumerate()
        .position(|(i, raw)| is_signature_delimiter(raw) || is_history_marker(&lines, i));
    let Some(end) = end else {
        return tidy_lines(text).trim().to_string();
    };
    let kept: Vec<&str> = raw_lines.get(..end).unwrap_or(&[]).to_vec();
    tidy_lines(&kept.join("\n")).trim().to_string()
}

/// Where a mail client's HTML reply puts the quoted message (attribute text, lower case):
/// Outlook on the web and new Outlook's reply divider (`<div id="appendonsend">`,
/// `<hr style="display:inline-block…">`, `<div id="divRplyFwdMsg">`), Outlook desktop's
/// header box (a top border in #E1E1E1, or #B5C4DF before 2013), Outlook for Mac, iOS and
/// Android, Gmail's `gmail_quote`, Apple Mail's and Thunderbird's `<blockquote type="cite">`
/// and Thunderbird's `moz-cite-prefix` attribution, Yahoo's `yahoo_quote`. These survive
/// only in the HTML: [`html_to_text`] drops attributes, so the text has just whatever
/// header the client wrote, in whatever language.
const QUOTE_CONTAINERS: &[&str] = &[
    "id=\"appendonsend\"",
    "<hr style=\"display:inline-block",
    "id=\"divrplyfwdmsg\"",
    "border-top:solid #e1e1e1",
    "border-top:solid #b5c4df",
    "id=\"olk_src_body_section\"",
    "id=\"mail-editor-reference-message-container\"",
    "name=\"messagereplysection\"",
    "id=\"ms-outlook-mobile-body-separator-line\"",
    "class=\"gmail_quote",
    "type=\"cite\"",
    "class=\"moz-cite-prefix\"",
    "class=\"yahoo_quote",
];

/// The byte position of the tag that opens the first quote container in `html`, if any.
fn quote_container_start(html: &str) -> Option<usize> {
    let bytes = html.as_bytes();
    let first = QUOTE_CONTAINERS.iter().filter_map(|marker| find_ci(bytes, 0, marker.as_bytes())).min()?;
    // Back to the `<` of the tag the attribute belongs to.
    Some(html.get(..first).and_then(|before| before.rfind('<')).unwrap_or(first))
}

/// The new text of a reply, for reading what a gatekeeper wrote. When the HTML body has a
/// client's quote container ([`QUOTE_CONTAINERS`]), the text of the HTML before it, so a
/// quote header in a language not known here cannot let the quoted message through; else
/// the text body. Either way [`strip_quoted`] then cuts at the quote headers and the
/// signature it recognises.
pub fn reply_text(body_text: &str, body_html: Option<&str>) -> String {
    if let Some(html) = body_html
        && let Some(cut) = quote_container_start(html)
    {
        return strip_quoted(&html_to_text(html.get(..cut).unwrap_or("")));
    }
    strip_quoted(body_text)
}

// ---------------------------------------------------------------------------
// Subjects and references
// ---------------------------------------------------------------------------

/// Bracketed tags that mail gateways stamp on subjects.
const GATEWAY_TAGS: &[&str] = &[
    "external",
    "ext",
    "external email",
    "external sender",
    "caution",
    "caution: external",
    "spam",
    "suspected spam",
    "suspicious",
    "secure",
    "official",
    "official-sensitive",
    "official sensitive",
];

/// Subject with Re:/Fwd:/FW:/AW:/WG:/RE :/\[EXTERNAL\]/"Automatic reply:"
/// prefixes and our "[GP-2026-0042]" tags stripped, whitespace collapsed,
/// lower-cased — so that the same approach arriving twice (re-sent,
/// forwarded by two practices, replied to) compares equal.
pub fn normalise_subject(s: &str) -> String {
    let collapsed = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let without_refs = remove_reference_tags(&collapsed);
    let mut rest: &str = without_refs.trim();
    // Each pass removes one prefix and only looks at the start of what is
    // left, so even "Re: " repeated thousands of times stays linear.
    while let Some(shorter) = strip_one_prefix(rest) {
        rest = shorter.trim_start();
    }
    rest.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// Removes one leading reply/forward prefix, auto-reply phrase or gateway
/// tag; None when the subject starts with none of them.
fn strip_one_prefix(s: &str) -> Option<&str> {
    if let Some(inner) = s.strip_prefix('[') {
        let close = inner.find(']')?;
        let tag = inner.get(..close)?.trim().to_lowercase();
        if GATEWAY_TAGS.contains(&tag.as_str()) {
            return inner.get(close + 1..);
        }
        return None;
    }
    if let Some(inner) = s.strip_prefix('*') {
        // "*EXTERNAL*" style tags.
        let close = inner.find('*')?;
        let tag = inner.get(..close)?.trim().to_lowercase();
        if GATEWAY_TAGS.contains(&tag.as_str()) {
            return inner.get(close + 1..);
        }
        return None;
    }
    // Phrases auto-responders put in front of the original subject.
    for (phrase, _) in super::automated::AUTO_REPLY_SUBJECTS {
        if starts_with_ci(s, phrase) {
            let after = s.get(phrase.len()..)?.trim_start();
            if let Some(after) = after.strip_prefix(':') {
                return Some(after);
            }
        }
    }
    // A prefix word, optionally a counter ("Re[2]", "Re(2)"), then ':'.
    super::subject::strip_prefix_word(s)
}

/// Removes bracketed tags shaped like our references ("[GP-2026-0042]"),
/// whatever the prefix, wherever they are in the subject.
fn remove_reference_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('[') {
        let (before, from_open) = rest.split_at(open);
        out.push_str(before);
        let inner = from_open.get(1..).unwrap_or("");
        // References are short; looking further for the `]` would make a
        // subject of many `[` quadratic.
        let close = inner.char_indices().take(MAX_TAG_CHARS).find(|(_, c)| *c == ']').map(|(i, _)| i);
        match close {
            Some(close) if looks_like_reference(inner.get(..close).unwrap_or("")) => {
                out.push(' ');
                rest = inner.get(close + 1..).unwrap_or("");
            }
            _ => {
                out.push('[');
                rest = inner;
            }
        }
    }
    out.push_str(rest);
    out
}

/// How far a bracketed subject tag may run.
const MAX_TAG_CHARS: usize = 64;

/// "LETTERS-YYYY-NNNN…": the shape of a gatehouse reference with any prefix.
fn looks_like_reference(s: &str) -> bool {
    let mut parts = s.trim().rsplitn(3, '-');
    let (Some(counter), Some(year), Some(prefix)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !prefix.is_empty()
        && prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && year.len() == 4
        && year.bytes().all(|c| c.is_ascii_digit())
        && counter.len() >= 4
        && counter.bytes().all(|c| c.is_ascii_digit())
}

/// Find a reference like GP-2026-0042 (given prefix; counter ≥ 4 digits,
/// may be longer) in a subject; returns the first, upper-cased. This is how
/// replies and follow-ups are tied back to the request they belong to.
pub fn find_reference(subject: &str, prefix: &str) -> Option<String> {
    if prefix.is_empty() {
        return None;
    }
    for (i, _) in subject.char_indices() {
        let before_ok =
            subject.get(..i).and_then(|b| b.chars().next_back()).is_none_or(|c| !c.is_alphanumeric());
        if !before_ok {
            continue;
        }
        let Some(head) = subject.get(i..i + prefix.len()) else {
            continue;
        };
        if !head.eq_ignore_ascii_case(prefix) {
            continue;
        }
        let Some(rest) = subject.get(i + prefix.len()..) else {
            continue;
        };
        if let Some((year, counter)) = reference_tail(rest) {
            return Some(format!("{}-{year}-{counter}", prefix.to_uppercase()));
        }
    }
    None
}

/// Parses "-YYYY-NNNN…" at the start of `rest` (the part after the prefix).
fn reference_tail(rest: &str) -> Option<(&str, &str)> {
    let rest = rest.strip_prefix('-')?;
    let year = rest.get(..4)?;
    if !year.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let rest = rest.get(4..)?.strip_prefix('-')?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits < 4 {
        return None;
    }
    let counter = rest.get(..digits)?;
    let next = rest.get(digits..)?.chars().next();
    if next.is_some_and(char::is_alphanumeric) {
        return None;
    }
    Some((year, counter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_paragraphs_and_breaks() {
        let html = "<html><head><style>p{color:red}</style></head><body>\
            <p>Dear colleague,</p><p>Line one<br>Line two</p>\
            <div>Gmail line</div><div><br></div><div>After blank</div></body></html>";
        assert_eq!(html_to_text(html), "Dear colleague,\n\nLine one\nLine two\n\nGmail line\n\nAfter blank");
    }

    #[test]
    fn html_entities_and_whitespace() {
        let html = "<p>Fee:  &pound;12&nbsp;per&#160;test &amp; more &#x2013; ok &eacute; &bogus; a & b</p>";
        assert_eq!(html_to_text(html), "Fee: £12 per test & more – ok é &bogus; a & b");
    }

    #[test]
    fn html_outlook_msonormal_is_single_spaced() {
        let html = "<p class=MsoNormal>Hello<o:p></o:p></p>\
            <p class=MsoNormal><o:p>&nbsp;</o:p></p>\
            <p class=MsoNormal>Second<o:p></o:p></p>\
            <p class=MsoNormal>Third</p>";
        assert_eq!(html_to_text(html), "Hello\n\nSecond\nThird");
    }

    #[test]
    fn html_comments_conditionals_and_tables() {
        let html = "<!--[if gte mso 9]><xml><o:shapedefaults/></xml><![endif]-->\
            <table><tr><th>Subject: </th><td>Phlebotomy</td></tr>\
            <tr><th>From: </th><td>Jo &lt;jo@icb.test&gt;</td></tr></table>\
            <ul><li>one</li><li>two</li></ul><hr>after";
        assert_eq!(
            html_to_text(html),
            "Subject: Phlebotomy\nFrom: Jo <jo@icb.test>\n\n- one\n- two\n\n________________________________\nafter"
        );
    }

    #[test]
    fn html_garbage_does_not_panic() {
        for s in [
            "<",
            "<<",
            "<!--",
            "<!",
            "&",
            "&#",
            "&#x;",
            "&#99999999999;",
            "<p",
            "<a href=\"x>",
            "<script>",
            "<head>text",
            "é<é>é&é;",
            "<p class='MsoNormal",
            "</",
            "</>",
        ] {
            let _ = html_to_text(s);
        }
        assert_eq!(html_to_text("a < b"), "a < b");
        assert_eq!(html_to_text("<head><title>t</title>x"), "x");
        // Many unclosed <head> tags must stay linear.
        let heads = "<head>".repeat(100_000) + "text";
        assert_eq!(html_to_text(&heads), "text");
    }

    #[test]
    fn strip_quoted_markers() {
        let gmail =
            "Thanks, will do.\n\nOn Mon, 16 Nov 2026 at 09:12, Jo Bloggs <jo.bloggs@icb.test>\nwrote:\n> old";
        assert_eq!(strip_quoted(gmail), "Thanks, will do.");
        let outlook = "Yes please.\r\n\r\nFrom: Jo Bloggs <jo@icb.test>\r\nSent: Monday, November 16, 2026 9:12 AM\r\nTo: x\r\nSubject: y\r\n\r\nold";
        assert_eq!(strip_quoted(outlook), "Yes please.");
        let original = "Fine\n-----Original Message-----\nFrom: a";
        assert_eq!(strip_quoted(original), "Fine");
        let sig = "Body here\n-- \nJo Bloggs\nPractice Manager";
        assert_eq!(strip_quoted(sig), "Body here");
        let sep = "Short\n________________________________\nFrom: x";
        assert_eq!(strip_quoted(sep), "Short");
        let quoted = "Agreed\n> earlier text";
        assert_eq!(strip_quoted(quoted), "Agreed");
        assert_eq!(strip_quoted("No markers at all"), "No markers at all");
        assert_eq!(strip_quoted(""), "");
    }

    /// What a quoted gatekeepers' notification looks like once it is text.
    const NOTIFICATION: &str = "New approach GP-2026-0001 needs your decision.\n\nHOW TO DECIDE: reply\nReply key for GP-2026-0001: 00112233445566778899aabbccddeeff";

    #[test]
    fn reply_attributions_in_the_languages_clients_ship_in_europe() {
        for attribution in [
            "On Mon, 16 Nov 2026 at 09:12, Jo Bloggs <jo@icb.test> wrote:",
            "On 16 Nov 2026, at 09:12, Jo Bloggs <jo@icb.test> wrote:",
            "On 16/11/2026 09:12, Jo Bloggs wrote:",
            "Ar Llun, 16 Tach 2026 am 09:12, Jo Bloggs <jo@icb.test> ysgrifennodd:",
            "Ar Luan 16 Samh 2026 ag 09:12, scríobh Jo Bloggs <jo@icb.test>:",
            "Le lun. 16 nov. 2026 à 09:12, Jo Bloggs <jo@icb.test> a écrit :",
            "Am Mo., 16. Nov. 2026 um 09:12 Uhr schrieb Jo Bloggs <jo@icb.test>:",
            "Am 16.11.2026 um 09:12 schrieb Jo Bloggs:",
            "Op ma 16 nov 2026 om 09:12 schreef Jo Bloggs <jo@icb.test>:",
            "El lun, 16 nov 2026 a las 9:12, Jo Bloggs (<jo@icb.test>) escribió:",
            "Em seg., 16 de nov. de 2026 às 09:12, Jo Bloggs <jo@icb.test> escreveu:",
            "Il giorno lun 16 nov 2026 alle ore 09:12 Jo Bloggs <jo@icb.test> ha scritto:",
            "Il 16/11/2026 09:12, Jo Bloggs ha scritto:",
            "W dniu pon., 16.11.2026 o 09:12 Jo Bloggs <jo@icb.test> napisał(a):",
            "W dniu 16.11.2026 o 09:12, Jo Bloggs pisze:",
            "Den mån 16 nov. 2026 kl 09:12 skrev Jo Bloggs <jo@icb.test>:",
            "Den 16. nov. 2026 kl. 09.12 skrev Jo Bloggs <jo@icb.test>:",
            "man. 16. nov. 2026 kl. 09:12 skrev Jo Bloggs <jo@icb.test>:",
            "ma 16.11.2026 klo 9.12 Jo Bloggs (jo@icb.test) kirjoitti:",
            "Dne 16. 11. 2026 v 9:12 Jo Bloggs napsal(a):",
            "2026. nov. 16., h 9:12 Jo Bloggs <jo@icb.test> ezt írta:",
        ] {
            let reply = format!("decline: not ours\nSorry.\n\n{attribution}\n{NOTIFICATION}");
            assert_eq!(strip_quoted(&reply), "decline: not ours\nSorry.", "{attribution}");
        }
        // Gmail wraps a long one; the wrapped form must start a paragraph.
        let wrapped = "paper\n\nOn Mon, 16 Nov 2026 at 09:12, A Very Long Name Indeed\n<jo.bloggs@icb.test> wrote:\n\nold";
        assert_eq!(strip_quoted(wrapped), "paper");
        // Sentences that mention writing are not attributions.
        for prose in ["As we wrote on 3 March:", "Jo wrote: 09:12 is fine", "Den skrev vi om:"] {
            let text = format!("paper\n{prose}\nmore");
            assert_eq!(strip_quoted(&text), text, "{prose}");
        }
    }

    #[test]
    fn outlook_header_blocks_in_the_languages_it_ships_in_europe() {
        for block in [
            "From: GP Access <gp-access@nhs.net>\nSent: 16 November 2026 09:12\nTo: Jane Doe\nSubject: New approach",
            "Oddi wrth: GP Access <gp-access@nhs.net>\nAnfonwyd: 16 Tachwedd 2026 09:12\nAt: Jane\nPwnc: x",
            "Ó: GP Access <gp-access@nhs.net>\nSeolta: 16 Samhain 2026 09:12\nChuig: Jane\nÁbhar: x",
            "De : GP Access <gp-access@nhs.net>\nEnvoyé : lundi 16 novembre 2026 09:12\nÀ : Jane\nObjet : x",
            "Von: GP Access <gp-access@nhs.net>\nGesendet: Montag, 16. November 2026 09:12\nAn: Jane\nBetreff: x",
            "Van: GP Access <gp-access@nhs.net>\nVerzonden: maandag 16 november 2026 09:12\nAan: Jane\nOnderwerp: x",
            "De: GP Access <gp-access@nhs.net>\nEnviado el: lunes, 16 de noviembre de 2026 9:12\nPara: Jane\nAsunto: x",
            "De: GP Access <gp-access@nhs.net>\nEnviado: segunda-feira, 16 de novembro de 2026 09:12\nPara: Jane\nAssunto: x",
            "Da: GP Access <gp-access@nhs.net>\nInviato: lunedì 16 novembre 2026 09:12\nA: Jane\nOggetto: x",
            "Od: GP Access <gp-access@nhs.net>\nWysłane: poniedziałek, 16 listopada 2026 09:12\nDo: Jane\nTemat: x",
            "Från: GP Access <gp-access@nhs.net>\nSkickat: den 16 november 2026 09:12\nTill: Jane\nÄmne: x",
            "Fra: GP Access <gp-access@nhs.net>\nSendt: 16. november 2026 09:12\nTil: Jane\nEmne: x",
            "Lähettäjä: GP Access <gp-access@nhs.net>\nLähetetty: maanantai 16. marraskuuta 2026 9.12\nVastaanottaja: Jane\nAihe: x",
            "Od: GP Access <gp-access@nhs.net>\nOdesláno: pondělí 16. listopadu 2026 9:12\nKomu: Jane\nPředmět: x",
            "**From:** GP Access <gp-access@nhs.net>\n**Date:** Monday, 16 November 2026 at 09:12\n**To:** Jane\n**Subject:** x",
        ] {
            let reply = format!("decline: not ours\nSorry.\n\n{block}\n\n{NOTIFICATION}");
            assert_eq!(strip_quoted(&reply), "decline: not ours\nSorry.", "{block}");
        }
        for line in [
            "-----Original Message-----",
            "-----Ursprüngliche Nachricht-----",
            "-----Message d'origine-----",
            "-----Messaggio originale-----",
            "-----Mensagem original-----",
            "-----Oryginalna wiadomość-----",
            "-----Ursprungligt meddelande-----",
            "-----Oprindelig meddelelse-----",
            "-----Opprinnelig melding-----",
            "-----Alkuperäinen viesti-----",
            "-----Původní zpráva-----",
        ] {
            assert_eq!(strip_quoted(&format!("paper\n{line}\n{NOTIFICATION}")), "paper", "{line}");
        }
    }

    #[test]
    fn html_replies_are_cut_at_the_clients_quote_container() {
        // The quote header is in a language not known here (Estonian): only the HTML's
        // structure shows where the quote starts.
        let header = "<b>Saatja:</b> GP Access<br><b>Saadetud:</b> 16. november 2026 09:12<br>";
        let quoted = format!("{header}<p>{}</p>", NOTIFICATION.replace('\n', "<br>"));
        let new = "<div>decline: not ours</div><div>Sorry.</div><div>note: told the LMC</div>";
        for (client, html) in [
            (
                "Outlook on the web",
                format!(
                    "<body><div dir=\"ltr\">{new}</div><div id=\"appendonsend\"></div><hr style=\"display:inline-block;width:98%\" tabindex=\"-1\"><div id=\"divRplyFwdMsg\" dir=\"ltr\">{quoted}</div></body>"
                ),
            ),
            (
                "Outlook desktop",
                format!(
                    "<body><div class=WordSection1>{new}<div><div style='border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm'><p class=MsoNormal>{quoted}</p></div></div></div></body>"
                ),
            ),
            (
                "Gmail",
                format!(
                    "<div dir=\"ltr\">{new}</div><br><div class=\"gmail_quote gmail_quote_container\"><div dir=\"ltr\" class=\"gmail_attr\">Kuupäeval E, 16. nov 2026 kell 09:12 kirjutas GP Access:<br></div><blockquote class=\"gmail_quote\">{quoted}</blockquote></div>"
                ),
            ),
            (
                "Apple Mail",
                format!(
                    "<html><body>{new}<div><br><blockquote type=\"cite\"><div>16. nov 2026 kell 09:12 GP Access kirjutas:</div>{quoted}</blockquote></div></body></html>"
                ),
            ),
            (
                "Thunderbird",
                format!(
                    "<body><p>{new}</p><div class=\"moz-cite-prefix\">16.11.2026 09:12, GP Access kirjutas:<br></div><blockquote type=\"cite\" cite=\"mid:x@y\">{quoted}</blockquote></body>"
                ),
            ),
        ] {
            let text = reply_text(&html_to_text(&html), Some(&html));
            assert_eq!(text, "decline: not ours\nSorry.\nnote: told the LMC", "{client}");
        }
        // Without a container, the text body is used as it is.
        assert_eq!(reply_text("paper\n> old", Some("<p>paper</p>")), "paper");
        assert_eq!(reply_text("paper\n> old", None), "paper");
    }

    #[test]
    fn strip_quoted_reads_only_the_first_megabyte_line_by_line() {
        // Found by deploy/local/fuzz --pathological: a 40 MB body of short
        // lines made strip_quoted (and the forward detector) hold a copy of
        // every line, 2.5 GB in all.
        let many = "x\n".repeat(MAX_SCAN_BYTES);
        assert_eq!(strip_quoted(&format!("{many}> quoted")).len(), many.trim_end().len() + 9);
        assert_eq!(strip_quoted(&format!("new\n> quoted\n{many}")), "new");
        let (head, tail) = scan_window(&many);
        assert_eq!((head.len() + tail.len(), head.ends_with('\n')), (many.len(), true));
        assert!(head.len() <= MAX_SCAN_BYTES);
        // A line cut by the window is left whole in the tail.
        let long = "é".repeat(MAX_SCAN_BYTES);
        assert_eq!(scan_window(&long), ("", long.as_str()));
    }

    #[test]
    fn html_hr_separators_are_capped() {
        // Found by deploy/local/fuzz --pathological: each 4-byte <hr> became
        // a 33-byte line, so 40 MB of them made 330 MB of text.
        let text = html_to_text(&"<hr>x".repeat(100_000));
        assert_eq!(text.matches(SEPARATOR_LINE).count(), MAX_SEPARATORS);
        assert!(text.len() < 300_000 + MAX_SEPARATORS * (SEPARATOR_LINE.len() + 2));
    }

    #[test]
    fn normalise_subject_strips_prefixes_and_tags() {
        assert_eq!(normalise_subject("RE: FW:  [EXTERNAL] Phlebotomy   service"), "phlebotomy service");
        assert_eq!(normalise_subject("Re: Phlebotomy service [GP-2026-0042]"), "phlebotomy service");
        assert_eq!(normalise_subject("Automatic reply: Fwd: AW: WG: Phlebotomy"), "phlebotomy");
        assert_eq!(normalise_subject("RE : Re[2]: Sv: hello"), "hello");
        assert_eq!(normalise_subject("Out of Office: Clinic"), "clinic");
        assert_eq!(normalise_subject("Regarding phlebotomy"), "regarding phlebotomy");
        assert_eq!(normalise_subject("[Practice news] Flu"), "[practice news] flu");
        assert_eq!(normalise_subject(""), "");
        assert_eq!(normalise_subject("Re:"), "");
        let many = "Re: ".repeat(10_000) + "x";
        assert_eq!(normalise_subject(&many), "x");
        let brackets = "[".repeat(200_000) + "]";
        assert_eq!(normalise_subject(&brackets).len(), 200_001);
    }

    #[test]
    fn find_reference_rules() {
        assert_eq!(find_reference("Re: Phlebotomy [gp-2026-0042]", "GP"), Some("GP-2026-0042".to_string()));
        assert_eq!(
            find_reference("GP-2026-123456 and GP-2026-0001", "GP"),
            Some("GP-2026-123456".to_string())
        );
        assert_eq!(find_reference("GP-2026-042", "GP"), None);
        assert_eq!(find_reference("XGP-2026-0042", "GP"), None);
        assert_eq!(find_reference("GP-2026-0042a", "GP"), None);
        assert_eq!(find_reference("GP-26-0042", "GP"), None);
        assert_eq!(find_reference("é GP-2026-0042é", "GP"), None);
        assert_eq!(find_reference("éé(GP-2026-0042)", "GP"), Some("GP-2026-0042".to_string()));
        assert_eq!(find_reference("anything", ""), None);
    }

    #[test]
    fn truncate_at_char_boundary() {
        assert_eq!(truncate_at_char("héllo", 2), "h");
        assert_eq!(truncate_at_char("héllo", 3), "hé");
        assert_eq!(truncate_at_char("abc", 10), "abc");
    }
}
