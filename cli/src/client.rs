//! The HTTP client of `/api/v1`: base URL, bearer token with automatic renewal, and error bodies
//! turned into typed errors.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use chrono::Utc;
use clreg_types::{API_PREFIX, ErrorBody, ErrorCode, TokenRequest, TokenResponse};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{Credentials, normalize_server};
use crate::error::{ApiError, LocalError};

/// A token with less than this left is renewed before use.
const RENEW_BEFORE_SECS: i64 = 60;

/// Everything but RFC 3986 unreserved characters is escaped in a path segment (so `/` too).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Escapes one path segment (a name, a file path with its `/`s).
pub fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

pub struct Client {
    http: reqwest::Client,
    server: String,
    config_dir: PathBuf,
    creds: tokio::sync::Mutex<Option<Credentials>>,
}

/// The reqwest client every command uses.
pub fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("clreg/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(Duration::from_secs(300))
        .build()
        .context("building the HTTP client")
}

impl Client {
    /// A client for `server`; stored credentials are used only if they are for that server, so a
    /// token never travels to another host.
    pub fn new(server: &str, creds: Option<Credentials>, config_dir: PathBuf) -> Result<Self> {
        let server = normalize_server(server);
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(LocalError::usage(format!(
                "server URL `{server}` must start with http:// or https://"
            ))
            .into());
        }
        let creds = creds.filter(|c| normalize_server(&c.server) == server);
        Ok(Client {
            http: http_client()?,
            server,
            config_dir,
            creds: tokio::sync::Mutex::new(creds),
        })
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    /// `{server}/api/v1{path}`; `path` starts with `/` and has its segments escaped already.
    pub fn url(&self, path: &str) -> String {
        format!("{}{API_PREFIX}{path}", self.server)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path))
    }

    /// The logged-in user, when there is a login for this server.
    pub async fn user(&self) -> Option<String> {
        self.creds.lock().await.as_ref().map(|c| c.user.clone())
    }

    /// A bearer token with at least a minute left, renewed with the stored API key if needed.
    async fn bearer(&self) -> Result<String> {
        let mut guard = self.creds.lock().await;
        let creds = guard.as_mut().ok_or_else(|| self.not_logged_in())?;
        if (creds.expires_at - Utc::now()).num_seconds() < RENEW_BEFORE_SECS {
            self.renew(creds).await?;
        }
        Ok(creds.token.clone())
    }

    /// Renews the token after the server refused `stale`, unless another task already did.
    async fn renew_after(&self, stale: &str) -> Result<String> {
        let mut guard = self.creds.lock().await;
        let creds = guard.as_mut().ok_or_else(|| self.not_logged_in())?;
        if creds.token == stale {
            self.renew(creds).await?;
        }
        Ok(creds.token.clone())
    }

    async fn renew(&self, creds: &mut Credentials) -> Result<()> {
        let answer = exchange(&self.http, &self.server, &creds.api_key)
            .await
            .context(
                "renewing the login token; if the API key was revoked, run `clreg login` again",
            )?;
        creds.token = answer.token;
        creds.expires_at = answer.expires_at;
        creds.user = answer.user;
        if let Err(e) = creds.save(&self.config_dir) {
            eprintln!("warning: could not store the renewed token: {e:#}");
        }
        Ok(())
    }

    fn not_logged_in(&self) -> anyhow::Error {
        LocalError::not_logged_in(format!(
            "not logged in to {0}; run `clreg login --server {0} --api-key KEY`",
            self.server
        ))
        .into()
    }

    /// Sends with the bearer token; a refused token (`invalid_token`) is renewed and the request
    /// sent again, once; a busy server (503) is asked again with backoff, a few times. The answer
    /// is returned whatever its status.
    pub async fn send_raw(&self, req: RequestBuilder) -> Result<Response> {
        let mut attempt = 0u32;
        let mut req = req;
        loop {
            let again = req.try_clone();
            let resp = self.send_once(req).await?;
            match again {
                Some(next)
                    if resp.status() == StatusCode::SERVICE_UNAVAILABLE
                        && attempt < BUSY_RETRIES =>
                {
                    let wait = retry_after(&resp).unwrap_or(Duration::from_millis(200 << attempt));
                    attempt += 1;
                    tokio::time::sleep(wait.min(Duration::from_secs(10))).await;
                    req = next;
                }
                _ => return Ok(resp),
            }
        }
    }

    async fn send_once(&self, req: RequestBuilder) -> Result<Response> {
        let again = req.try_clone();
        let token = self.bearer().await?;
        let resp = req.bearer_auth(&token).send().await.map_err(network)?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let err = api_error(resp).await;
        match again {
            Some(again) if err.is(ErrorCode::InvalidToken) => {
                let token = self.renew_after(&token).await?;
                again.bearer_auth(token).send().await.map_err(network)
            }
            _ => Err(err.into()),
        }
    }

    /// Like [`Client::send_raw`], but any non-2xx answer becomes an [`ApiError`].
    pub async fn send(&self, req: RequestBuilder) -> Result<Response> {
        check(self.send_raw(req).await?).await
    }

    /// GET `{server}{path}` (outside `/api/v1`, e.g. `/.well-known/…`).
    pub async fn get_at_root<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = format!("{}{path}", self.server);
        let resp = self.send(self.http.request(Method::GET, url)).await?;
        json_body(resp).await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self.send(self.request(Method::GET, path)).await?;
        json_body(resp).await
    }

    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let resp = self
            .send(self.request(Method::POST, path).json(body))
            .await?;
        json_body(resp).await
    }

    pub async fn delete(&self, path: &str) -> Result<()> {
        self.send(self.request(Method::DELETE, path)).await?;
        Ok(())
    }
}

/// `POST /auth/token`: exchanges an API key for a token (no bearer needed).
pub async fn exchange(
    http: &reqwest::Client,
    server: &str,
    api_key: &str,
) -> Result<TokenResponse> {
    let url = format!("{}{API_PREFIX}/auth/token", normalize_server(server));
    let req = TokenRequest {
        api_key: api_key.to_string(),
    };
    let resp = http.post(url).json(&req).send().await.map_err(network)?;
    json_body(check(resp).await?).await
}

fn network(e: reqwest::Error) -> anyhow::Error {
    let what = if e.is_connect() {
        "could not connect to the server"
    } else if e.is_timeout() {
        "the server did not answer in time"
    } else {
        "the request to the server failed"
    };
    anyhow::Error::new(e).context(what)
}

/// Ok for 2xx; otherwise the body's `{code, message}` as an [`ApiError`].
pub async fn check(resp: Response) -> Result<Response> {
    if resp.status().is_success() {
        Ok(resp)
    } else {
        Err(api_error(resp).await.into())
    }
}

pub async fn api_error(resp: Response) -> ApiError {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    error_from_body(status, &text)
}

/// The server's error body, or a readable stand-in when the body is not one.
pub fn error_from_body(status: StatusCode, text: &str) -> ApiError {
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(body) => ApiError {
            status: status.as_u16(),
            code: body.code,
            message: body.message,
        },
        Err(_) => {
            let code = match status.as_u16() {
                401 => "unauthenticated",
                403 => "forbidden",
                404 => "not_found",
                409 => "conflict",
                413 => "too_large",
                s if s >= 500 => "internal",
                _ => "http_error",
            };
            let mut message = format!("the server answered {status}");
            let text = text.trim();
            if !text.is_empty() {
                let short: String = text.chars().take(200).collect();
                message.push_str(&format!(": {short}"));
            }
            ApiError {
                status: status.as_u16(),
                code: code.to_string(),
                message,
            }
        }
    }
}

pub async fn json_body<T: DeserializeOwned>(resp: Response) -> Result<T> {
    let url = resp.url().path().to_string();
    let bytes = resp.bytes().await.map_err(network)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        LocalError::protocol(format!(
            "the server's answer to {url} is not what clreg expects: {e}"
        ))
        .into()
    })
}

/// Times a busy server (503) is asked again before its answer is returned.
const BUSY_RETRIES: u32 = 5;

/// The `Retry-After` of an answer, in seconds (the form the server sends).
fn retry_after(resp: &Response) -> Option<Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_escaped() {
        assert_eq!(seg("org-a.v1_2"), "org-a.v1_2");
        assert_eq!(
            seg("sub dir/model.safetensors"),
            "sub%20dir%2Fmodel.safetensors"
        );
    }

    #[test]
    fn error_bodies_become_typed() {
        let e = error_from_body(
            StatusCode::FORBIDDEN,
            r#"{"code":"policy_forbids","message":"no replay in semi"}"#,
        );
        assert_eq!((e.status, e.code.as_str()), (403, "policy_forbids"));
        let e = error_from_body(StatusCode::BAD_GATEWAY, "<html>bad gateway</html>");
        assert_eq!(e.code, "internal");
        assert!(e.message.contains("502"));
    }

    #[test]
    fn credentials_for_other_servers_are_ignored() -> Result<()> {
        let creds = Credentials {
            server: "http://a:1/".into(),
            user: "u".into(),
            api_key: "k".into(),
            token: "t".into(),
            expires_at: Utc::now(),
        };
        let dir = PathBuf::from("/nonexistent");
        let same = Client::new("http://a:1", Some(creds.clone()), dir.clone())?;
        assert!(same.creds.try_lock().map(|c| c.is_some()).unwrap_or(false));
        let other = Client::new("http://b:1", Some(creds), dir.clone())?;
        assert!(other.creds.try_lock().map(|c| c.is_none()).unwrap_or(false));
        assert!(Client::new("ftp://x", None, dir).is_err());
        Ok(())
    }
}
