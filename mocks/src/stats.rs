//! Request statistics served on `/stats`: counts per operation and outcome, counts per
//! client certificate subject, and the most recent requests with the client seen.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

/// How many recent requests `/stats` keeps.
const RECENT: usize = 1000;
/// How many raw request bodies are kept for tests to inspect (not served on `/stats`).
const BODIES: usize = 8;

/// A request body as received, with its Content-Type.
#[derive(Debug, Clone)]
pub struct ReceivedBody {
    pub operation: String,
    pub content_type: String,
    pub body: bytes::Bytes,
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    pub operation: String,
    pub outcome: String,
    /// Subject DN (RFC 2253) of the TLS client certificate.
    pub client_subject: String,
    /// Serial of the TLS client certificate (hex).
    pub client_serial: String,
}

#[derive(Debug, Default, Serialize)]
struct Inner {
    /// operation -> outcome -> count
    operations: BTreeMap<String, BTreeMap<String, u64>>,
    /// client subject DN -> count
    clients: BTreeMap<String, u64>,
    recent: VecDeque<RequestRecord>,
    /// TLS handshakes completed.
    handshakes: u64,
}

#[derive(Debug, Default)]
pub struct Stats {
    inner: Mutex<Inner>,
    bodies: Mutex<VecDeque<ReceivedBody>>,
}

impl Stats {
    pub fn record(&self, record: RequestRecord) {
        if let Ok(mut s) = self.inner.lock() {
            *s.operations
                .entry(record.operation.clone())
                .or_default()
                .entry(record.outcome.clone())
                .or_default() += 1;
            *s.clients.entry(record.client_subject.clone()).or_default() += 1;
            if s.recent.len() == RECENT {
                s.recent.pop_front();
            }
            s.recent.push_back(record);
        }
    }

    /// Keeps one of the last few request bodies (shared bytes, not copied).
    pub fn record_body(&self, body: ReceivedBody) {
        if let Ok(mut b) = self.bodies.lock() {
            if b.len() == BODIES {
                b.pop_front();
            }
            b.push_back(body);
        }
    }

    /// The last few request bodies, oldest first: what a client really sent.
    pub fn recent_bodies(&self) -> Vec<ReceivedBody> {
        self.bodies
            .lock()
            .map(|b| b.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn handshake(&self) {
        if let Ok(mut s) = self.inner.lock() {
            s.handshakes += 1;
        }
    }

    /// Count of `operation` with `outcome`.
    pub fn count(&self, operation: &str, outcome: &str) -> u64 {
        self.inner
            .lock()
            .ok()
            .and_then(|s| {
                s.operations
                    .get(operation)
                    .and_then(|o| o.get(outcome))
                    .copied()
            })
            .unwrap_or(0)
    }

    pub fn to_json(&self) -> serde_json::Value {
        self.inner
            .lock()
            .ok()
            .and_then(|s| serde_json::to_value(&*s).ok())
            .unwrap_or(serde_json::Value::Null)
    }
}
