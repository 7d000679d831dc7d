//! The account endpoints: `POST /api/login` (password, one-time code or
//! API token → session cookie), `POST /api/logout`, `GET /api/me`, and the
//! owner's token management (`GET`/`POST /api/tokens`,
//! `DELETE /api/tokens/{id}`).

use serde::Deserialize;
use warp::http::{header, Response, StatusCode};
use warp::hyper::body::Bytes;

use super::access::{
    clear_cookie_header, refusal, same_origin, session_cookie_header, RequestFacts,
};
use super::HttpContext;
use crate::auth::{Denied, LoginAttempt, Principal, Role, Via};
use crate::response::{json_error, response};

/// Body of `POST /api/login`: exactly one of the three.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    password: Option<String>,
    code: Option<String>,
    token: Option<String>,
}

fn who(principal: &Principal) -> serde_json::Value {
    serde_json::json!({
        "role": principal.role,
        "name": principal.name,
        "via": match principal.via { Via::Session(_) => "session", Via::Token(_) => "token" },
    })
}

/// `POST /api/login`.
pub async fn login(ctx: HttpContext, facts: RequestFacts, body: Bytes) -> Response<Bytes> {
    // A page of another site must not log the browser in (login CSRF).
    if facts.headers.contains_key(header::ORIGIN) {
        if let Err(denied) = same_origin(&ctx.auth, &facts.headers) {
            ctx.auth.count(&denied);
            return refusal(&denied);
        }
    }
    let attempt = match serde_json::from_slice::<LoginBody>(&body) {
        Ok(LoginBody {
            password: Some(p),
            code: None,
            token: None,
        }) => LoginAttempt::Password(p),
        Ok(LoginBody {
            password: None,
            code: Some(c),
            token: None,
        }) => LoginAttempt::Code(c),
        Ok(LoginBody {
            password: None,
            code: None,
            token: Some(t),
        }) => LoginAttempt::Token(t),
        _ => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "the body must be a JSON object with one of password, code or token, \
                 e.g. {\"password\":\"…\"}",
            )
        }
    };
    let now = ctx.ws.clock.now();
    match ctx.auth.login(attempt, facts.peer, now).await {
        Ok(login) => {
            if let Some(c) = &facts.connection {
                c.mark_authenticated();
            }
            let tls = facts.connection.as_ref().is_some_and(|c| c.tls);
            let mut answer = response(
                StatusCode::OK,
                "application/json",
                who(&login.principal).to_string(),
            );
            if let Some(cookie) = session_cookie_header(&login.cookie, login.max_age_s, tls) {
                answer.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            answer
        }
        Err(denied) => {
            ctx.auth.count(&denied);
            refusal(&denied)
        }
    }
}

/// `POST /api/logout`: ends the session the request carries.
pub fn logout(ctx: &HttpContext, facts: &RequestFacts) -> Response<Bytes> {
    if let Some(cookie) = facts.session_cookie() {
        ctx.auth.logout(cookie);
    }
    let mut answer = response(
        StatusCode::OK,
        "application/json",
        r#"{"status":"logged out"}"#,
    );
    answer
        .headers_mut()
        .insert(header::SET_COOKIE, clear_cookie_header());
    answer
}

/// `GET /api/me`.
pub fn me(principal: &Principal) -> Response<Bytes> {
    response(
        StatusCode::OK,
        "application/json",
        who(principal).to_string(),
    )
}

fn token_json(t: &crate::auth::store::TokenRecord) -> serde_json::Value {
    serde_json::json!({ "id": t.id, "name": t.name, "role": t.role, "created_ms": t.created_ms })
}

/// `GET /api/tokens` (owner): every token, without secrets.
pub fn list_tokens(ctx: &HttpContext) -> Response<Bytes> {
    let tokens: Vec<_> = ctx.auth.tokens().iter().map(token_json).collect();
    response(
        StatusCode::OK,
        "application/json",
        serde_json::json!({ "tokens": tokens }).to_string(),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: Role,
}

/// `POST /api/tokens` (owner): 201 with the token's text, shown once.
pub async fn create_token(ctx: HttpContext, body: Bytes) -> Response<Bytes> {
    let Ok(new) = serde_json::from_slice::<NewToken>(&body) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "the body must be {\"name\": \"…\", \"role\": \"viewer\" or \"operator\"}",
        );
    };
    if new.role == Role::Owner {
        return json_error(
            StatusCode::BAD_REQUEST,
            "a token's role is viewer or operator; only the owner's password or login link gives the owner role",
        );
    }
    match ctx
        .auth
        .create_token(new.name, new.role, ctx.ws.clock.now())
        .await
    {
        Ok((record, text)) => {
            let mut body = token_json(&record);
            body["token"] = text.into();
            response(StatusCode::CREATED, "application/json", body.to_string())
        }
        Err(crate::auth::store::StoreError::Refused(message)) => {
            json_error(StatusCode::CONFLICT, &message)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot make a token");
            refusal(&Denied::Failed)
        }
    }
}

/// `DELETE /api/tokens/{id}` (owner).
pub async fn revoke_token(ctx: HttpContext, id: String) -> Response<Bytes> {
    match ctx.auth.revoke_token(id).await {
        Ok(Some(record)) => response(
            StatusCode::OK,
            "application/json",
            token_json(&record).to_string(),
        ),
        Ok(None) => json_error(StatusCode::NOT_FOUND, "no token with that id"),
        Err(e) => {
            tracing::error!(error = %e, "cannot revoke a token");
            refusal(&Denied::Failed)
        }
    }
}
