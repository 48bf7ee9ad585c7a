//! Target: a Roost node to load, parsed from `http://host:port`, and the loopback guard.
//!
//! Load may only go to loopback addresses (127.0.0.0/8, ::1) unless the operator passes
//! `--allow-remote`: a misplaced URL must not turn a developer machine into a traffic source
//! against someone else's server. A host name counts as loopback only if every address it
//! resolves to is loopback.

use std::net::IpAddr;
use std::net::SocketAddr;
use std::net::ToSocketAddrs;

/// Why a target URL was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("`{url}` is not a URL of the form http://HOST:PORT")]
    Malformed { url: String },
    #[error("`{url}`: only http:// targets are supported (TLS is not implemented yet; use a loopback listener)")]
    UnsupportedScheme { url: String },
    #[error("cannot resolve `{host}`: {reason}")]
    Unresolvable { host: String, reason: String },
    #[error(
        "refusing to load `{url}`: {addr} is not a loopback address (127.0.0.0/8 or ::1); \
         pass --allow-remote to load a deployment you operate"
    )]
    Remote { url: String, addr: IpAddr },
}

/// One node: where to send REST requests and open WebSockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as given (without a trailing slash), e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// The `Host` header value (`host:port`).
    pub authority: String,
    /// Where to connect.
    pub addr: SocketAddr,
}

impl Target {
    /// Parse `http://host[:port][/]`, resolve it, and apply the loopback guard.
    pub fn resolve(url: &str, allow_remote: bool) -> Result<Target, TargetError> {
        let (host, port) = split_url(url)?;
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => (host.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| TargetError::Unresolvable {
                    host: host.clone(),
                    reason: e.to_string(),
                })?
                .collect(),
        };
        check_addrs(url, &addrs, allow_remote)?;
        let addr = *addrs.first().ok_or_else(|| TargetError::Unresolvable {
            host: host.clone(),
            reason: "no addresses".into(),
        })?;
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Target {
            url: url.trim_end_matches('/').to_owned(),
            authority,
            addr,
        })
    }

    /// The WebSocket URL of this node.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.authority)
    }
}

/// `http://host:port/` -> (host without brackets, port). The port defaults to 80.
fn split_url(url: &str) -> Result<(String, u16), TargetError> {
    let malformed = || TargetError::Malformed { url: url.to_owned() };
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(malformed());
    };
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(TargetError::UnsupportedScheme { url: url.to_owned() });
    }
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || authority.contains('@') {
        return Err(malformed());
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or_else(malformed)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| malformed())?,
            None if after.is_empty() => 80,
            None => return Err(malformed()),
        };
        (host.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), port.parse().map_err(|_| malformed())?),
            None => (authority.to_owned(), 80),
        }
    };
    if host.is_empty() {
        return Err(malformed());
    }
    Ok((host, port))
}

/// Every address must be loopback unless remote targets are allowed.
pub fn check_addrs(url: &str, addrs: &[SocketAddr], allow_remote: bool) -> Result<(), TargetError> {
    if allow_remote {
        return Ok(());
    }
    match addrs.iter().find(|a| !is_loopback(a.ip())) {
        Some(remote) => Err(TargetError::Remote {
            url: url.to_owned(),
            addr: remote.ip(),
        }),
        None => Ok(()),
    }
}

/// 127.0.0.0/8, ::1, and IPv4-mapped loopback (::ffff:127.x.y.z).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_are_accepted() {
        let t = Target::resolve("http://127.0.0.1:8080", false).expect("loopback");
        assert_eq!(t.addr, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(t.ws_url(), "ws://127.0.0.1:8080/v1/ws");
        let t = Target::resolve("http://127.3.2.1:9/", false).expect("all of 127/8");
        assert_eq!(t.url, "http://127.3.2.1:9");
        let t = Target::resolve("http://[::1]:8080", false).expect("v6 loopback");
        assert_eq!(t.authority, "[::1]:8080");
    }

    #[test]
    fn remote_targets_are_refused_without_the_flag() {
        for url in [
            "http://10.0.0.1:8080",
            "http://192.168.1.5:80",
            "http://8.8.8.8:80",
            "http://[2001:db8::1]:80",
        ] {
            let err = Target::resolve(url, false).expect_err(url);
            assert!(matches!(err, TargetError::Remote { .. }), "{url}: {err}");
            assert!(err.to_string().contains("--allow-remote"));
        }
        assert!(Target::resolve("http://10.0.0.1:8080", true).is_ok());
    }

    #[test]
    fn a_name_is_loopback_only_if_every_address_is() {
        let mixed: Vec<SocketAddr> = vec![
            "127.0.0.1:80".parse().expect("addr"),
            "10.1.1.1:80".parse().expect("addr"),
        ];
        assert!(check_addrs("http://x", &mixed, false).is_err());
        assert!(check_addrs("http://x", &mixed[..1], false).is_ok());
        assert!(is_loopback("::ffff:127.0.0.1".parse().expect("ip")));
        assert!(!is_loopback("::ffff:10.0.0.1".parse().expect("ip")));
    }

    #[test]
    fn malformed_urls_are_explained() {
        assert!(matches!(
            Target::resolve("127.0.0.1:8080", false),
            Err(TargetError::Malformed { .. })
        ));
        assert!(matches!(
            Target::resolve("https://127.0.0.1:8443", false),
            Err(TargetError::UnsupportedScheme { .. })
        ));
        assert!(Target::resolve("http://127.0.0.1:port", false).is_err());
        assert!(Target::resolve("http://127.0.0.1:80/v1", false).is_err());
    }
}
