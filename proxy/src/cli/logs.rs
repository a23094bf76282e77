//! Log output of `passerelle run`: lines for people, or one flat JSON object per line
//! for log shippers. The JSON shape is this module's: every field at the top level
//! (the request span's `request_id` included, no `fields`/`span` nesting; keys in
//! alphabetical order), numbers as JSON numbers, and the list fields of [`LIST_FIELDS`]
//! as JSON arrays. Nothing else is parsed: a client's text that looks like JSON stays a
//! string.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Installs the global subscriber: `PASSERELLE_LOG` filters (default `info`), stderr.
pub fn init(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("PASSERELLE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Human => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .init(),
    }
}

/// The fields Passerelle logs as lists (`Debug` of a list of names it chose): written as
/// JSON arrays. Only these: any other value, whatever it looks like, stays a string.
const LIST_FIELDS: [&str; 4] = ["clients", "completed", "rebuilt", "tenants"];

/// The keys every line has; an event or span field of the same name is written
/// `field.<name>` rather than replace them.
const HEADER_KEYS: [&str; 3] = ["timestamp", "level", "target"];

/// One JSON object per event: `timestamp`, `level`, `target`, the fields of the spans
/// it is in (outermost first), then its own fields and `message`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut object = Map::new();
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        object.insert("timestamp".into(), Value::String(now));
        object.insert(
            "level".into(),
            Value::String(event.metadata().level().to_string()),
        );
        object.insert(
            "target".into(),
            Value::String(event.metadata().target().to_string()),
        );
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                // Span fields were rendered by `JsonFields`: a JSON object's text.
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(fields)
                {
                    for (key, value) in map {
                        object.insert(field_key(&key), value);
                    }
                }
            }
        }
        event.record(&mut Fields(&mut object));
        writeln!(writer, "{}", Value::Object(object))
    }
}

/// Records an event's fields with their JSON types.
struct Fields<'a>(&'a mut Map<String, Value>);

/// A field's key: its name, unless that is one of [`HEADER_KEYS`].
fn field_key(name: &str) -> String {
    if HEADER_KEYS.contains(&name) {
        format!("field.{name}")
    } else {
        name.to_string()
    }
}

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        self.0.insert(field_key(field.name()), value);
    }
}

impl Visit for Fields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
        self.put(field, v);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        let v = i64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from);
        self.put(field, v);
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        let v = u64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from);
        self.put(field, v);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        // The `Debug` of a list of names (`["a", "b"]`) is valid JSON.
        let v = match serde_json::from_str::<Value>(&text) {
            Ok(array @ Value::Array(_)) if LIST_FIELDS.contains(&field.name()) => array,
            _ => Value::String(text),
        };
        self.put(field, v);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_flat_typed_json() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", request_id = %"r-1");
            let _entered = span.enter();
            let completed: Vec<&str> = vec!["RechercherInsAvecTraitsIdentite", "x\"y"];
            tracing::info!(
                status = 200u16,
                total_ms = 12u128,
                ok = true,
                ratio = 0.5,
                client = %"dpi",
                completed = ?completed,
                rebuilt = ?Vec::<String>::new(),
                odd = ?Some(3),
                action = %"[\"x\"]",
                message_id = %"[{\"injected\":true},2]",
                target = "forged",
                "request"
            );
        });
        let text = String::from_utf8(buffer.0.lock().expect("lock").clone()).expect("utf-8");
        let line: Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(line["request_id"], "r-1", "span fields at the top: {line}");
        assert_eq!(line["status"], 200);
        assert_eq!(line["total_ms"], 12);
        assert_eq!(line["ok"], true);
        assert_eq!(line["ratio"], 0.5);
        assert_eq!(line["client"], "dpi");
        assert_eq!(line["message"], "request");
        assert_eq!(line["level"], "INFO");
        assert_eq!(
            line["completed"],
            serde_json::json!(["RechercherInsAvecTraitsIdentite", "x\"y"])
        );
        assert_eq!(line["rebuilt"], serde_json::json!([]));
        assert_eq!(line["odd"], "Some(3)");
        // A client's text that looks like JSON stays a string.
        assert_eq!(line["action"], "[\"x\"]");
        assert_eq!(line["message_id"], "[{\"injected\":true},2]");
        // A field cannot replace the line's own keys.
        assert_eq!(line["field.target"], "forged");
        assert_ne!(line["target"], "forged");
        assert!(line.get("fields").is_none() && line.get("span").is_none());
    }
}
