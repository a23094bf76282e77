//! Plain HTTP/1.1 for what Passerelle fetches on its own behalf: CRLs (GET) and OCSP
//! answers (POST). Both carry their own signature, so no TLS: straight to the host, or
//! in absolute form to the `[egress]` forward proxy (no tunnel: proxies that only
//! tunnel to 443 still serve it). One exchange per connection, the answer bounded by
//! `max`; the caller bounds the time.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use passerelle_config::EgressProxy;
use tokio::net::TcpStream;

use crate::sanitize::shown;

/// One exchange.
#[derive(Debug, Clone)]
pub struct Fetch<'a> {
    pub url: &'a url::Url,
    pub egress: Option<&'a EgressProxy>,
    /// A POST's content type and body; `None`: a GET.
    pub post: Option<(&'static str, Bytes)>,
    pub accept: &'static str,
    /// The largest answer body accepted.
    pub max: u64,
    /// The configuration section, for messages (`trust.crl_download`).
    pub setting: &'static str,
}

/// Why no answer came.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: cannot connect{via}: {reason}")]
    Connect {
        url: String,
        via: String,
        reason: String,
    },
    #[error("{url}: HTTP {status}{via}{hint}")]
    Status {
        url: String,
        via: String,
        status: u16,
        hint: String,
    },
    #[error("{url}: the answer is larger than {max} bytes (see [{setting}])")]
    TooLarge {
        url: String,
        setting: &'static str,
        max: u64,
    },
    #[error("{url}: HTTP exchange failed: {reason}")]
    Http { url: String, reason: String },
}

/// Sends the request and reads a `200` answer's body.
pub async fn fetch(f: Fetch<'_>) -> Result<Bytes, FetchError> {
    let url = f.url;
    let text = url.to_string();
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(80);
    let authority = match url.port() {
        Some(p) => format!("{}:{p}", host_header(host)),
        None => host_header(host),
    };
    let (connect, target, via) = match f.egress {
        Some(p) => (
            (p.host.clone(), p.port),
            {
                let mut u = url.clone();
                u.set_fragment(None);
                u.to_string()
            },
            format!(" through the egress proxy {}", p.address()),
        ),
        None => (
            (
                host.trim_matches(|c| c == '[' || c == ']').to_string(),
                port,
            ),
            match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_string(),
            },
            String::new(),
        ),
    };
    let stream = TcpStream::connect((connect.0.as_str(), connect.1))
        .await
        .map_err(|e| FetchError::Connect {
            url: text.clone(),
            via: via.clone(),
            reason: e.to_string(),
        })?;
    let http = |e: hyper::Error| FetchError::Http {
        url: text.clone(),
        reason: e.to_string(),
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let conn = AbortOnDrop(tokio::spawn(conn));
    let (method, body) = match &f.post {
        Some((_, body)) => (http::Method::POST, body.clone()),
        None => (http::Method::GET, Bytes::new()),
    };
    let mut request = http::Request::builder()
        .method(method)
        .uri(target)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, f.accept)
        .header(
            http::header::USER_AGENT,
            concat!("passerelle/", env!("CARGO_PKG_VERSION")),
        )
        .header(http::header::CONNECTION, "close");
    if let Some((content_type, _)) = &f.post {
        request = request.header(http::header::CONTENT_TYPE, *content_type);
    }
    if let Some(credentials) = f.egress.and_then(|p| p.basic_credentials()) {
        request = request.header(
            http::header::PROXY_AUTHORIZATION,
            format!("Basic {credentials}"),
        );
    }
    let request = request
        .body(Full::new(body))
        .map_err(|e| FetchError::Http {
            url: text.clone(),
            reason: e.to_string(),
        })?;
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status().as_u16();
    if status != 200 {
        let location = response
            .headers()
            .get(http::header::LOCATION)
            .map(|v| shown(&String::from_utf8_lossy(v.as_bytes()), 200))
            .unwrap_or_default();
        return Err(FetchError::Status {
            url: text,
            via,
            status,
            hint: match status {
                301 | 302 | 303 | 307 | 308 => format!(
                    ": redirected to {location:?}, not followed; configure that URL in [{}] if it is the CA's",
                    f.setting
                ),
                401 | 407 if f.egress.is_some() => {
                    ": the forward proxy wants credentials ([egress] username and password_file)"
                        .into()
                }
                403 if f.egress.is_some() => {
                    ": the forward proxy's rules forbid this URL (ask its administrators)".into()
                }
                404 => format!(
                    ": nothing at this URL (check [{}] and the certificate's URL)",
                    f.setting
                ),
                _ => String::new(),
            },
        });
    }
    let too_large = || FetchError::TooLarge {
        url: text.clone(),
        setting: f.setting,
        max: f.max,
    };
    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > f.max) {
        return Err(too_large());
    }
    let limit = usize::try_from(f.max).unwrap_or(usize::MAX);
    let body = Limited::new(response.into_body(), limit)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                FetchError::Http {
                    url: text.clone(),
                    reason: e.to_string(),
                }
            }
        })?
        .to_bytes();
    drop(conn);
    Ok(body)
}

/// An IPv6 literal in brackets, as `Host` wants it.
fn host_header(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// Ends the connection task when the exchange ends, timed out or not.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
