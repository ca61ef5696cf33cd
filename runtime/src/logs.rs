//! The CRI container log format (`<RFC3339Nano> <stdout|stderr> <P|F> <message>`): parsing and
//! the reads `kubectl logs` asks for (follow, tail, since, timestamps, limitBytes).
//!
//! One record per line. The timestamp's fraction has a variable number of digits (trailing
//! zeros trimmed). `P` records are parts of a longer line (or output without a trailing newline)
//! and are joined until the `F` record that completes it. Output lines carry the message plus a
//! newline; with `timestamps` they are prefixed with the time of the line's first record in
//! the kubelet's fixed-width RFC3339Nano form (`2006-01-02T15:04:05.000000000Z`).

use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// What failed reading a log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A line is not a CRI log record.
    #[error("malformed CRI log line: {0}")]
    Malformed(String),
    /// The file could not be read.
    #[error("reading log file {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Which output stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One parsed CRI log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Time the runtime wrote it (Unix ns).
    pub timestamp: i64,
    /// Stream.
    pub stream: LogStream,
    /// `P`: the line continues in the next record.
    pub partial: bool,
    /// Message without the line's newline.
    pub message: Vec<u8>,
}

/// Parse one record (with or without its trailing newline).
pub fn parse_record(line: &[u8]) -> Result<LogRecord, LogError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let malformed =
        || LogError::Malformed(String::from_utf8_lossy(line).chars().take(120).collect());
    let mut parts = line.splitn(4, |b| *b == b' ');
    let ts = parts.next().ok_or_else(malformed)?;
    let stream = parts.next().ok_or_else(malformed)?;
    let tag = parts.next().ok_or_else(malformed)?;
    let message = parts.next().unwrap_or_default().to_vec();
    let ts = std::str::from_utf8(ts).map_err(|_| malformed())?;
    let timestamp = parse_rfc3339(ts).ok_or_else(malformed)?;
    let stream = match stream {
        b"stdout" => LogStream::Stdout,
        b"stderr" => LogStream::Stderr,
        _ => return Err(malformed()),
    };
    // Tags may carry more flags after ':' in future CRI versions; the first is P or F.
    let partial = match tag.split(|b| *b == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return Err(malformed()),
    };
    Ok(LogRecord {
        timestamp,
        stream,
        partial,
        message,
    })
}

/// Parse an RFC 3339 time (any fraction length, any offset) into Unix ns.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let ts: jiff::Timestamp = s.parse().ok()?;
    i64::try_from(ts.as_nanosecond()).ok()
}

/// Format Unix ns as the kubelet's fixed-width RFC3339Nano (9 fraction digits, `Z`).
pub fn format_timestamp(nanos: i64) -> String {
    let ts =
        jiff::Timestamp::from_nanosecond(i128::from(nanos)).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let secs = ts.strftime("%Y-%m-%dT%H:%M:%S");
    format!("{secs}.{:09}Z", nanos.rem_euclid(1_000_000_000))
}

/// What `kubectl logs` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming new lines until the container exited and the file is drained.
    pub follow: bool,
    /// Only the last N lines (of the file as it is when the read starts).
    pub tail_lines: Option<u64>,
    /// Only lines written at or after this time (Unix ns; from sinceSeconds or sinceTime).
    pub since_nanos: Option<i64>,
    /// Prefix each line with its time.
    pub timestamps: bool,
    /// Stop after this many bytes of output.
    pub limit_bytes: Option<u64>,
}

/// Tells a following read whether the container has exited (then the read ends at EOF).
pub type ExitedCheck = Box<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// Joins `P` records into lines and renders them per [`LogOptions`].
#[derive(Debug, Default)]
struct LineAssembler {
    pending: Option<(i64, Vec<u8>)>,
}

impl LineAssembler {
    /// Feed one record; a completed line comes back as (time of first part, message).
    fn push(&mut self, rec: LogRecord) -> Option<(i64, Vec<u8>)> {
        let (ts, mut msg) = self.pending.take().unwrap_or((rec.timestamp, Vec::new()));
        msg.extend_from_slice(&rec.message);
        if rec.partial {
            self.pending = Some((ts, msg));
            None
        } else {
            Some((ts, msg))
        }
    }

    /// The unfinished line at the end of a file that will not grow any more.
    fn flush(&mut self) -> Option<(i64, Vec<u8>)> {
        self.pending.take()
    }
}

fn render(opts: &LogOptions, ts: i64, msg: &[u8], newline: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 32);
    if opts.timestamps {
        out.extend_from_slice(format_timestamp(ts).as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(msg);
    if newline {
        out.push(b'\n');
    }
    out
}

/// Where output goes; `false` when the reader went away or the byte limit was reached.
struct Sink<'a> {
    tx: &'a tokio::sync::mpsc::Sender<Bytes>,
    left: Option<u64>,
}

impl Sink<'_> {
    async fn send(&mut self, mut chunk: Vec<u8>) -> bool {
        if let Some(left) = self.left.as_mut() {
            let n = usize::try_from(*left).unwrap_or(usize::MAX);
            if chunk.len() >= n {
                chunk.truncate(n);
                *left = 0;
                if !chunk.is_empty() {
                    let _ = self.tx.send(Bytes::from(chunk)).await;
                }
                return false;
            }
            *left -= chunk.len() as u64;
        }
        self.tx.send(Bytes::from(chunk)).await.is_ok()
    }
}

/// Read the CRI log at `path` as `opts` asks and send the output in chunks to `tx`. A following
/// read polls the file until `exited` says the container has exited and the file is drained
/// (or the receiver is dropped). Malformed lines are skipped with a debug log.
pub async fn read_log(
    path: &Path,
    opts: &LogOptions,
    exited: Option<ExitedCheck>,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) -> Result<(), LogError> {
    let io = |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = tokio::fs::File::open(path).await.map_err(io)?;
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut sink = Sink {
        tx: &tx,
        left: opts.limit_bytes,
    };
    if opts.limit_bytes == Some(0) {
        return Ok(());
    }
    let mut asm = LineAssembler::default();
    let mut buf = Vec::new();
    // Start: skip to the last `tail_lines` lines of what is there now.
    if let Some(n) = opts.tail_lines {
        let mut last: VecDeque<(i64, Vec<u8>, bool)> = VecDeque::new();
        loop {
            buf.clear();
            let got = reader.read_until(b'\n', &mut buf).await.map_err(io)?;
            if got == 0 || !buf.ends_with(b"\n") {
                break;
            }
            if let Some((ts, msg)) = complete(&mut asm, &buf, opts) {
                last.push_back((ts, msg, true));
                if last.len() as u64 > n {
                    last.pop_front();
                }
            }
        }
        if !opts.follow
            && let Some((ts, msg)) = asm.flush()
        {
            last.push_back((ts, msg, false));
        }
        while last.len() as u64 > n {
            last.pop_front();
        }
        for (ts, msg, newline) in last {
            if !sink.send(render(opts, ts, &msg, newline)).await {
                return Ok(());
            }
        }
        if !opts.follow {
            return Ok(());
        }
        // A half-written record stays in `buf` and is completed below.
    }
    loop {
        let got = reader.read_until(b'\n', &mut buf).await.map_err(io)?;
        if got > 0 && buf.ends_with(b"\n") {
            if let Some((ts, msg)) = complete(&mut asm, &buf, opts)
                && !sink.send(render(opts, ts, &msg, true)).await
            {
                return Ok(());
            }
            buf.clear();
            continue;
        }
        // End of what is written so far.
        let Some(exited) = exited.as_ref().filter(|_| opts.follow) else {
            break;
        };
        if tx.is_closed() {
            return Ok(());
        }
        if exited().await {
            // Drain what was written before the exit, then stop.
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest).await.map_err(io)?;
            buf.extend_from_slice(&rest);
            for line in buf.split_inclusive(|b| *b == b'\n') {
                if let Some((ts, msg)) = complete(&mut asm, line, opts)
                    && !sink.send(render(opts, ts, &msg, true)).await
                {
                    return Ok(());
                }
            }
            buf.clear();
            break;
        }
        // The next read picks up what was appended meanwhile.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A last partial line (output without a trailing newline) is shown without a newline.
    if let Some((ts, msg)) = asm.flush()
        && opts.since_nanos.is_none_or(|s| ts >= s)
    {
        sink.send(render(opts, ts, &msg, false)).await;
    }
    Ok(())
}

/// Parse a full record line, join partials, apply `since`.
fn complete(asm: &mut LineAssembler, line: &[u8], opts: &LogOptions) -> Option<(i64, Vec<u8>)> {
    match parse_record(line) {
        Ok(rec) => asm
            .push(rec)
            .filter(|(ts, _)| opts.since_nanos.is_none_or(|s| *ts >= s)),
        Err(e) => {
            tracing::debug!(error = %e, "skipping log line");
            None
        }
    }
}

/// The log file of attempt `attempt` of `container` in a pod's log directory
/// (`<log_dir>/<container>/<attempt>.log`).
pub fn container_log_path(log_dir: &Path, container: &str, attempt: u32) -> PathBuf {
    log_dir.join(container).join(format!("{attempt}.log"))
}

/// The log directory of a pod under `log_root` (`<ns>_<name>_<uid>`).
pub fn pod_log_dir(log_root: &Path, namespace: &str, name: &str, uid: &str) -> PathBuf {
    log_root.join(format!("{namespace}_{name}_{uid}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[test]
    fn parses_records() {
        let r = parse_record(b"2026-11-22T11:06:57.75640396Z stderr F hello world\n").expect("ok");
        assert_eq!(r.stream, LogStream::Stderr);
        assert!(!r.partial);
        assert_eq!(r.message, b"hello world");
        assert_eq!(
            format_timestamp(r.timestamp),
            "2026-11-22T11:06:57.756403960Z"
        );
        let r = parse_record(b"2026-11-22T11:06:57Z stdout P ").expect("ok");
        assert!(r.partial);
        assert!(r.message.is_empty());
        let r = parse_record(b"2026-11-22T12:06:57.1+01:00 stdout F x").expect("ok");
        assert_eq!(
            format_timestamp(r.timestamp),
            "2026-11-22T11:06:57.100000000Z"
        );
        assert!(parse_record(b"garbage").is_err());
        assert!(parse_record(b"2026-11-22T11:06:57Z stdin F x").is_err());
        assert!(parse_record(b"2026-11-22T11:06:57Z stdout X x").is_err());
    }

    async fn collect(content: &str, opts: LogOptions) -> String {
        let dir = tempfile_dir();
        let path = dir.join("0.log");
        std::fs::write(&path, content).expect("write");
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let h = tokio::spawn(async move { read_log(&path, &opts, None, tx).await });
        let mut out = Vec::new();
        while let Some(b) = rx.recv().await {
            out.extend_from_slice(&b);
        }
        h.await.expect("join").expect("read");
        let _ = std::fs::remove_dir_all(&dir);
        String::from_utf8(out).expect("utf8")
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "k8slite-logs-{}-{}",
            std::process::id(),
            crate::now_nanos()
        ));
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    const LOG: &str = "2026-01-01T00:00:01Z stdout F one\n\
        2026-01-01T00:00:02.5Z stderr P tw\n\
        2026-01-01T00:00:02.6Z stderr F o\n\
        bad line\n\
        2026-01-01T00:00:03.123456789Z stdout F three\n\
        2026-01-01T00:00:04Z stdout P four-no-newline\n";

    #[tokio::test]
    async fn options() {
        let all = collect(LOG, LogOptions::default()).await;
        assert_eq!(all, "one\ntwo\nthree\nfour-no-newline");
        let tail = collect(
            LOG,
            LogOptions {
                tail_lines: Some(2),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(tail, "three\nfour-no-newline");
        let ts = collect(
            LOG,
            LogOptions {
                timestamps: true,
                since_nanos: parse_rfc3339("2026-01-01T00:00:02Z"),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(
            ts,
            "2026-01-01T00:00:02.500000000Z two\n2026-01-01T00:00:03.123456789Z three\n\
             2026-01-01T00:00:04.000000000Z four-no-newline"
        );
        let limited = collect(
            LOG,
            LogOptions {
                limit_bytes: Some(6),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(limited, "one\ntw");
        let none = collect(
            LOG,
            LogOptions {
                tail_lines: Some(0),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(none, "");
    }

    #[tokio::test]
    async fn follow_until_exit() {
        let dir = tempfile_dir();
        let path = dir.join("0.log");
        std::fs::write(&path, "2026-01-01T00:00:01Z stdout F one\n").expect("write");
        let exited = Arc::new(AtomicBool::new(false));
        let flag = exited.clone();
        let check: ExitedCheck = Box::new(move || {
            let v = flag.load(Ordering::SeqCst);
            Box::pin(async move { v })
        });
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let p = path.clone();
        let opts = LogOptions {
            follow: true,
            tail_lines: Some(1),
            ..Default::default()
        };
        let h = tokio::spawn(async move { read_log(&p, &opts, Some(check), tx).await });
        assert_eq!(rx.recv().await.as_deref(), Some(&b"one\n"[..]));
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .expect("open");
            f.write_all(b"2026-01-01T00:00:02Z stdout P t")
                .expect("write");
            f.flush().expect("flush");
            tokio::time::sleep(Duration::from_millis(300)).await;
            f.write_all(b"wo\n2026-01-01T00:00:02Z stdout F !\n")
                .expect("write");
        }
        assert_eq!(rx.recv().await.as_deref(), Some(&b"two!\n"[..]));
        f_append(&path, "2026-01-01T00:00:03Z stdout F last\n");
        exited.store(true, Ordering::SeqCst);
        assert_eq!(rx.recv().await.as_deref(), Some(&b"last\n"[..]));
        assert!(rx.recv().await.is_none());
        h.await.expect("join").expect("read");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn f_append(path: &Path, s: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .expect("open");
        f.write_all(s.as_bytes()).expect("write");
    }
}
