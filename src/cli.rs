//! Command-line pieces the subcommands share: durations, log format, logging setup, the
//! policy's flags.

use crate::allocator::MacRange;
use crate::policy::PolicyConfig;
use std::time::Duration;

/// The policy's flags, the same for `hotnic webhook` and `hotnic check`.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyArgs {
    /// Range injected MACs come from (locally administered unicast addresses only).
    #[arg(
        long,
        env = "HOTNIC_MAC_RANGE",
        default_value = "02:00:00:00:00:00-02:ff:ff:ff:ff:ff"
    )]
    pub mac_range: MacRange,
    /// Interface capacity for workloads that state none (before max with their NIC count).
    #[arg(long, env = "HOTNIC_DEFAULT_CAPACITY", default_value_t = 4, value_parser = clap::value_parser!(u8).range(0..=32))]
    pub default_capacity: u8,
}

impl PolicyArgs {
    /// The policy settings they give.
    pub fn config(&self) -> PolicyConfig {
        PolicyConfig {
            default_capacity: self.default_capacity,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The writer thread's guard: dropping it writes out the queued lines.
static LOG_GUARD: std::sync::Mutex<Option<crate::log_writer::WriterGuard>> =
    std::sync::Mutex::new(None);

/// Sets up tracing to stderr (filter from `RUST_LOG`, default `info`). Safe to call twice.
/// Lines are written by a thread of their own ([`crate::log_writer`]), so a review never waits
/// for stderr, in batches; none is dropped (a backlog makes the logger wait); [`flush_logs`]
/// before exiting.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = colours(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR"),
    );
    let installed = match crate::log_writer::spawn("hotnic-log", std::io::stderr()) {
        Ok((writer, guard)) => install(format, filter, ansi, writer).map(|()| Some(guard)),
        Err(e) => {
            // No thread to be had (a resource limit): each line written by its logger.
            eprintln!("hotnic: cannot start the log writer thread ({e}); logging directly");
            install(format, filter, ansi, std::io::stderr).map(|()| None)
        }
    };
    if let Ok(guard) = installed {
        *LOG_GUARD.lock().unwrap_or_else(|e| e.into_inner()) = guard;
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Where tracing has no subscriber to hand this thread (one already inside a scoped
            // one, or being torn down), the line would vanish: Rust's default text instead.
            let can_log =
                tracing::dispatcher::get_default(|d| !d.is::<tracing::subscriber::NoSubscriber>());
            if can_log {
                log_panic(info);
            } else {
                default(info);
            }
        }));
    }
}

/// Whether text lines get ANSI colours: only on a terminal, and not when `NO_COLOR` is set to
/// anything but the empty string (no-color.org). Logs read from a file or by `kubectl logs`
/// would otherwise carry escape sequences.
fn colours(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber: `format`'s lines, `filter`'s events, into `writer`; text
/// lines coloured when `ansi`.
fn install<W>(
    format: LogFormat,
    filter: tracing_subscriber::EnvFilter,
    ansi: bool,
    writer: W,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .fmt_fields(crate::webhook::log::JsonSpanFields)
            .event_format(crate::webhook::log::JsonLines)
            .try_init(),
    }
}

/// A panic's message: its payload when that is text (`panic!` with a message makes a `&str` or
/// a `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

/// The panic hook once logging is set up: a panic is one error line in the log's format (with
/// `RUST_BACKTRACE`, the backtrace as a field), not Rust's default text on stderr, which a
/// JSON log pipeline cannot read. A panic on the main thread ends the process: the queued lines,
/// this one included, are written out first.
fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let message = panic_message(info.payload());
    let location = info
        .location()
        .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
        .unwrap_or_default();
    let thread = std::thread::current();
    let thread = thread.name().unwrap_or("unnamed");
    let backtrace = std::backtrace::Backtrace::capture();
    if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
        tracing::error!(panic = message, location, thread, backtrace = %backtrace, "a thread panicked (a bug)");
    } else {
        tracing::error!(
            panic = message,
            location,
            thread,
            "a thread panicked (a bug)"
        );
    }
    if thread == "main" {
        flush_logs();
    }
}

/// Writes out the log lines still queued; call before the process exits.
pub fn flush_logs() {
    drop(LOG_GUARD.lock().unwrap_or_else(|e| e.into_inner()).take());
}

/// Parses `250ms`, `10s`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 10s or 500ms"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}; use ms, s, m or h")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a valid duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_message_is_its_text_payload() {
        let caught = |f: fn()| std::panic::catch_unwind(f).unwrap_err();
        // The default hook's text goes to this test's captured output.
        let literal = caught(|| panic!("plain words"));
        let formatted = caught(|| panic!("made {}", 7));
        let other = caught(|| std::panic::panic_any(42_u32));
        assert_eq!(panic_message(&*literal), "plain words");
        assert_eq!(panic_message(&*formatted), "made 7");
        assert_eq!(panic_message(&*other), "a panic without a message");
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colours(true, None));
        assert!(
            colours(true, Some("".into())),
            "an empty NO_COLOR does not count"
        );
        assert!(!colours(true, Some("1".into())));
        assert!(
            !colours(false, None),
            "a pipe or a file gets no escape sequences"
        );
        assert!(!colours(false, Some("1".into())));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        for bad in ["", "s", "10x", "-1s", "1e400s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
