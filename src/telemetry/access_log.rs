//! The access log: one line per request on standard output, text or JSON.
//!
//! Lines are handed to a writer thread through a bounded channel; when it falls behind, lines
//! are dropped (and counted) rather than making requests wait on stdout.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use serde::Serialize;

use crate::config::AccessLogFormat;

/// Lines waiting for the writer before new ones are dropped.
const QUEUE: usize = 16_384;

static WRITER: OnceLock<Option<SyncSender<String>>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// One request, as logged.
#[derive(Debug, Serialize)]
pub struct AccessRecord<'a> {
    pub request_id: &'a str,
    pub client: String,
    pub country: &'a str,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub route: &'a str,
    pub region: &'a str,
    pub endpoint: String,
    pub attempts: u32,
    /// Faults injected: none, delay, abort or both.
    pub fault: &'a str,
    pub duration_ms: f64,
}

impl AccessRecord<'_> {
    fn line(&self, format: AccessLogFormat) -> Option<String> {
        match format {
            AccessLogFormat::Off => None,
            AccessLogFormat::Json => serde_json::to_string(self).ok(),
            AccessLogFormat::Text => Some(format!(
                "{} {} {} {}{} {} route={} region={} endpoint={} attempts={} {:.3}ms id={} fault={}",
                self.client,
                self.country,
                self.method,
                self.host,
                self.path,
                self.status,
                dash(self.route),
                dash(self.region),
                dash(&self.endpoint),
                self.attempts,
                self.duration_ms,
                self.request_id,
                self.fault
            )),
        }
    }
}

fn dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

fn writer() -> Option<&'static SyncSender<String>> {
    WRITER
        .get_or_init(|| {
            let (tx, rx) = sync_channel::<String>(QUEUE);
            std::thread::Builder::new()
                .name("meridian-access-log".into())
                .spawn(move || {
                    let stdout = std::io::stdout();
                    while let Ok(line) = rx.recv() {
                        let mut out = stdout.lock();
                        let _ = writeln!(out, "{line}");
                        // Write what is queued, then flush once.
                        while let Ok(line) = rx.try_recv() {
                            let _ = writeln!(out, "{line}");
                        }
                        let _ = out.flush();
                    }
                })
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

/// Log one request (never blocks).
pub fn log(record: &AccessRecord<'_>, format: AccessLogFormat) {
    let Some(line) = record.line(format) else {
        return;
    };
    let Some(tx) = writer() else { return };
    if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(line) {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Lines dropped because the writer fell behind.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let r = AccessRecord {
            request_id: "abc",
            client: "198.51.100.7".into(),
            country: "DE",
            method: "GET",
            host: "api.example.com",
            path: "/x",
            status: 200,
            route: "api",
            region: "eu-west-1",
            endpoint: "10.1.0.5:8000".into(),
            attempts: 1,
            fault: "abort",
            duration_ms: 1.5,
        };
        let text = r.line(AccessLogFormat::Text).unwrap();
        assert_eq!(
            text,
            "198.51.100.7 DE GET api.example.com/x 200 route=api region=eu-west-1 endpoint=10.1.0.5:8000 attempts=1 1.500ms id=abc fault=abort"
        );
        let json: serde_json::Value =
            serde_json::from_str(&r.line(AccessLogFormat::Json).unwrap()).unwrap();
        assert_eq!(json["region"], "eu-west-1");
        assert_eq!(json["attempts"], 1);
        assert_eq!(json["fault"], "abort");
        assert!(r.line(AccessLogFormat::Off).is_none());
    }
}
