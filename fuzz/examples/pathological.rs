//! Time (and, under `/usr/bin/time -v`, peak memory) of `classify::parse` on hostile mail.
//!
//!   cargo run --release --example pathological -- CASE [--no-parse]
//!   cargo run --release --example pathological -- --file PATH
//!
//! CASE is one of the names in `CASES` (`list` prints them, `all` runs them all). `--no-parse` only builds the input, so
//! its peak RSS can be subtracted from the parsing run's. Run from `fuzz/`;
//! `deploy/local/fuzz --pathological` runs every case under `/usr/bin/time -v`.

use std::time::Instant;

use gatehouse::classify::{self, Context};

const CASES: &[&str] = &[
    "base64-50mb",
    "base64-40mb",
    "headers-10k",
    "headers-100k",
    "nested-multipart-1k",
    "nested-multipart-10k",
    "nested-message-1k",
    "subject-1mb",
    "to-1mb",
    "references-1mb",
    "encoded-words-1mb",
    "html-10mb",
    "qp-text-10mb",
    "parts-100k",
    "body-forward-markers-1mb",
    "body-gmail-markers-1mb",
    "body-outlook-blocks-1mb",
    "body-from-lines-1mb",
    "body-attribution-lines-1mb",
    "body-quoted-lines-10mb",
    "body-one-line-10mb",
    "body-blank-lines-10mb",
    "body-short-lines-40mb",
    "html-unclosed-tags-1mb",
    "html-pre-1mb",
    "html-entities-10mb",
    "html-hr-10mb",
    "html-hr-40mb",
    "html-hr-text-40mb",
    "html-li-40mb",
    "html-forward-markers-1mb",
    "bounce-references-1mb",
    "bounce-x-failed-recipients-1mb",
    "bounce-text-failures-10mb",
    "bounce-text-message-ids-10mb",
    "bounce-dsn-recipients-10mb",
    "invalid-utf8-10mb",
    "invalid-utf8-headers-10k",
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parse = !args.iter().any(|a| a == "--no-parse");
    let first = args.first().map(String::as_str).unwrap_or("all");
    if first == "list" {
        println!("{}", CASES.join("\n"));
        return;
    }
    if first == "--file" {
        let path = args.get(1).expect("--file PATH");
        let raw = std::fs::read(path).expect("readable file");
        run(path, &raw, parse);
        return;
    }
    let names: Vec<&str> = if first == "all" { CASES.to_vec() } else { vec![first] };
    for name in names {
        let raw = build(name);
        run(name, &raw, parse);
    }
}

fn run(name: &str, raw: &[u8], parse: bool) {
    if !parse {
        println!("{name}: {} bytes built, not parsed", raw.len());
        return;
    }
    let own = vec!["gp-access@gatehouse.test".to_string()];
    let ctx = Context { own_addresses: &own, own_message_id_domain: Some("gatehouse.test") };
    let start = Instant::now();
    let parsed = classify::parse(raw, &ctx);
    let parse_time = start.elapsed();
    let start = Instant::now();
    let summary = match &parsed {
        Ok(p) => {
            let stripped = classify::strip_quoted(&p.body_text);
            let _ = classify::normalise_subject(&p.subject);
            let _ = classify::find_reference(&p.subject, "GP");
            let _ = classify::similarity(&p.body_text, "phlebotomy service for housebound patients");
            let _ = gatehouse::inbox::dedup::message_id(raw);
            format!(
                "ok: subject {} B, body {} B (after strip_quoted {} B), {} attachments, {} to, {} report ids, {} report recipients",
                p.subject.len(),
                p.body_text.len(),
                stripped.len(),
                p.attachments.len(),
                p.to.len(),
                p.report.as_ref().map_or(0, |r| r.original_message_ids.len()),
                p.report.as_ref().map_or(0, |r| r.recipients.len()),
            )
        }
        Err(e) => format!("err: {e}"),
    };
    println!(
        "{name}: {:.1} MB in {:.3} s parse + {:.3} s helpers; {summary}",
        raw.len() as f64 / 1e6,
        parse_time.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
}

fn build(name: &str) -> Vec<u8> {
    let head = "From: Jo Bloggs <jo@icb.test>\r\nTo: gp-access@gatehouse.test\r\nMessage-ID: <x@icb.test>\r\nDate: Mon, 16 Nov 2026 09:12:00 +0000\r\n";
    let mut raw = head.as_bytes().to_vec();
    match name {
        "base64-50mb" | "base64-40mb" => {
            let encoded_mb = if name == "base64-50mb" { 50 } else { 40 };
            raw.extend_from_slice(
                b"Subject: big attachment\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
                  --b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n\
                  --b\r\nContent-Type: application/pdf; name=big.pdf\r\nContent-Disposition: attachment; filename=big.pdf\r\n\
                  Content-Transfer-Encoding: base64\r\n\r\n",
            );
            raw.extend(base64_lines(encoded_mb * 1_000_000 / 78 * 57));
            raw.extend_from_slice(b"\r\n--b--\r\n");
        }
        "headers-10k" | "headers-100k" => {
            let n = if name == "headers-10k" { 10_000 } else { 100_000 };
            for i in 0..n {
                raw.extend_from_slice(format!("X-Header-{i}: value {i}\r\n").as_bytes());
            }
            raw.extend_from_slice(b"Subject: many headers\r\n\r\nbody\r\n");
        }
        "nested-multipart-1k" | "nested-multipart-10k" => {
            let n = if name == "nested-multipart-1k" { 1_000 } else { 10_000 };
            raw.extend_from_slice(b"Subject: nested\r\n");
            for i in 0..n {
                raw.extend_from_slice(
                    format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n").as_bytes(),
                );
            }
            raw.extend_from_slice(b"Content-Type: text/plain\r\n\r\nhello\r\n");
            for i in (0..n).rev() {
                raw.extend_from_slice(format!("--b{i}--\r\n").as_bytes());
            }
        }
        "nested-message-1k" => {
            raw.extend_from_slice(b"Subject: Fwd: nested\r\n");
            for i in 0..1_000 {
                raw.extend_from_slice(
                    format!("Content-Type: message/rfc822\r\n\r\nFrom: x{i}@y.test\r\nSubject: Fwd: {i}\r\n")
                        .as_bytes(),
                );
            }
            raw.extend_from_slice(b"\r\nhello\r\n");
        }
        "subject-1mb" => {
            raw.extend_from_slice(b"Subject: ");
            raw.extend(std::iter::repeat_n(b'a', 1 << 20));
            raw.extend_from_slice(b"\r\n\r\nbody\r\n");
        }
        "to-1mb" => {
            raw = b"From: Jo <jo@icb.test>\r\nSubject: many recipients\r\nCc: ".to_vec();
            let mut i = 0;
            while raw.len() < (1 << 20) {
                raw.extend_from_slice(format!("\"Person, {i}\" <p{i}@example.test>, ").as_bytes());
                i += 1;
            }
            raw.extend_from_slice(b"last@example.test\r\n\r\nbody\r\n");
        }
        "references-1mb" => {
            raw.extend_from_slice(b"Subject: long thread\r\nReferences:");
            let mut i = 0;
            while raw.len() < (1 << 20) {
                raw.extend_from_slice(format!(" <{i}.thread@icb.test>").as_bytes());
                i += 1;
            }
            raw.extend_from_slice(b"\r\n\r\nbody\r\n");
        }
        "encoded-words-1mb" => {
            raw.extend_from_slice(b"Subject:");
            while raw.len() < (1 << 20) {
                raw.extend_from_slice(b" =?utf-8?q?caf=C3=A9?= =?iso-8859-1?b?4Q==?=");
            }
            raw.extend_from_slice(b"\r\n\r\nbody\r\n");
        }
        "html-10mb" => {
            raw.extend_from_slice(
                b"Subject: html\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body>",
            );
            while raw.len() < 10_000_000 {
                raw.extend_from_slice(
                    b"<p class=MsoNormal>Line &amp; more&nbsp;<b>text</b><o:p></o:p></p>\r\n<div>",
                );
            }
            raw.extend_from_slice(b"</body></html>\r\n");
        }
        "qp-text-10mb" => {
            raw.extend_from_slice(
                b"Subject: qp\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n",
            );
            while raw.len() < 10_000_000 {
                raw.extend_from_slice(
                    b"> On Mon, Jo wrote: caf=C3=A9 soft break here=\r\n and more text\r\n",
                );
            }
        }
        "parts-100k" => {
            raw.extend_from_slice(
                b"Subject: many parts\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n",
            );
            for i in 0..100_000 {
                raw.extend_from_slice(
                    format!("--b\r\nContent-Type: application/octet-stream; name=f{i}.bin\r\n\r\nx\r\n")
                        .as_bytes(),
                );
            }
            raw.extend_from_slice(b"--b--\r\n");
        }
        body if body.starts_with("body-") || body == "html-forward-markers-1mb" => {
            let (unit, size): (&str, usize) = match body {
                "body-forward-markers-1mb" | "html-forward-markers-1mb" => {
                    ("Begin forwarded message:\r\n", 1 << 20)
                }
                "body-gmail-markers-1mb" => ("---------- Forwarded message ---------\r\n", 1 << 20),
                "body-outlook-blocks-1mb" => {
                    ("________________________________\r\nFrom: x\r\nSent: y\r\n", 1 << 20)
                }
                "body-from-lines-1mb" => ("From: Jo\r\n\r\n\r\n\r\n\r\n\r\n\r\n", 1 << 20),
                "body-attribution-lines-1mb" => ("On Mon, Jo\r\n", 1 << 20),
                "body-quoted-lines-10mb" => ("> quoted text of an earlier message\r\n", 10_000_000),
                "body-one-line-10mb" => ("word ", 10_000_000),
                "body-blank-lines-10mb" => ("\r\n", 10_000_000),
                "body-short-lines-40mb" => ("x\n", 40_000_000),
                _ => unreachable!(),
            };
            let html = body.starts_with("html-");
            raw.extend_from_slice(b"Subject: FW: hostile body\r\n");
            if html {
                raw.extend_from_slice(b"Content-Type: text/html\r\n\r\n");
            } else {
                raw.extend_from_slice(b"Content-Type: text/plain\r\n\r\n");
            }
            let unit = if html { format!("<div>{}</div>", unit.trim_end()) } else { unit.to_string() };
            while raw.len() < size {
                raw.extend_from_slice(unit.as_bytes());
            }
        }
        "html-unclosed-tags-1mb"
        | "html-pre-1mb"
        | "html-entities-10mb"
        | "html-hr-10mb"
        | "html-hr-40mb"
        | "html-hr-text-40mb"
        | "html-li-40mb" => {
            let (unit, size) = match name {
                "html-hr-10mb" => ("<hr>", 10_000_000),
                "html-hr-40mb" => ("<hr>", 40_000_000),
                "html-hr-text-40mb" => ("<hr>x", 40_000_000),
                "html-li-40mb" => ("<li>", 40_000_000),
                "html-unclosed-tags-1mb" => ("<p <a href='x' <b ", 1 << 20),
                "html-pre-1mb" => ("<pre>x", 1 << 20),
                _ => ("&#x2013;&nbsp;&amp;&bogus;& ", 10_000_000),
            };
            raw.extend_from_slice(b"Subject: html\r\nContent-Type: text/html\r\n\r\n");
            while raw.len() < size {
                raw.extend_from_slice(unit.as_bytes());
            }
        }
        bounce if bounce.starts_with("bounce-") => {
            raw = b"From: Mail Delivery System <MAILER-DAEMON@mx.icb.test>\r\nReturn-Path: <>\r\nSubject: Undelivered Mail Returned to Sender\r\n".to_vec();
            let (header, unit, size): (&str, &str, usize) = match bounce {
                "bounce-references-1mb" => ("References:", " <{i}.thread@gatehouse.test>", 1 << 20),
                "bounce-x-failed-recipients-1mb" => ("X-Failed-Recipients:", " p{i}@example.test,", 1 << 20),
                "bounce-text-failures-10mb" => {
                    ("", "<p{i}@example.test>: host mx said: 550 no such user\r\n", 10_000_000)
                }
                "bounce-text-message-ids-10mb" => ("", "Message-ID: <{i}@gatehouse.test>\r\n", 10_000_000),
                _ => (
                    "",
                    "Final-Recipient: rfc822; p{i}@example.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n",
                    10_000_000,
                ),
            };
            let dsn = bounce == "bounce-dsn-recipients-10mb";
            if !header.is_empty() {
                raw.extend_from_slice(header.as_bytes());
                let mut i = 0;
                while raw.len() < size {
                    raw.extend_from_slice(unit.replace("{i}", &i.to_string()).as_bytes());
                    i += 1;
                }
                raw.extend_from_slice(b" last@example.test\r\n\r\nbounce\r\n");
            } else {
                if dsn {
                    raw.extend_from_slice(b"Content-Type: multipart/report; report-type=delivery-status; boundary=r\r\n\r\n--r\r\nContent-Type: text/plain\r\n\r\nFailed.\r\n--r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.icb.test\r\n\r\n");
                } else {
                    raw.extend_from_slice(b"\r\n");
                }
                let mut i = 0;
                while raw.len() < size {
                    raw.extend_from_slice(unit.replace("{i}", &i.to_string()).as_bytes());
                    i += 1;
                }
                if dsn {
                    raw.extend_from_slice(b"--r--\r\n");
                }
            }
        }
        "invalid-utf8-10mb" => {
            // Undeclared 8-bit bytes and broken UTF-8 in the name, subject, boundary, file
            // name and bodies, and charsets that lie; the text part is 10 MB of such bytes.
            raw = b"From: J\xffo \xc3 Bl\xe9ggs \xe2\x82 <jo@icb.test>\r\nTo: gp-access@gatehouse.test\r\n\
                    Subject: Caf\xe9 \xf0\x28\x8c\x28 =?utf-8?B?/w==?= \xed\xa0\x80\r\nMIME-Version: 1.0\r\n\
                    Content-Type: multipart/mixed; boundary=\"\xfe\xff\"\r\n\r\n\
                    --\xfe\xff\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                .to_vec();
            let mut state: u64 = 0x2545_F491_4F6C_DD1D;
            while raw.len() < 10_000_000 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Mostly high bytes (lone continuations, overlong and surrogate starts), some
                // line breaks so it is still lines.
                let b = (state & 0xff) as u8;
                raw.push(if b < 8 { b'\n' } else { b | 0x80 });
            }
            raw.extend_from_slice(
                b"\r\n--\xfe\xff\r\nContent-Type: text/html; charset=iso-2022-jp\r\n\r\n\
                  <p>\x1b$B\xff\xff\x1b(B \x80\x81</p>\r\n\
                  --\xfe\xff\r\nContent-Type: application/pdf; name=\"r\xe9sum\xe9\xff.pdf\"\r\n\
                  Content-Transfer-Encoding: base64\r\n\r\n\xff\xfe!!notbase64\r\n--\xfe\xff--\r\n",
            );
        }
        "invalid-utf8-headers-10k" => {
            for i in 0..10_000 {
                raw.extend_from_slice(format!("X-Header-{i}: ").as_bytes());
                raw.extend_from_slice(b"\xc3\x28 \xa0\xa1 \xe2\x28\xa1 \xf0\x90\x28\xbc \xff\r\n");
            }
            raw.extend_from_slice(
                b"Subject: \xff\xfe\xfd\r\nContent-Type: text/plain; charset=x-unknown\r\n\r\n\xff\r\n",
            );
        }
        other => panic!("unknown case {other}; one of {CASES:?} or all"),
    }
    raw
}

/// `n` pseudo-random bytes, base64-encoded in 76-character lines.
fn base64_lines(n: usize) -> Vec<u8> {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(n / 3 * 4 + n / 57 * 2 + 8);
    let mut line = 0;
    for _ in 0..n / 3 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let v = (state & 0xff_ffff) as usize;
        for shift in [18, 12, 6, 0] {
            out.push(TABLE[(v >> shift) & 63]);
        }
        line += 4;
        if line == 76 {
            out.extend_from_slice(b"\r\n");
            line = 0;
        }
    }
    out
}
