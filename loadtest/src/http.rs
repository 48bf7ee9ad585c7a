//! HttpClient: a minimal HTTP/1.1 JSON client over one kept-alive TCP connection.
//!
//! Enough for provisioning, history paging and `/metrics` scrapes against a Roost node: plain
//! HTTP, `Content-Length` or chunked bodies, one request at a time per client. A stale kept-alive
//! connection (closed by the server while idle) is replaced and the request sent once more.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::io::AsyncBufReadExt;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::io::BufStream;
use tokio::net::TcpStream;

use crate::target::Target;

/// Largest response body accepted (history pages are far smaller).
const MAX_BODY: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{method} {path}: {source}")]
    Io {
        method: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{method} {path}: no answer within {timeout:?}")]
    Timeout {
        method: String,
        path: String,
        timeout: Duration,
    },
    #[error("{method} {path}: malformed response: {detail}")]
    Malformed {
        method: String,
        path: String,
        detail: String,
    },
    #[error("{method} {path}: HTTP {status} {code}: {message}")]
    Status {
        method: String,
        path: String,
        status: u16,
        code: String,
        message: String,
    },
}

impl HttpError {
    /// The protocol error code of an error answer (`conflict`, `rate_limited`, ...).
    pub fn code(&self) -> Option<&str> {
        match self {
            HttpError::Status { code, .. } => Some(code),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
}

#[derive(Debug)]
pub struct HttpClient {
    target: Target,
    conn: Option<BufStream<TcpStream>>,
    timeout: Duration,
}

impl HttpClient {
    pub fn new(target: Target) -> HttpClient {
        HttpClient {
            target,
            conn: None,
            timeout: Duration::from_secs(60),
        }
    }

    /// Send a request and decode a 2xx JSON answer; other statuses become `HttpError::Status`.
    pub async fn json<T: DeserializeOwned>(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> Result<T, HttpError> {
        let payload = body.map(|b| b.to_string().into_bytes());
        let (status, bytes) = self.raw(method, path, token, payload.as_deref()).await?;
        let malformed = |detail: String| HttpError::Malformed {
            method: method.to_owned(),
            path: path.to_owned(),
            detail,
        };
        if !(200..300).contains(&status) {
            let (code, message) = match serde_json::from_slice::<ErrorEnvelope>(&bytes) {
                Ok(e) => (e.error.code, e.error.message),
                Err(_) => (
                    "-".to_owned(),
                    String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                ),
            };
            return Err(HttpError::Status {
                method: method.to_owned(),
                path: path.to_owned(),
                status,
                code,
                message,
            });
        }
        let bytes = if bytes.is_empty() { b"null".to_vec() } else { bytes };
        serde_json::from_slice(&bytes).map_err(|e| malformed(e.to_string()))
    }

    /// Send a request; answer the status and the body, whatever the status.
    pub async fn raw(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), HttpError> {
        let timeout = self.timeout;
        let attempt = async {
            let reused = self.conn.is_some();
            match self.exchange(method, path, token, body).await {
                Err(_) if reused => {
                    self.conn = None;
                    self.exchange(method, path, token, body).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => {
                self.conn = None;
                Err(HttpError::Timeout {
                    method: method.to_owned(),
                    path: path.to_owned(),
                    timeout,
                })
            }
        }
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), HttpError> {
        let io = |source: std::io::Error| HttpError::Io {
            method: method.to_owned(),
            path: path.to_owned(),
            source,
        };
        let malformed = |detail: &str| HttpError::Malformed {
            method: method.to_owned(),
            path: path.to_owned(),
            detail: detail.to_owned(),
        };
        if self.conn.is_none() {
            let stream = TcpStream::connect(self.target.addr).await.map_err(io)?;
            stream.set_nodelay(true).map_err(io)?;
            self.conn = Some(BufStream::new(stream));
        }
        let conn = self.conn.as_mut().ok_or_else(|| malformed("no connection"))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nUser-Agent: roost-loadtest/{}\r\n",
            self.target.authority,
            env!("CARGO_PKG_VERSION")
        );
        if let Some(token) = token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        let body = body.unwrap_or_default();
        if !body.is_empty() || method != "GET" {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        conn.write_all(head.as_bytes()).await.map_err(io)?;
        conn.write_all(body).await.map_err(io)?;
        conn.flush().await.map_err(io)?;

        let mut line = String::new();
        if conn.read_line(&mut line).await.map_err(io)? == 0 {
            return Err(io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| malformed("no status line"))?;
        let mut length = None;
        let mut chunked = false;
        let mut close = false;
        loop {
            line.clear();
            if conn.read_line(&mut line).await.map_err(io)? == 0 {
                return Err(malformed("headers cut short"));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        let body = if chunked {
            read_chunked(conn).await.map_err(io)?
        } else if let Some(n) = length {
            if n > MAX_BODY {
                return Err(malformed("body too large"));
            }
            let mut buf = vec![0; n];
            conn.read_exact(&mut buf).await.map_err(io)?;
            buf
        } else {
            close = true;
            let mut buf = Vec::new();
            conn.take(MAX_BODY as u64).read_to_end(&mut buf).await.map_err(io)?;
            buf
        };
        if close {
            self.conn = None;
        }
        Ok((status, body))
    }
}

async fn read_chunked(conn: &mut BufStream<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        conn.read_line(&mut line).await?;
        let size_text = line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size"))?;
        if size == 0 {
            // Trailers end with an empty line.
            loop {
                line.clear();
                if conn.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        conn.read_exact(&mut body[start..]).await?;
        line.clear();
        conn.read_line(&mut line).await?;
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    /// A one-connection server that answers each request with the next canned response.
    async fn serve(responses: Vec<&'static str>) -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let mut stream = BufStream::new(stream);
            for response in responses {
                let mut line = String::new();
                let mut length = 0;
                loop {
                    line.clear();
                    stream.read_line(&mut line).await.expect("read");
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().expect("length");
                    }
                    if line.trim().is_empty() {
                        break;
                    }
                }
                let mut body = vec![0; length];
                stream.read_exact(&mut body).await.expect("body");
                stream.write_all(response.as_bytes()).await.expect("write");
                stream.flush().await.expect("flush");
            }
        });
        Target::resolve(&format!("http://{addr}"), false).expect("target")
    }

    #[tokio::test]
    async fn lengths_chunks_and_errors_are_read_on_one_connection() {
        let target = serve(vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{\"a\":1}",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":2}\r\n0\r\n\r\n",
            "HTTP/1.1 409 Conflict\r\nContent-Length: 65\r\n\r\n{\"error\":{\"code\":\"conflict\",\"message\":\"taken\",\"retryable\":false}}",
        ])
        .await;
        let mut client = HttpClient::new(target);
        let a: serde_json::Value = client.json("GET", "/x", None, None).await.expect("first");
        assert_eq!(a["a"], 1);
        let body = serde_json::json!({"k": "v"});
        let b: serde_json::Value = client.json("POST", "/y", Some("t"), Some(&body)).await.expect("second");
        assert_eq!(b["a"], 2);
        let err = client
            .json::<serde_json::Value>("GET", "/z", None, None)
            .await
            .expect_err("409");
        assert_eq!(err.code(), Some("conflict"));
    }
}
