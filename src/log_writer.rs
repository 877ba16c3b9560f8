//! The log's writer: lines gathered in memory and written out by a thread of their own, a batch
//! at a time, so that logging a line costs its caller a short copy under a lock.
//!
//! `tracing-appender`'s non-blocking writer hands every line over a channel in its own
//! allocation, and its thread writes and flushes what it finds queued: at a few thousand lines a
//! second and more, that is a wake-up (a futex call) for about every line and a `write(2)` for
//! every few, which cost the webhook ~5 µs of CPU per review and its slowest answers (measured
//! with `examples/loadgen.rs`, README "Measured"). Here a line is appended to a shared buffer;
//! the thread is woken only by the first line after a write or by a full batch, lets lines
//! gather for [`LINGER`], then writes the whole buffer with one call. No line is dropped: past
//! [`BACKLOG`] bytes not yet written, loggers wait for the thread.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the thread lets lines gather after the first one before writing them.
pub const LINGER: Duration = Duration::from_millis(10);

/// A batch this large is written at once, without waiting out [`LINGER`].
pub const BATCH: usize = 64 * 1024;

/// How long closing waits for the thread to write out what is left: a sink that takes no more
/// (a pipe nobody reads) must not hold the process at exit.
pub const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Bytes not yet written past which a logger waits for the thread (a sink slower than the
/// lines: back-pressure rather than unbounded memory or lost lines).
pub const BACKLOG: usize = 8 * 1024 * 1024;

#[derive(Default)]
struct Buffer {
    /// Lines not yet written.
    lines: Vec<u8>,
    /// Loggers waiting for room.
    waiting: usize,
    /// No more lines: write what is left and stop.
    closed: bool,
}

struct Shared {
    buffer: Mutex<Buffer>,
    /// The thread waits here for lines.
    lines: Condvar,
    /// Loggers wait here for room.
    room: Condvar,
    backlog: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Buffer> {
        // A logger that panicked mid-append leaves whole lines behind at worst a cut one.
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Appends lines to the batch (a `tracing_subscriber::fmt::MakeWriter`; each `write` call
/// should be whole lines, as the fmt layer writes an event).
#[derive(Clone)]
pub struct BatchWriter(Arc<Shared>);

/// Stops the thread once every line given before is written (waiting at most [`CLOSE_WAIT`]):
/// on drop, or [`WriterGuard::close`].
pub struct WriterGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A writer thread named `name` writing into `sink`; the writer to log with and its guard.
pub fn spawn<W: Write + Send + 'static>(
    name: &str,
    sink: W,
) -> io::Result<(BatchWriter, WriterGuard)> {
    spawn_with(name, sink, BACKLOG)
}

/// [`spawn`] with another backlog bound (tests).
fn spawn_with<W: Write + Send + 'static>(
    name: &str,
    mut sink: W,
    backlog: usize,
) -> io::Result<(BatchWriter, WriterGuard)> {
    let shared = Arc::new(Shared {
        buffer: Mutex::new(Buffer::default()),
        lines: Condvar::new(),
        room: Condvar::new(),
        backlog,
    });
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || write_batches(&shared, &mut sink))?
    };
    Ok((
        BatchWriter(shared.clone()),
        WriterGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

/// The thread: waits for lines, lets them gather, writes them with one call, until closed and
/// empty. A failing sink (stderr closed) loses those lines, as any writer would, and goes on.
fn write_batches(shared: &Shared, sink: &mut dyn Write) {
    let mut batch = Vec::new();
    loop {
        let mut b = shared.lock();
        while b.lines.is_empty() && !b.closed {
            b = shared.lines.wait(b).unwrap_or_else(|e| e.into_inner());
        }
        if b.lines.is_empty() {
            return;
        }
        if b.lines.len() < BATCH && !b.closed {
            // Woken early by a full batch or by closing.
            b = shared
                .lines
                .wait_timeout(b, LINGER)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        std::mem::swap(&mut b.lines, &mut batch);
        if b.waiting > 0 {
            shared.room.notify_all();
        }
        drop(b);
        let _ = sink.write_all(&batch).and_then(|()| sink.flush());
        batch.clear();
        // A backlog (a sink that stalled) leaves no lasting memory behind: the buffer goes back
        // to the loggers at batch size.
        batch.shrink_to(2 * BATCH);
    }
}

impl Write for &BatchWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let shared = &*self.0;
        let mut b = shared.lock();
        while b.lines.len() >= shared.backlog && !b.closed {
            b.waiting += 1;
            b = shared.room.wait(b).unwrap_or_else(|e| e.into_inner());
            b.waiting -= 1;
        }
        if b.closed {
            return Ok(line.len());
        }
        let before = b.lines.len();
        b.lines.extend_from_slice(line);
        // The thread waits for the first line, and (lingering) for a full batch: woken only then.
        let wake = before == 0 || (before < BATCH && b.lines.len() >= BATCH);
        drop(b);
        if wake {
            shared.lines.notify_one();
        }
        Ok(line.len())
    }

    /// Nothing to do here: the thread writes every line within [`LINGER`], and
    /// [`WriterGuard::close`] writes out the rest.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchWriter {
    type Writer = &'a BatchWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl WriterGuard {
    /// Writes out every line given so far and stops the thread; later lines are taken (never
    /// blocking) and dropped.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.lines.notify_one();
        self.shared.room.notify_all();
        let Some(t) = self.thread.take() else { return };
        let start = std::time::Instant::now();
        while !t.is_finished() {
            if start.elapsed() >= CLOSE_WAIT {
                // Left to itself; what it has not written is lost with the process.
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = t.join();
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read, that may be made slow.
    #[derive(Clone, Default)]
    struct Sink {
        out: Arc<Mutex<Vec<u8>>>,
        writes: Arc<Mutex<usize>>,
        delay: Duration,
    }

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            std::thread::sleep(self.delay);
            *self.writes.lock().unwrap() += 1;
            self.out.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Lines of several threads: every one written, whole, each thread's in its order.
    fn check(out: &[u8], threads: usize, lines: usize) {
        let text = std::str::from_utf8(out).unwrap();
        let mut next = vec![0; threads];
        for line in text.lines() {
            let (t, i) = line.split_once(' ').unwrap();
            let (t, i): (usize, usize) = (t.parse().unwrap(), i.parse().unwrap());
            assert_eq!(i, next[t], "thread {t}'s lines out of order");
            next[t] += 1;
        }
        assert_eq!(next, vec![lines; threads], "lines lost");
    }

    fn log_from_threads(w: &BatchWriter, threads: usize, lines: usize) {
        std::thread::scope(|s| {
            for t in 0..threads {
                s.spawn(move || {
                    for i in 0..lines {
                        (&*w).write_all(format!("{t} {i}\n").as_bytes()).unwrap();
                    }
                });
            }
        });
    }

    #[test]
    fn every_line_of_every_thread_is_written_whole_and_in_order_in_few_writes() {
        let sink = Sink::default();
        let (w, guard) = spawn("test-log", sink.clone()).unwrap();
        log_from_threads(&w, 4, 20_000);
        guard.close();
        check(&sink.out.lock().unwrap(), 4, 20_000);
        // ~1 MB of lines: batches, not a write per line.
        let writes = *sink.writes.lock().unwrap();
        assert!(writes < 2_000, "{writes} writes for 80,000 lines");
    }

    #[test]
    fn a_slow_sink_makes_loggers_wait_and_loses_nothing() {
        let sink = Sink {
            delay: Duration::from_millis(2),
            ..Sink::default()
        };
        // A backlog of a few lines: the loggers are held up by the sink.
        let (w, guard) = spawn_with("test-log", sink.clone(), 64).unwrap();
        log_from_threads(&w, 3, 300);
        guard.close();
        let out = sink.out.lock().unwrap();
        check(&out, 3, 300);
        // Held to the backlog: no batch much over 64 bytes (three loggers' lines at most past it).
        let writes = *sink.writes.lock().unwrap();
        assert!(
            writes >= out.len() / (64 + 3 * 8),
            "{writes} writes of {} bytes",
            out.len()
        );
    }

    #[test]
    fn a_backlog_leaves_no_large_buffers_behind() {
        let sink = Sink {
            delay: Duration::from_millis(50),
            ..Sink::default()
        };
        let (w, guard) = spawn("test-log", sink.clone()).unwrap();
        // ~1 MB while the sink is slow: large batches.
        log_from_threads(&w, 2, 50_000);
        // Once it is taken for writing, what the loggers append to is small again.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !w.0.lock().lines.is_empty() {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        (&w).write_all(b"0 50000\n").unwrap();
        let capacity = w.0.lock().lines.capacity();
        assert!(capacity <= 2 * BATCH, "{capacity} bytes kept");
        (&w).write_all(b"1 50000\n").unwrap();
        guard.close();
        check(&sink.out.lock().unwrap(), 2, 50_001);
    }

    #[test]
    fn a_lone_line_is_written_without_more_coming_or_closing() {
        let sink = Sink::default();
        let (w, _guard) = spawn("test-log", sink.clone()).unwrap();
        (&w).write_all(b"0 0\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sink.out.lock().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the line never came out"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        check(&sink.out.lock().unwrap(), 1, 1);
    }

    /// A sink that never returns (a pipe nobody reads).
    struct Stuck;

    impl Write for Stuck {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            loop {
                std::thread::park();
            }
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn closing_does_not_hang_on_a_sink_that_takes_nothing() {
        let (w, guard) = spawn("test-log", Stuck).unwrap();
        (&w).write_all(b"0 0\n").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            guard.close();
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("closing waited for a stuck sink");
    }

    #[test]
    fn lines_after_closing_never_block() {
        let sink = Sink::default();
        let (w, guard) = spawn_with("test-log", sink.clone(), 8).unwrap();
        guard.close();
        for _ in 0..100 {
            (&w).write_all(b"late\n").unwrap();
        }
        assert!(sink.out.lock().unwrap().is_empty());
    }
}
