//! Request extractors: who is calling ([`Authed`], [`AdminUser`]) and from where ([`client_ip`]).
//!
//! Handlers take `Authed` (any live session) or `AdminUser` (a live session of a server admin)
//! as an argument; the check happens before the handler runs, and a failure is the usual JSON
//! `ApiError` (`unauthorized`, `account_disabled` or `forbidden`). Credentials are read only from
//! `Authorization: Bearer <token>`: never from cookies (no CSRF surface) or the query string
//! (which ends up in logs; browsers use WebSocket tickets instead).

use std::future::Future;
use std::net::IpAddr;
use std::net::Ipv6Addr;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::web;
use actix_web::FromRequest;
use actix_web::HttpRequest;
use roost_engine::model::ServerRole;

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::error::ErrorCode;
use crate::state::AppState;

type ExtractFuture<T> = Pin<Box<dyn Future<Output = Result<T, ApiError>>>>;

/// The caller's verified session and user.
#[derive(Clone, Debug)]
pub struct Authed(pub Authenticated);

/// The caller's verified session, whose user is a server administrator.
#[derive(Clone, Debug)]
pub struct AdminUser(pub Authenticated);

impl FromRequest for Authed {
    type Error = ApiError;
    type Future = ExtractFuture<Self>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = bearer_token(req).map(str::to_owned);
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal("application state is missing"))?;
            let token = token.ok_or_else(ApiError::unauthorized)?;
            Ok(Authed(state.auth.authenticate(&token).await?))
        })
    }
}

impl FromRequest for AdminUser {
    type Error = ApiError;
    type Future = ExtractFuture<Self>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let authed = Authed::from_request(req, payload);
        Box::pin(async move {
            let Authed(auth) = authed.await?;
            if auth.user.role != ServerRole::Admin {
                return Err(ApiError::new(ErrorCode::Forbidden, "this needs a server administrator"));
            }
            Ok(AdminUser(auth))
        })
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The address of the TCP peer. Behind a reverse proxy this is the proxy's address: forwarded
/// headers are not trusted, because any client can set them to dodge login throttling. When no
/// peer address is known (tests, Unix sockets) every such request shares the unspecified address.
///
/// When the peer is one of `trusted_proxies`, the client is the rightmost `X-Forwarded-For`
/// entry that is not itself a trusted proxy (entries to its left can be forged by the client).
pub fn client_ip(req: &HttpRequest, trusted_proxies: &[IpAddr]) -> IpAddr {
    let peer = req
        .peer_addr()
        .map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |addr| addr.ip());
    if !trusted_proxies.contains(&peer) {
        return peer;
    }
    let forwarded = req.headers().get_all("x-forwarded-for").filter_map(|v| v.to_str().ok());
    let hops: Vec<IpAddr> = forwarded
        .flat_map(|v| v.split(','))
        .filter_map(|hop| hop.trim().parse().ok())
        .collect();
    hops.into_iter()
        .rev()
        .find(|hop| !trusted_proxies.contains(hop))
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn bearer_token_parsing() {
        let req = TestRequest::default()
            .insert_header((header::AUTHORIZATION, "Bearer abc_DEF-1"))
            .to_http_request();
        assert_eq!(bearer_token(&req), Some("abc_DEF-1"));
        let req = TestRequest::default()
            .insert_header((header::AUTHORIZATION, "bearer  xyz "))
            .to_http_request();
        assert_eq!(bearer_token(&req), Some("xyz"));
        for value in ["Basic abc", "Bearer", "Bearer ", "abc"] {
            let req = TestRequest::default()
                .insert_header((header::AUTHORIZATION, value))
                .to_http_request();
            assert_eq!(bearer_token(&req), None, "{value}");
        }
        assert_eq!(bearer_token(&TestRequest::default().to_http_request()), None);
    }

    #[test]
    fn client_ip_is_the_peer_not_a_forwarded_header() {
        let peer: SocketAddr = "198.51.100.7:5555".parse().expect("addr");
        let req = TestRequest::default()
            .peer_addr(peer)
            .insert_header(("X-Forwarded-For", "203.0.113.1"))
            .to_http_request();
        assert_eq!(client_ip(&req, &[]), peer.ip());
        let unknown = TestRequest::default().to_http_request();
        assert_eq!(client_ip(&unknown, &[]), IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy: SocketAddr = "10.0.0.2:5555".parse().expect("addr");
        let trusted = [proxy.ip()];
        let req = TestRequest::default()
            .peer_addr(proxy)
            .insert_header(("X-Forwarded-For", "6.6.6.6, 203.0.113.9"))
            .to_http_request();
        // The client could forge the left entry; the proxy appended the right one.
        assert_eq!(client_ip(&req, &trusted), "203.0.113.9".parse::<IpAddr>().expect("ip"));
        let direct = TestRequest::default()
            .peer_addr("198.51.100.7:1".parse().expect("addr"))
            .insert_header(("X-Forwarded-For", "203.0.113.9"))
            .to_http_request();
        assert_eq!(
            client_ip(&direct, &trusted),
            "198.51.100.7".parse::<IpAddr>().expect("ip")
        );
    }
}
