//! `[limits]` and the listener's connection limits and timeouts, into [`Limits`].

use super::Validator;
use crate::file::ConfigFile;
use crate::model::Limits;

impl Validator {
    pub(super) fn limits(&mut self, raw: &ConfigFile) -> Option<Limits> {
        const FLOOR: u64 = 64 * 1024;
        let l = &raw.limits;
        let listener = &raw.listener;
        let header_read_timeout = self.duration(
            "listener.header_read_timeout",
            &listener.header_read_timeout,
        );
        let idle_timeout = self.duration("listener.idle_timeout", &listener.idle_timeout);
        let http2_keep_alive_interval = self.duration(
            "listener.http2_keep_alive_interval",
            &listener.http2_keep_alive_interval,
        );
        let http2_keep_alive_timeout = self.duration(
            "listener.http2_keep_alive_timeout",
            &listener.http2_keep_alive_timeout,
        );
        let body_read_timeout = self.duration("limits.body_read_timeout", &l.body_read_timeout);
        if listener.max_concurrent_requests == 0 {
            self.error("listener.max_concurrent_requests", "must be at least 1");
        }
        if listener.max_connections == Some(0) {
            self.error(
                "listener.max_connections",
                "must be at least 1 (leave it out to derive it from the open-files limit)",
            );
        }
        if l.upstream_concurrency == 0 {
            self.error("limits.upstream_concurrency", "must be at least 1");
        }
        if l.max_body_bytes < FLOOR {
            self.error(
                "limits.max_body_bytes",
                format!(
                    "{} bytes is too small for a SOAP request: at least {FLOOR}",
                    l.max_body_bytes
                ),
            );
            return None;
        }
        let inflight = l
            .max_inflight_body_bytes
            .unwrap_or_else(|| l.max_body_bytes.saturating_mul(4));
        if inflight < l.max_body_bytes {
            self.error(
                "limits.max_inflight_body_bytes",
                format!(
                    "{inflight} bytes is less than limits.max_body_bytes ({}): a body of the largest size allowed could never be read",
                    l.max_body_bytes
                ),
            );
            return None;
        }
        match (usize::try_from(l.max_body_bytes), usize::try_from(inflight)) {
            (Ok(max_body_bytes), Ok(max_inflight_body_bytes)) => Some(Limits {
                max_body_bytes,
                upstream_concurrency: l.upstream_concurrency.max(1),
                header_read_timeout: header_read_timeout?,
                max_concurrent_requests: listener.max_concurrent_requests.max(1),
                max_connections: listener.max_connections.map(|n| n.max(1)),
                idle_timeout: idle_timeout?,
                http2_keep_alive_interval: http2_keep_alive_interval?,
                http2_keep_alive_timeout: http2_keep_alive_timeout?,
                body_read_timeout: body_read_timeout?,
                max_inflight_body_bytes,
            }),
            (Err(_), _) => {
                self.error(
                    "limits.max_body_bytes",
                    "larger than this machine can address",
                );
                None
            }
            (_, Err(_)) => {
                self.error(
                    "limits.max_inflight_body_bytes",
                    "larger than this machine can address",
                );
                None
            }
        }
    }
}
