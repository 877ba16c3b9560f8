//! The JSON log line (`--log-format json`), written without a detour through `serde_json::Value`.
//!
//! The same line as tracing-subscriber's JSON format with `flatten_event(true)`,
//! `with_current_span(true)` and no span list: `timestamp`, `level`, the event's fields (its
//! `message` among them), `target`, and the current span as `span` (its fields and `name`).
//! Theirs collects a span's fields into a map of `serde_json::Value`s when the span is made and
//! re-parses them for every event; here [`JsonSpanFields`] writes a span's fields as a JSON object
//! as they are visited (in the order given, not sorted), the event copies that text as it is,
//! and the event's own fields are written as they are visited. Every review logs one such line.

use crate::json_text::escape_str as escape;
use std::fmt::{self, Write as _};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The JSON event format (see the module docs); use with `fmt_fields(JsonSpanFields)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

/// Span fields as one JSON object (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonSpanFields;

/// Writes `s` as a JSON string, escaped as serde_json escapes (`"`, `\\`, control characters).
fn string(out: &mut String, s: &str) {
    out.push('"');
    escape(out, s);
    out.push('"');
}

/// The time now as tracing's `SystemTime` writes it (RFC 3339 in UTC, microseconds:
/// `2026-12-03T13:22:05.123456Z`), the date and time of day written once per second (per
/// thread) and reused for the lines within it.
fn timestamp(out: &mut String) -> fmt::Result {
    use std::cell::RefCell;
    thread_local! {
        /// The second last written, and its text up to the `.`.
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) else {
        // Before 1970: as tracing writes it.
        return SystemTime.format_time(&mut Writer::new(out));
    };
    let secs = now.as_secs();
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != secs {
            text.clear();
            write_second(text, secs);
            *second = secs;
        }
        out.push_str(text);
    });
    let micros = now.subsec_micros();
    let mut digits = [b'0'; 6];
    let mut rest = micros;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.push_str(std::str::from_utf8(&digits).map_err(|_| fmt::Error)?);
    out.push('Z');
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SS.` for `secs` after the epoch (the civil date from the day count, by
/// Howard Hinnant's `civil_from_days`).
fn write_second(out: &mut String, secs: u64) {
    let days = (secs / 86_400) as i64;
    let in_day = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if year > 9999 {
        let _ = write!(out, "+{year}");
    } else {
        let _ = write!(out, "{year:04}");
    }
    let _ = write!(
        out,
        "-{month:02}-{day:02}T{:02}:{:02}:{:02}.",
        in_day / 3_600,
        in_day / 60 % 60,
        in_day % 60
    );
}

/// A `fmt::Write` that escapes what it is given (a `Debug` or `Display` value written straight
/// into a JSON string, without formatting it into a `String` first).
struct Escaping<'a>(&'a mut String);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape(self.0, s);
        Ok(())
    }
}

impl<'w> FormatFields<'w> for JsonSpanFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        // Written whole in one go: `{` and the members, whose first `,` is then taken out.
        // Room for a review span's fields (about 300 bytes) without growing.
        let mut members = String::with_capacity(512);
        members.push('{');
        fields.record(&mut Fields(&mut members));
        if members.len() > 1 {
            members.remove(1);
        }
        members.push('}');
        writer.write_str(&members)
    }

    /// Fields recorded after the span was made: merged into its object (a field given again
    /// replaces the old value). Rare (the review span is made complete), so done through a map.
    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut members = String::new();
        fields.record(&mut Fields(&mut members));
        let added = format!("{{{}}}", members.strip_prefix(',').unwrap_or(&members));
        let mut merged: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&current.fields).unwrap_or_default();
        if let Ok(serde_json::Value::Object(new)) = serde_json::from_str(&added) {
            merged.extend(new);
        }
        current.fields = serde_json::Value::Object(merged).to_string();
        Ok(())
    }
}

/// Appends `n` in decimal, as `{n}` writes it, without the formatting machinery.
fn decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

/// The event's fields as `,"name":value` members.
struct Fields<'a>(&'a mut String);

impl Fields<'_> {
    fn key(&mut self, field: &Field) {
        let name = field.name();
        // Field names are identifiers (escaped all the same if one is not): written in one go.
        if crate::json_text::first_escaped(name.as_bytes()).is_none() {
            self.0.push_str(",\"");
            self.0.push_str(name);
            self.0.push_str("\":");
        } else {
            self.0.push(',');
            string(self.0, name);
            self.0.push(':');
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        string(self.0, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.0.push_str(if value { "true" } else { "false" });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        if value < 0 {
            self.0.push('-');
        }
        decimal(self.0, value.unsigned_abs());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        decimal(self.0, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        match serde_json::Number::from_f64(value) {
            Some(n) => {
                let _ = write!(self.0, "{n}");
            }
            None => self.0.push_str("null"),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.0.push('"');
        let _ = write!(Escaping(self.0), "{value:?}");
        self.0.push('"');
    }
}

impl<S> FormatEvent<S, JsonSpanFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonSpanFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        // Room for a review's line (about 450 bytes) without growing.
        let mut line = String::with_capacity(768);
        line.push_str("{\"timestamp\":\"");
        timestamp(&mut line)?;
        line.push_str("\",\"level\":\"");
        line.push_str(meta.level().as_str());
        line.push('"');
        event.record(&mut Fields(&mut line));
        line.push_str(",\"target\":");
        string(&mut line, meta.target());
        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            line.push_str(",\"span\":{");
            let ext = span.extensions();
            // The span's fields as JsonSpanFields stored them: a JSON object.
            if let Some(fields) = ext.get::<FormattedFields<JsonSpanFields>>()
                && let Some(inner) = fields
                    .fields
                    .trim()
                    .strip_prefix('{')
                    .and_then(|f| f.strip_suffix('}'))
                && !inner.trim().is_empty()
            {
                line.push_str(inner);
                line.push(',');
            }
            line.push_str("\"name\":");
            string(&mut line, span.name());
            line.push('}');
        }
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `f` logs through [`JsonSpanFields`] and [`JsonLines`].
    fn logged(f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .fmt_fields(JsonSpanFields)
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn one_json_object_per_line_with_the_current_span() {
        let text = logged(|| {
            let span = tracing::info_span!("review", uid = "u\"1", dry_run = false, n = 3u64);
            let _e = span.enter();
            tracing::info!(patch_ops = 2, ratio = 0.5, text = %"a\nb", "review answered");
            drop(_e);
            tracing::warn!(error = ?"x", "outside");
        });
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let a = &lines[0];
        assert_eq!(a["level"], "INFO");
        assert_eq!(a["message"], "review answered");
        assert_eq!(a["patch_ops"], 2);
        assert_eq!(a["ratio"], 0.5);
        assert_eq!(a["text"], "a\nb");
        assert_eq!(a["target"], module_path!());
        assert_eq!(
            a["span"],
            serde_json::json!({"uid": "u\"1", "dry_run": false, "n": 3, "name": "review"})
        );
        assert!(a["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["error"], "\"x\"");
        assert!(lines[1].get("span").is_none());
    }

    /// A field name is written as it is, or escaped when it has to be (a string-literal name).
    #[test]
    fn field_names_are_escaped_when_they_need_it() {
        let text = logged(|| {
            tracing::info!(plain = 1, "quo\"te\\back" = 2, "review answered");
        });
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["plain"], 1, "{text}");
        assert_eq!(line["quo\"te\\back"], 2, "{text}");
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for s in [
            "",
            "plain",
            "q\"uote\\back",
            "nl\ncr\rtab\tbs\u{8}ff\u{c}",
            "\u{0}\u{1}\u{1f} \u{7f}",
            "ünï ✓ 😀 </script>",
        ] {
            let mut out = String::new();
            string(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap(), "{s:?}");
            let mut out = String::new();
            write!(Escaping(&mut out), "{s}").unwrap();
            assert_eq!(format!("\"{out}\""), serde_json::to_string(s).unwrap());
        }
    }

    #[test]
    fn timestamps_are_written_as_tracing_writes_them() {
        for (secs, text) in [
            (0, "1970-01-01T00:00:00."),
            (951_782_400, "2000-02-29T00:00:00."),
            (951_868_799, "2000-02-29T23:59:59."),
            (1_796_307_725, "2026-12-03T14:22:05."),
            (4_107_542_400, "2100-03-01T00:00:00."),
            (253_402_300_799, "9999-12-31T23:59:59."),
            (253_402_300_800, "+10000-01-01T00:00:00."),
        ] {
            let mut out = String::new();
            write_second(&mut out, secs);
            assert_eq!(out, text);
        }
        // Now, against tracing's own (again if a second passed between the two).
        let ok = (0..5).any(|_| {
            let mut ours = String::new();
            let mut theirs = String::new();
            timestamp(&mut ours).unwrap();
            SystemTime
                .format_time(&mut Writer::new(&mut theirs))
                .unwrap();
            ours.len() == theirs.len() && ours[..20] == theirs[..20] && ours.ends_with('Z')
        });
        assert!(ok);
    }

    #[test]
    fn decimals_are_written_as_format_writes_them() {
        let mut values = vec![0, 1, 9, 10, 99, 100, u64::MAX, u64::MAX - 1, 1 << 63];
        values.extend((0..64).map(|b| (1u64 << b) - 1));
        values.extend((1..20).map(|e| 10u64.pow(e)));
        for v in values {
            let mut out = String::from("x");
            decimal(&mut out, v);
            assert_eq!(out, format!("x{v}"));
        }
        // Signed and unsigned, in a span and in an event, as the lines carry them.
        for v in [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX] {
            let text = logged(|| {
                let span = tracing::info_span!("s", a = v, b = v.unsigned_abs());
                let _e = span.enter();
                tracing::info!(c = v, d = v.unsigned_abs(), "x");
            });
            let want = format!(r#""span":{{"a":{v},"b":{},"name":"s"}}"#, v.unsigned_abs());
            assert!(text.contains(&want), "{text}");
            let want = format!(r#""c":{v},"d":{}"#, v.unsigned_abs());
            assert!(text.contains(&want), "{text}");
        }
    }

    #[test]
    fn fields_recorded_later_are_merged_into_the_span() {
        let text = logged(|| {
            let span = tracing::info_span!("s", a = 1u64, b = tracing::field::Empty);
            span.record("b", "later");
            span.record("a", 2u64);
            let _e = span.enter();
            tracing::info!("x");
        });
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(
            line["span"],
            serde_json::json!({"a": 2, "b": "later", "name": "s"})
        );
    }
}
