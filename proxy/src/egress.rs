//! The way out of the hospital's network: an HTTP `CONNECT` tunnel through the
//! establishment's forward proxy (`[egress]`). Only the TCP stream is tunnelled; the
//! mutual TLS with the national service runs end to end inside it, so the forward proxy
//! sees neither the certificates' keys nor the traffic. Every failure here happens
//! before a byte of the request left: the request was not sent.

use std::time::Duration;

use passerelle_config::EgressProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest CONNECT answer head read: a forward proxy's is a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;

/// Why the tunnel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("egress proxy {proxy} unreachable: {reason}")]
    Unreachable { proxy: String, reason: String },
    #[error("egress proxy {proxy} refused the tunnel to {target}: HTTP {status} {reason}{hint}")]
    Refused {
        proxy: String,
        target: String,
        status: u16,
        reason: String,
        hint: &'static str,
    },
    #[error("egress proxy {proxy} gave no tunnel to {target} within {seconds} s")]
    Timeout {
        proxy: String,
        target: String,
        seconds: u64,
    },
    #[error("egress proxy {proxy}: {reason}")]
    Protocol { proxy: String, reason: String },
}

/// Opens a TCP connection to `host:port` through `proxy`'s CONNECT tunnel, all within
/// `timeout` (the pool's TCP connect timeout).
pub async fn tunnel(
    proxy: &EgressProxy,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, EgressError> {
    let target = authority(host, port);
    let name = proxy.address();
    match tokio::time::timeout(timeout, open(proxy, &target)).await {
        Ok(result) => result,
        Err(_) => Err(EgressError::Timeout {
            proxy: name,
            target,
            seconds: timeout.as_secs().max(1),
        }),
    }
}

/// `host:port`, IPv6 literals in brackets.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

async fn open(proxy: &EgressProxy, target: &str) -> Result<TcpStream, EgressError> {
    let name = proxy.address();
    let mut stream = TcpStream::connect((proxy.host.as_str(), proxy.port))
        .await
        .map_err(|e| EgressError::Unreachable {
            proxy: name.clone(),
            reason: e.to_string(),
        })?;
    let _ = stream.set_nodelay(true);
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(credentials) = proxy.basic_credentials() {
        request.push_str(&format!("Proxy-Authorization: Basic {credentials}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| EgressError::Unreachable {
            proxy: name.clone(),
            reason: format!("writing CONNECT: {e}"),
        })?;
    let (head, body) = read_head(&mut stream, &name).await?;
    let (status, reason) = status_of(&head, &name)?;
    if status / 100 == 2 && body > 0 {
        // The tunnel carries the TLS handshake, which we start: nothing may come first.
        return Err(EgressError::Protocol {
            proxy: name,
            reason: "sent data after its CONNECT answer, before the TLS handshake".into(),
        });
    }
    if status / 100 != 2 {
        return Err(EgressError::Refused {
            proxy: name,
            target: target.to_string(),
            status,
            reason,
            hint: match status {
                // 407 is the standard answer; some proxies (tinyproxy) say 401.
                401 | 407 if proxy.has_credentials() => {
                    ": the proxy does not accept [egress] username / password_file"
                }
                401 | 407 => {
                    ": the proxy wants credentials: set [egress] username and password_file"
                }
                403 => {
                    ": the proxy's rules forbid this destination or port (ask its administrators to allow it)"
                }
                _ => "",
            },
        });
    }
    Ok(stream)
}

/// Reads up to the end of the answer's head: the head, and how many bytes of what
/// follows (a refusal's body) came with it.
async fn read_head(stream: &mut TcpStream, name: &str) -> Result<(Vec<u8>, usize), EgressError> {
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| EgressError::Unreachable {
                proxy: name.to_string(),
                reason: format!("reading the CONNECT answer: {e}"),
            })?;
        if n == 0 {
            return Err(EgressError::Protocol {
                proxy: name.to_string(),
                reason: "closed the connection without answering CONNECT".into(),
            });
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let body = head.len() - (end + 4);
            head.truncate(end + 4);
            return Ok((head, body));
        }
        if head.len() > MAX_HEAD {
            return Err(EgressError::Protocol {
                proxy: name.to_string(),
                reason: format!("CONNECT answer head longer than {MAX_HEAD} bytes"),
            });
        }
    }
}

/// The status code and reason phrase of an HTTP/1.x answer head.
fn status_of(head: &[u8], name: &str) -> Result<(u16, String), EgressError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let bad = |reason: String| EgressError::Protocol {
        proxy: name.to_string(),
        reason,
    };
    match response.parse(head) {
        Ok(httparse::Status::Complete(_)) => Ok((
            response.code.unwrap_or(0),
            crate::sanitize::log_safe(response.reason.unwrap_or("")).into_owned(),
        )),
        Ok(httparse::Status::Partial) => Err(bad("incomplete CONNECT answer".into())),
        Err(e) => Err(bad(format!("unreadable CONNECT answer: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_read_and_reasons_made_safe() {
        let (code, reason) =
            status_of(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", "p").expect("ok");
        assert_eq!(
            (code, reason.as_str()),
            (407, "Proxy Authentication Required")
        );
        let (code, _) = status_of(b"HTTP/1.0 200 Connection established\r\n\r\n", "p").expect("ok");
        assert_eq!(code, 200);
        assert!(status_of(b"SSH-2.0-OpenSSH\r\n\r\n", "p").is_err());
        assert_eq!(authority("::1", 443), "[::1]:443");
        assert_eq!(authority("dmp.example", 443), "dmp.example:443");
    }
}
