//! A minimal blocking HTTP/1.1 client for the `roost cluster` commands.
//!
//! The commands talk to one node's internal listener (`server.internal_listen`), which is plain
//! HTTP on a private address, and make a handful of requests each. A blocking request over a
//! `std::net::TcpStream` does that in a screen of code, where a full client would bring a runtime
//! and a TLS stack the binary does not need for it. One request per connection
//! (`Connection: close`); bodies are read by `Content-Length`, chunked, or to end of stream.

use std::io::BufRead;
use std::io::BufReader;
use std::io::Write;
use std::net::TcpStream;
use std::net::ToSocketAddrs;
use std::time::Duration;

/// How long to wait to connect to the admin listener.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request to the admin listener failed before an answer arrived.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("`{0}` is not an http://host:port address of a node's internal listener")]
    BadUrl(String),
    #[error("cannot reach {addr}: {error} (is the node running, and is this its server.internal_listen?)")]
    Connect { addr: String, error: std::io::Error },
    #[error("talking to {addr} failed: {error}")]
    Io { addr: String, error: std::io::Error },
    #[error("{addr} did not answer with HTTP: {why}")]
    Protocol { addr: String, why: String },
}

/// An answer: the status code and the body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The `error.code` and `error.message` of a JSON error answer, else the body as text.
    pub fn error_text(&self) -> String {
        let json: Option<serde_json::Value> = serde_json::from_slice(&self.body).ok();
        match json.as_ref().and_then(|v| v.get("error")) {
            Some(error) => format!(
                "{} ({})",
                error["message"].as_str().unwrap_or("no message"),
                error["code"].as_str().unwrap_or("no code")
            ),
            None => String::from_utf8_lossy(&self.body).trim().to_owned(),
        }
    }
}

/// The admin listener of one node, from a URL such as `http://127.0.0.1:9090`.
#[derive(Clone, Debug)]
pub struct AdminClient {
    /// `host:port`.
    addr: String,
    /// Path prefix without a trailing slash (usually empty).
    base: String,
    /// How long one request may take, or `None` for no limit (`remove` waits for a handover).
    pub timeout: Option<Duration>,
}

impl AdminClient {
    pub fn new(url: &str) -> Result<Self, ClientError> {
        let bad = || ClientError::BadUrl(url.to_owned());
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some(_) => return Err(bad()),
            None => url,
        };
        let (addr, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if addr.is_empty() || !addr.contains(':') {
            return Err(bad());
        }
        Ok(Self {
            addr: addr.to_owned(),
            base: base.to_owned(),
            timeout: Some(Duration::from_secs(30)),
        })
    }

    pub fn get(&self, path: &str) -> Result<Response, ClientError> {
        self.request("GET", path)
    }

    pub fn post(&self, path: &str) -> Result<Response, ClientError> {
        self.request("POST", path)
    }

    fn request(&self, method: &str, path: &str) -> Result<Response, ClientError> {
        let io = |error| ClientError::Io {
            addr: self.addr.clone(),
            error,
        };
        let mut stream = self.connect()?;
        stream.set_read_timeout(self.timeout).map_err(io)?;
        stream.set_write_timeout(Some(CONNECT_TIMEOUT)).map_err(io)?;
        let request = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            self.base, self.addr
        );
        stream.write_all(request.as_bytes()).map_err(io)?;
        read_response(BufReader::new(stream)).map_err(|e| match e {
            Failure::Io(source) => io(source),
            Failure::Protocol(why) => ClientError::Protocol {
                addr: self.addr.clone(),
                why,
            },
        })
    }

    fn connect(&self) -> Result<TcpStream, ClientError> {
        let connect_error = |error| ClientError::Connect {
            addr: self.addr.clone(),
            error,
        };
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "the host name has no address");
        for addr in self.addr.to_socket_addrs().map_err(connect_error)? {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(stream) => return Ok(stream),
                Err(error) => last = error,
            }
        }
        Err(connect_error(last))
    }
}

enum Failure {
    Io(std::io::Error),
    Protocol(String),
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Self {
        Failure::Io(error)
    }
}

/// Status line, headers, then the body by `Content-Length`, chunked encoding, or to the end.
fn read_response(mut reader: impl BufRead) -> Result<Response, Failure> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| line.starts_with("HTTP/1."))
        .ok_or_else(|| Failure::Protocol(format!("bad status line {:?}", line.trim_end())))?;
    let (mut length, mut chunked) = (None, false);
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(Failure::Protocol("the headers end early".into()));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            }
        }
    }
    let mut body = Vec::new();
    match (chunked, length) {
        (true, _) => read_chunked(&mut reader, &mut body)?,
        (false, Some(n)) => {
            body.resize(n, 0);
            reader.read_exact(&mut body)?;
        }
        (false, None) => {
            reader.read_to_end(&mut body)?;
        }
    }
    Ok(Response { status, body })
}

fn read_chunked(reader: &mut impl BufRead, body: &mut Vec<u8>) -> Result<(), Failure> {
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let size = line.trim_end().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size.trim(), 16)
            .map_err(|_| Failure::Protocol(format!("bad chunk size {:?}", line.trim_end())))?;
        if size == 0 {
            return Ok(());
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        line.clear();
        reader.read_line(&mut line)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Response {
        match read_response(text.as_bytes()) {
            Ok(response) => response,
            Err(Failure::Io(e)) => panic!("io: {e}"),
            Err(Failure::Protocol(why)) => panic!("protocol: {why}"),
        }
    }

    #[test]
    fn reads_length_chunked_and_close_delimited_bodies() {
        let r = parse("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}trailing");
        assert_eq!((r.status, r.body.as_slice()), (200, b"{}".as_slice()));
        let r =
            parse("HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n");
        assert_eq!((r.status, r.body.as_slice()), (202, b"abcde".as_slice()));
        let r = parse("HTTP/1.0 404 Not Found\r\n\r\nnope");
        assert_eq!((r.status, r.body.as_slice()), (404, b"nope".as_slice()));
        assert!(read_response("SSH-2.0\r\n".as_bytes()).is_err());
    }

    #[test]
    fn error_text_reads_api_errors() {
        let body = br#"{"error":{"code":"cluster_disabled","message":"not a cluster","retryable":false}}"#;
        let r = Response {
            status: 404,
            body: body.to_vec(),
        };
        assert_eq!(r.error_text(), "not a cluster (cluster_disabled)");
    }

    #[test]
    fn urls() {
        let c = AdminClient::new("http://127.0.0.1:9090/").expect("url");
        assert_eq!((c.addr.as_str(), c.base.as_str()), ("127.0.0.1:9090", ""));
        let c = AdminClient::new("node1:9090/roost").expect("url");
        assert_eq!((c.addr.as_str(), c.base.as_str()), ("node1:9090", "/roost"));
        assert!(AdminClient::new("https://node1:9090").is_err());
        assert!(AdminClient::new("http://node1").is_err());
    }
}
