//! The JSON log line (`--log-format json`), written without a detour through `serde_json::Value`.
//!
//! The same line as tracing-subscriber's JSON format with `flatten_event(true)`,
//! `with_current_span(true)` and no span list: `timestamp`, `level`, the event's fields (its
//! `message` among them), `target`, and the current span as `span` (its fields and `name`).
//! Theirs re-parses the span's stored fields for every event and collects the event's fields
//! into a map first; here the span's fields, already JSON (`JsonFields`), are copied as they are
//! and the event's fields are written as they are visited. Every review logs one such line.

use std::fmt::{self, Write as _};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The JSON event format (see the module docs); use with `fmt_fields(JsonFields::new())`.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

/// Writes `s` as a JSON string.
fn string(out: &mut String, s: &str) {
    // serde_json's escaping; writing into a String cannot fail.
    let mut buf = Vec::with_capacity(s.len() + 2);
    if serde_json::to_writer(&mut buf, s).is_ok() {
        out.push_str(std::str::from_utf8(&buf).unwrap_or("\"\""));
    }
}

/// The event's fields as `,"name":value` members.
struct Fields<'a>(&'a mut String);

impl Fields<'_> {
    fn key(&mut self, field: &Field) {
        self.0.push(',');
        string(self.0, field.name());
        self.0.push(':');
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
        let _ = write!(self.0, "{value}");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.0, "{value}");
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
        string(self.0, &format!("{value:?}"));
    }
}

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = String::with_capacity(320);
        line.push_str("{\"timestamp\":\"");
        SystemTime.format_time(&mut Writer::new(&mut line))?;
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
            // The span's fields as JsonFields stored them: a JSON object.
            if let Some(fields) = ext.get::<FormattedFields<JsonFields>>()
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

    #[test]
    fn one_json_object_per_line_with_the_current_span() {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("review", uid = "u\"1", dry_run = false, n = 3u64);
            let _e = span.enter();
            tracing::info!(patch_ops = 2, ratio = 0.5, text = %"a\nb", "review answered");
            drop(_e);
            tracing::warn!(error = ?"x", "outside");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
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
}
