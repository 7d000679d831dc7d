//! Access control as warp filters, in front of every route: the `Host`
//! check (all paths), [`require`] (credentials, same-origin for browser
//! sessions that change state, and a role), [`json_body`] (POST bodies
//! must be declared JSON, so a cross-site form or a no-cors fetch cannot
//! send one), and the answers for each refusal. The decisions themselves
//! are [`crate::auth`]'s.

use std::net::{IpAddr, Ipv4Addr};

use warp::http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use warp::hyper::body::Bytes;
use warp::{Filter, Rejection};

use crate::auth::{Auth, Denied, Presented, Principal, Role, SESSION_COOKIE};
use crate::clock::Clock;
use crate::connection::ConnectionInfo;
use crate::response::json_error;

/// A request refused by access control (a warp rejection).
#[derive(Debug)]
pub struct Refused(pub Denied);

impl warp::reject::Reject for Refused {}

/// What access control reads of a request.
#[derive(Debug, Clone)]
pub struct RequestFacts {
    /// Its method.
    pub method: Method,
    /// Its headers.
    pub headers: HeaderMap,
    /// Where it came from (0.0.0.0 when unknown, as in `warp::test`).
    pub peer: IpAddr,
    /// The listener's connection, when served by the hub's listener.
    pub connection: Option<ConnectionInfo>,
}

impl RequestFacts {
    /// The session cookie's value, if the request carries one.
    pub fn session_cookie(&self) -> Option<&str> {
        session_cookie(&self.headers)
    }

    fn bearer(&self) -> Option<&str> {
        let value = self.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim())
    }
}

/// The value of the session cookie in a `Cookie` header.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
}

/// Extracts [`RequestFacts`].
pub fn facts() -> impl Filter<Extract = (RequestFacts,), Error = std::convert::Infallible> + Clone {
    warp::method()
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<ConnectionInfo>())
        .and(warp::addr::remote())
        .map(
            |method,
             headers,
             connection: Option<ConnectionInfo>,
             remote: Option<std::net::SocketAddr>| {
                let peer = connection
                    .as_ref()
                    .map(|c| c.peer.ip())
                    .or(remote.map(|r| r.ip()))
                    .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                RequestFacts {
                    method,
                    headers,
                    peer,
                    connection,
                }
            },
        )
}

/// Refuses every request whose `Host` is not one of the hub's names
/// (DNS rebinding).
pub fn host(auth: Auth) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::headers_cloned()
        .and_then(move |headers: HeaderMap| {
            let auth = auth.clone();
            async move {
                let host = headers.get(header::HOST).map(HeaderValue::as_bytes);
                if auth.policy().host_allowed(host) {
                    Ok(())
                } else {
                    auth.count(&Denied::Host);
                    Err(warp::reject::custom(Refused(Denied::Host)))
                }
            }
        })
        .untuple_one()
}

/// Who made the request, if anyone may: credentials checked, a browser
/// session's state-changing request checked for same origin, the role
/// checked against `need`. The connection is marked authenticated.
pub fn check(
    auth: &Auth,
    clock: &Clock,
    facts: &RequestFacts,
    need: Role,
) -> Result<Principal, Denied> {
    let presented = Presented {
        bearer: facts.bearer(),
        session: facts.session_cookie(),
    };
    let principal = auth.authenticate(presented, facts.peer, clock.now())?;
    if let Some(connection) = &facts.connection {
        connection.mark_authenticated();
    }
    let changes_state = !matches!(facts.method, Method::GET | Method::HEAD);
    // A browser names the page's origin on every cross-origin request (and
    // on every POST): a session's request from another origin is refused,
    // reads included (a page of the same site, e.g. another port, gets the
    // SameSite=Strict cookie along).
    let from_a_page = facts.headers.contains_key(header::ORIGIN);
    if principal.is_session() && (changes_state || from_a_page) {
        same_origin(auth, &facts.headers)?;
    }
    if !principal.may(need) {
        return Err(Denied::Forbidden {
            need,
            have: principal.role,
            via: if principal.is_session() {
                "session"
            } else {
                "token"
            },
        });
    }
    Ok(principal)
}

/// `Ok` when the request's `Origin` names the hub itself or one of
/// `http.allowed_origins`. Browsers send `Origin` on every POST, so a
/// request without one is refused too.
pub fn same_origin(auth: &Auth, headers: &HeaderMap) -> Result<(), Denied> {
    let host = headers.get(header::HOST).map(HeaderValue::as_bytes);
    match headers.get(header::ORIGIN) {
        Some(origin) if auth.policy().origin_allowed(origin.as_bytes(), host) => Ok(()),
        _ => Err(Denied::Origin),
    }
}

/// The [`Principal`] of a request that may do what `need` may; refuses
/// the others with [`Refused`].
pub fn require(
    auth: Auth,
    clock: Clock,
    need: Role,
) -> impl Filter<Extract = (Principal,), Error = Rejection> + Clone {
    facts().and_then(move |facts: RequestFacts| {
        let result = check(&auth, &clock, &facts, need);
        let auth = auth.clone();
        async move {
            result.map_err(|denied| {
                auth.count(&denied);
                warp::reject::custom(Refused(denied))
            })
        }
    })
}

/// Refuses a body not declared as `application/json` (415).
pub fn json_body(auth: Auth) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("content-type")
        .and_then(move |content_type: Option<String>| {
            let auth = auth.clone();
            async move {
                let json = content_type.as_deref().is_some_and(|t| {
                    t.split(';')
                        .next()
                        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
                });
                if json {
                    Ok(())
                } else {
                    auth.count(&Denied::ContentType);
                    Err(warp::reject::custom(Refused(Denied::ContentType)))
                }
            }
        })
        .untuple_one()
}

/// The answer for a refusal: a JSON error with the refusal's status, a
/// `WWW-Authenticate` challenge on 401, `Retry-After` on 429.
pub fn refusal(denied: &Denied) -> Response<Bytes> {
    let status = StatusCode::from_u16(denied.status()).unwrap_or(StatusCode::FORBIDDEN);
    let mut answer = json_error(status, &denied.to_string());
    let h = answer.headers_mut();
    match denied {
        Denied::Unauthenticated | Denied::BadCredentials => {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"sensor-hub\""),
            );
        }
        Denied::Throttled { retry_after_ms } => {
            if let Ok(v) = HeaderValue::from_str(&retry_after_ms.div_ceil(1_000).to_string()) {
                h.insert(header::RETRY_AFTER, v);
            }
        }
        Denied::Busy => {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    answer
}

/// `Set-Cookie` for a new session (`Secure` over TLS).
pub fn session_cookie_header(value: &str, max_age_s: u64, tls: bool) -> Option<HeaderValue> {
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
    ))
    .ok()
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_cookie_header() -> HeaderValue {
    HeaderValue::from_static("sensor_hub_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; sensor_hub_session=abc ; x=y"),
        );
        assert_eq!(session_cookie(&h), Some("abc"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("sensor_hub_sessionx=1"),
        );
        assert_eq!(session_cookie(&h), None);
    }

    #[test]
    fn refusals_carry_their_status_and_hints() {
        let r = refusal(&Denied::Unauthenticated);
        assert_eq!(r.status(), 401);
        assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
        let r = refusal(&Denied::Throttled {
            retry_after_ms: 1_500,
        });
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        assert_eq!(refusal(&Denied::ContentType).status(), 415);
        assert_eq!(refusal(&Denied::Host).status(), 403);
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_over_tls() {
        let c = session_cookie_header("v", 60, true).unwrap();
        let c = c.to_str().unwrap();
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("; Secure"));
        let plain = session_cookie_header("v", 60, false).unwrap();
        assert!(!plain.to_str().unwrap().contains("Secure"));
    }
}
