//! [`Auth`]: the credentials file as the running hub sees it (reloaded
//! when the file changes, so a token revoked from the command line stops
//! working at the next request), the browser sessions, the slowdown of
//! guesses, the bounded log of failures, and the metrics of it all. The
//! HTTP layer hands it what a request presented and gets a [`Principal`]
//! or a [`Denied`] that says which status to answer.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use strum::{EnumCount as _, IntoEnumIterator as _};
use tokio::sync::{watch, Semaphore};

use super::policy::Policy;
use super::secret;
use super::sessions::Sessions;
use super::store::{CredentialFile, Credentials, Stamp, StoreError, TokenRecord};
use super::throttle::{LogBudget, LogVerdict, Throttle};
use super::Role;
use crate::clock::Now;
use crate::config::{AuthConfig, HttpConfig};
use crate::metrics::{
    counter, gauge, labeled_counters, Collector, CounterArray, DescriptorEncoder,
};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "sensor_hub_session";

/// Password checks (argon2, ~20 ms of CPU and 19 MiB each) running at
/// once; more logins at the same moment are answered busy.
const CONCURRENT_PASSWORD_CHECKS: usize = 2;

/// How a request is authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A browser session (the digest of its cookie).
    Session(String),
    /// An API token (its id).
    Token(String),
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// What they may do.
    pub role: Role,
    /// `owner`, or a token's name.
    pub name: String,
    /// How they proved it.
    pub via: Via,
}

impl Principal {
    /// Whether it may do what `need` may.
    pub fn may(&self, need: Role) -> bool {
        self.role >= need
    }

    /// Whether it came with a browser session (whose requests must be
    /// same-origin).
    pub fn is_session(&self) -> bool {
        matches!(self.via, Via::Session(_))
    }
}

/// What a request presented.
#[derive(Debug, Clone, Copy, Default)]
pub struct Presented<'a> {
    /// `Authorization: Bearer …`.
    pub bearer: Option<&'a str>,
    /// The session cookie's value.
    pub session: Option<&'a str>,
}

/// A login request.
#[derive(Debug, Clone)]
pub enum LoginAttempt {
    /// The owner's password.
    Password(String),
    /// A one-time login code (from a login link).
    Code(String),
    /// An API token, to open a browser session with its role.
    Token(String),
}

/// How a login was made (metrics label).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumCount, strum::EnumIter, strum::IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum LoginMethod {
    /// Password.
    Password,
    /// One-time code.
    Code,
    /// API token.
    Token,
}

impl LoginAttempt {
    fn method(&self) -> LoginMethod {
        match self {
            LoginAttempt::Password(_) => LoginMethod::Password,
            LoginAttempt::Code(_) => LoginMethod::Code,
            LoginAttempt::Token(_) => LoginMethod::Token,
        }
    }
}

/// A successful login.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    /// Who logged in.
    pub principal: Principal,
    /// The session cookie's value (shown to the browser only).
    pub cookie: String,
    /// The session's lifetime, seconds (the cookie's Max-Age).
    pub max_age_s: u64,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// `Host` is not one of the hub's names.
    #[error("this hub does not answer to that Host name; add it to http.allowed_hosts (see SECURITY.md)")]
    Host,
    /// A browser request from another site's page.
    #[error("cross-origin request refused: only pages the hub served itself (or http.allowed_origins) may do this")]
    Origin,
    /// No credentials.
    #[error(
        "log in first (POST /api/login), or send an API token as `Authorization: Bearer <token>`"
    )]
    Unauthenticated,
    /// Wrong password, token or login code.
    #[error("wrong or expired credentials; check the password or token (a login link works once)")]
    BadCredentials,
    /// Valid credentials without the role needed.
    #[error("this needs the {need} role; this {via} has the {have} role", need = .need.name(), have = .have.name())]
    Forbidden {
        /// Role needed.
        need: Role,
        /// Role held.
        have: Role,
        /// "session" or "token".
        via: &'static str,
    },
    /// Too many failures from this address: wait.
    #[error("too many failed attempts from this address; retry in {} s", .retry_after_ms.div_ceil(1_000))]
    Throttled {
        /// How long to wait, ms.
        retry_after_ms: u64,
    },
    /// Too many password checks at once.
    #[error("too many logins at once; retry in a moment")]
    Busy,
    /// A POST whose body is not declared as JSON.
    #[error("send the body as JSON with `Content-Type: application/json`")]
    ContentType,
    /// The credentials file could not be read or written.
    #[error("the hub cannot use its credentials file; its log says why")]
    Failed,
}

/// [`Denied`] without its data (metrics label).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumCount, strum::EnumIter, strum::IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum DenyReason {
    /// [`Denied::Host`].
    Host,
    /// [`Denied::Origin`].
    Origin,
    /// [`Denied::Unauthenticated`].
    Unauthenticated,
    /// [`Denied::BadCredentials`].
    BadCredentials,
    /// [`Denied::Forbidden`].
    Forbidden,
    /// [`Denied::Throttled`].
    Throttled,
    /// [`Denied::Busy`].
    Busy,
    /// [`Denied::ContentType`].
    ContentType,
    /// [`Denied::Failed`].
    Failed,
}

impl Denied {
    /// Its metrics label.
    pub fn reason(&self) -> DenyReason {
        match self {
            Denied::Host => DenyReason::Host,
            Denied::Origin => DenyReason::Origin,
            Denied::Unauthenticated => DenyReason::Unauthenticated,
            Denied::BadCredentials => DenyReason::BadCredentials,
            Denied::Forbidden { .. } => DenyReason::Forbidden,
            Denied::Throttled { .. } => DenyReason::Throttled,
            Denied::Busy => DenyReason::Busy,
            Denied::ContentType => DenyReason::ContentType,
            Denied::Failed => DenyReason::Failed,
        }
    }

    /// The HTTP status that says it.
    pub fn status(&self) -> u16 {
        match self {
            Denied::Unauthenticated | Denied::BadCredentials => 401,
            Denied::Host | Denied::Origin | Denied::Forbidden { .. } => 403,
            Denied::ContentType => 415,
            Denied::Throttled { .. } | Denied::Busy => 429,
            Denied::Failed => 500,
        }
    }
}

/// Counters of access control (on `/metrics`).
#[derive(Debug, Default)]
pub struct AuthMetrics {
    /// Requests refused, by [`DenyReason`].
    pub denied: CounterArray<{ DenyReason::COUNT }>,
    /// Logins, by [`LoginMethod`].
    pub logins: CounterArray<{ LoginMethod::COUNT }>,
    /// Failure log lines left out by the log budget.
    pub log_lines_left_out: crate::metrics::Counter,
}

/// What the first start made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstStart {
    /// The credentials file existed already.
    Existing,
    /// It was created with this one-time login code.
    Created {
        /// The code (for a login link).
        code: String,
    },
}

/// Creates the credentials file with a one-time login code if it does not
/// exist yet (the binary prints the link on a terminal).
pub fn prepare(config: &AuthConfig, now: Now) -> Result<FirstStart, StoreError> {
    let file = CredentialFile::new(&config.credentials_path);
    if file.stamp()?.is_some() {
        return Ok(FirstStart::Existing);
    }
    let expires = now.wall_ms.saturating_add(config.login_link_ttl_ms);
    let code = file.update(|c| c.add_login_code(expires))?;
    Ok(FirstStart::Created { code })
}

/// The URL that logs a browser in with `code`, for a hub bound to `bind`.
/// The code is in the fragment, which browsers never send to a server, so
/// it appears in no request line or log.
pub fn login_url(bind: SocketAddr, tls: bool, code: &str) -> String {
    let ip = match bind.ip() {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!(
        "{scheme}://{}/login.html#code={code}",
        SocketAddr::new(ip, bind.port())
    )
}

#[derive(Debug)]
struct Loaded {
    credentials: Arc<Credentials>,
    stamp: Option<Stamp>,
}

#[derive(Debug)]
struct Inner {
    config: AuthConfig,
    file: CredentialFile,
    policy: Policy,
    loaded: Mutex<Loaded>,
    sessions: Mutex<Sessions>,
    throttle: Mutex<Throttle>,
    log: Mutex<LogBudget>,
    password_checks: Semaphore,
    metrics: AuthMetrics,
    changes: watch::Sender<u64>,
}

/// Access control of the running hub (cheap to clone).
#[derive(Debug, Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data stays consistent if a holder panicked (every change is one
    // call on a plain type).
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn own_names() -> Vec<String> {
    let Ok(name) = nix::unistd::gethostname() else {
        return Vec::new();
    };
    let name = name.to_string_lossy().to_ascii_lowercase();
    if name.is_empty() {
        return Vec::new();
    }
    let short = name.split('.').next().unwrap_or(&name).to_string();
    let mut names = vec![name.clone(), format!("{short}.local")];
    if short != name {
        names.push(short);
    }
    names
}

impl Auth {
    /// Reads the credentials file (an empty one if it does not exist: then
    /// nobody can log in until `sensor-hub login-link` or
    /// `sensor-hub passwd` is run).
    pub fn open(config: &AuthConfig, http: &HttpConfig) -> Result<Auth, StoreError> {
        let file = CredentialFile::new(&config.credentials_path);
        let (credentials, stamp) = match file.load()? {
            Some((c, stamp)) => (c, Some(stamp)),
            None => (Credentials::default(), None),
        };
        if credentials.owner_password.is_none() {
            tracing::info!(
                "no owner password is set: log in with a link from `sensor-hub login-link`, \
                 or set one with `sensor-hub passwd`"
            );
        }
        let policy = Policy::new(&http.allowed_hosts, &http.allowed_origins, &own_names());
        Ok(Auth {
            inner: Arc::new(Inner {
                file,
                policy,
                loaded: Mutex::new(Loaded {
                    credentials: Arc::new(credentials),
                    stamp,
                }),
                sessions: Mutex::new(Sessions::new(config.max_sessions, config.session_ttl_ms)),
                throttle: Mutex::new(Throttle::new(
                    config.failure_delay_ms,
                    config.max_failure_delay_ms,
                )),
                log: Mutex::new(LogBudget::new(config.failure_log_per_minute)),
                password_checks: Semaphore::new(CONCURRENT_PASSWORD_CHECKS),
                metrics: AuthMetrics::default(),
                changes: watch::Sender::new(0),
                config: config.clone(),
            }),
        })
    }

    /// The Host and Origin policy.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// Its counters.
    pub fn metrics(&self) -> &AuthMetrics {
        &self.inner.metrics
    }

    /// Counts a refusal.
    pub fn count(&self, denied: &Denied) {
        self.inner.metrics.denied.inc(denied.reason() as usize);
    }

    /// Changes whenever a session ends or the credentials change: holders
    /// of long-lived connections check [`Auth::still_valid`] then.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    fn changed(&self) {
        self.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The credentials as the file holds them now (reloaded if it changed
    /// since the last look; the old ones are kept, with a warning, if it
    /// cannot be read).
    fn credentials(&self) -> Arc<Credentials> {
        let stamp = match self.inner.file.stamp() {
            Ok(stamp) => stamp,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look at the credentials file; using what was read before");
                return locked(&self.inner.loaded).credentials.clone();
            }
        };
        {
            let loaded = locked(&self.inner.loaded);
            if loaded.stamp == stamp {
                return loaded.credentials.clone();
            }
        }
        let fresh = match self.inner.file.load() {
            Ok(Some((c, stamp))) => (c, Some(stamp)),
            Ok(None) => (Credentials::default(), None),
            Err(e) => {
                tracing::warn!(error = %e, "cannot reload the credentials file; using what was read before");
                return locked(&self.inner.loaded).credentials.clone();
            }
        };
        let credentials = Arc::new(fresh.0);
        {
            let mut loaded = locked(&self.inner.loaded);
            loaded.credentials = credentials.clone();
            loaded.stamp = fresh.1;
        }
        let ended =
            locked(&self.inner.sessions).end_revoked(|id| credentials.token_by_id(id).is_some());
        tracing::info!(
            tokens = credentials.tokens.len(),
            sessions_ended = ended,
            "credentials file changed; reloaded"
        );
        self.changed();
        credentials
    }

    /// Looks at the credentials file now (a background task calls this
    /// every second, so revocations reach open WebSockets without a
    /// request).
    pub fn refresh(&self) {
        self.credentials();
    }

    /// Who presented these credentials from `peer`. A bearer token is
    /// checked first; a wrong one is a failure that slows `peer` down.
    pub fn authenticate(
        &self,
        presented: Presented<'_>,
        peer: IpAddr,
        now: Now,
    ) -> Result<Principal, Denied> {
        if let Some(token) = presented.bearer {
            if let Err(retry_after_ms) = locked(&self.inner.throttle).check(peer, now.mono_ms) {
                return Err(Denied::Throttled { retry_after_ms });
            }
            let credentials = self.credentials();
            return match credentials.token(token) {
                Some(record) => Ok(Principal {
                    role: record.role,
                    name: record.name.clone(),
                    via: Via::Token(record.id.clone()),
                }),
                None => {
                    self.failed(peer, "token", now);
                    Err(Denied::BadCredentials)
                }
            };
        }
        let Some(cookie) = presented.session else {
            return Err(Denied::Unauthenticated);
        };
        let digest = secret::digest(cookie);
        let session = locked(&self.inner.sessions).get(&digest, now.mono_ms);
        let Some(session) = session else {
            // Expired or from before a restart: not a guess worth slowing
            // (a session id has 256 random bits).
            return Err(Denied::Unauthenticated);
        };
        if let Some(id) = &session.token_id {
            if self.credentials().token_by_id(id).is_none() {
                locked(&self.inner.sessions).end(&digest);
                return Err(Denied::Unauthenticated);
            }
        }
        Ok(Principal {
            role: session.role,
            name: session.name,
            via: Via::Session(digest),
        })
    }

    /// Whether `principal`'s session or token still exists.
    pub fn still_valid(&self, principal: &Principal, now: Now) -> bool {
        match &principal.via {
            Via::Token(id) => self.credentials().token_by_id(id).is_some(),
            Via::Session(digest) => locked(&self.inner.sessions)
                .get(digest, now.mono_ms)
                .is_some(),
        }
    }

    /// Checks a login attempt from `peer` and opens a session. The
    /// password check runs on a blocking thread, at most
    /// [`CONCURRENT_PASSWORD_CHECKS`] at once.
    pub async fn login(
        &self,
        attempt: LoginAttempt,
        peer: IpAddr,
        now: Now,
    ) -> Result<LoggedIn, Denied> {
        if let Err(retry_after_ms) = locked(&self.inner.throttle).check(peer, now.mono_ms) {
            return Err(Denied::Throttled { retry_after_ms });
        }
        let method = attempt.method();
        let who: Option<(Role, String, Option<String>)> = match attempt {
            LoginAttempt::Password(password) => {
                let Some(stored) = self.credentials().owner_password.clone() else {
                    self.failed(peer, "password (none is set)", now);
                    return Err(Denied::BadCredentials);
                };
                let Ok(_permit) = self.inner.password_checks.try_acquire() else {
                    return Err(Denied::Busy);
                };
                let ok = tokio::task::spawn_blocking(move || {
                    secret::verify_password(&password, &stored)
                })
                .await
                .unwrap_or(false);
                ok.then(|| (Role::Owner, "owner".to_string(), None))
            }
            LoginAttempt::Code(code) => {
                let file = self.inner.file.clone();
                let wall = now.wall_ms;
                let taken = tokio::task::spawn_blocking(move || {
                    file.update(|c| Ok(c.take_login_code(&code, wall)))
                })
                .await;
                match taken {
                    Ok(Ok(true)) => Some((Role::Owner, "owner".to_string(), None)),
                    Ok(Ok(false)) => None,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "cannot use a login code");
                        return Err(Denied::Failed);
                    }
                    Err(_) => return Err(Denied::Failed),
                }
            }
            LoginAttempt::Token(token) => self
                .credentials()
                .token(&token)
                .map(|t| (t.role, t.name.clone(), Some(t.id.clone()))),
        };
        let Some((role, name, token_id)) = who else {
            self.failed(peer, method.into(), now);
            return Err(Denied::BadCredentials);
        };
        let cookie = secret::random_text().map_err(|e| {
            tracing::error!(error = %e, "cannot make a session id");
            Denied::Failed
        })?;
        let digest = secret::digest(&cookie);
        let (max_age_s, ended) = {
            let mut sessions = locked(&self.inner.sessions);
            let ended = sessions.open(digest.clone(), role, name.clone(), token_id, now.mono_ms);
            (sessions.ttl_ms() / 1_000, ended)
        };
        if ended > 0 {
            // Their WebSockets must notice.
            tracing::info!(
                ended,
                "auth.max_sessions reached: the oldest sessions were ended"
            );
            self.changed();
        }
        locked(&self.inner.throttle).succeed(peer);
        self.inner.metrics.logins.inc(method as usize);
        tracing::info!(%peer, role = role.name(), method = <&str>::from(method), "login");
        Ok(LoggedIn {
            principal: Principal {
                role,
                name,
                via: Via::Session(digest),
            },
            cookie,
            max_age_s,
        })
    }

    /// Ends the session with this cookie value.
    pub fn logout(&self, cookie: &str) {
        if locked(&self.inner.sessions)
            .end(&secret::digest(cookie))
            .is_some()
        {
            self.changed();
        }
    }

    /// The API tokens (records only, never secrets).
    pub fn tokens(&self) -> Vec<TokenRecord> {
        self.credentials().tokens.clone()
    }

    /// Makes an API token; returns its record and text (shown once).
    pub async fn create_token(
        &self,
        name: String,
        role: Role,
        now: Now,
    ) -> Result<(TokenRecord, String), StoreError> {
        let file = self.inner.file.clone();
        let made = tokio::task::spawn_blocking(move || {
            file.update(|c| c.add_token(&name, role, now.wall_ms))
        })
        .await
        .map_err(|e| StoreError::Refused(format!("the token could not be made: {e}")))?;
        self.refresh();
        made
    }

    /// Revokes the token with this id; its sessions end at once.
    pub async fn revoke_token(&self, id: String) -> Result<Option<TokenRecord>, StoreError> {
        let file = self.inner.file.clone();
        let revoked = tokio::task::spawn_blocking(move || {
            file.update(|c| {
                Ok(match c.token_by_id(&id) {
                    Some(_) => c.revoke(&id),
                    None => None,
                })
            })
        })
        .await
        .map_err(|e| StoreError::Refused(format!("the token could not be revoked: {e}")))?;
        self.refresh();
        revoked
    }

    /// A failure from `peer`: slow it down and log within the budget.
    fn failed(&self, peer: IpAddr, what: &str, now: Now) {
        let wait_ms = locked(&self.inner.throttle).fail(peer, now.mono_ms);
        let verdict = locked(&self.inner.log).admit(now.mono_ms);
        match verdict {
            LogVerdict::Write { left_out: 0 } => {
                tracing::warn!(%peer, what, wait_ms, "failed login or wrong token");
            }
            LogVerdict::Write { left_out } => {
                tracing::warn!(
                    %peer, what, wait_ms, left_out,
                    "failed login or wrong token ({left_out} more failures were not logged)"
                );
            }
            LogVerdict::LeaveOut => {
                self.inner.metrics.log_lines_left_out.inc();
            }
        }
    }

    /// Sessions open now.
    pub fn sessions(&self) -> usize {
        locked(&self.inner.sessions).len()
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &AuthConfig {
        &self.inner.config
    }
}

/// The access-control families on `/metrics`.
#[derive(Debug)]
pub struct AuthCollector(pub Auth);

impl Collector for AuthCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let m = self.0.metrics();
        labeled_counters(
            &mut e,
            (
                "sensor_hub_http_denied",
                "HTTP and WebSocket requests refused by access control, by reason.",
            ),
            "reason",
            DenyReason::iter().map(|r| (<&str>::from(r), m.denied.get(r as usize))),
        )?;
        labeled_counters(
            &mut e,
            ("sensor_hub_auth_logins", "Successful logins, by method."),
            "method",
            LoginMethod::iter().map(|l| (<&str>::from(l), m.logins.get(l as usize))),
        )?;
        counter(
            &mut e,
            "sensor_hub_auth_failure_log_lines_left_out",
            "Failed logins and wrong tokens not written to the log (auth.failure_log_per_minute).",
            m.log_lines_left_out.get(),
        )?;
        gauge(
            &mut e,
            "sensor_hub_auth_sessions",
            "Browser sessions open.",
            self.0.sessions() as i64,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HubConfig;

    struct Fixture {
        auth: Auth,
        file: CredentialFile,
        dir: std::path::PathBuf,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn fixture(name: &str) -> Fixture {
        let dir =
            std::env::temp_dir().join(format!("sensor-hub-gate-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = HubConfig::defaults().unwrap();
        config.auth.credentials_path = dir.join("credentials.json");
        config.auth.failure_delay_ms = 100;
        config.auth.max_failure_delay_ms = 1_000;
        let file = CredentialFile::new(&config.auth.credentials_path);
        let auth = Auth::open(&config.auth, &config.http).unwrap();
        Fixture { auth, file, dir }
    }

    fn at(ms: u64) -> Now {
        Now {
            mono_ms: ms,
            wall_ms: 1_700_000_000_000 + ms,
        }
    }

    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

    fn bearer(token: &str) -> Presented<'_> {
        Presented {
            bearer: Some(token),
            session: None,
        }
    }

    #[test]
    fn a_token_made_by_another_process_works_and_stops_at_once_when_revoked() {
        let f = fixture("revoke");
        let (record, token) = f
            .file
            .update(|c| c.add_token("prom", Role::Viewer, 0))
            .unwrap();
        let p = f.auth.authenticate(bearer(&token), PEER, at(0)).unwrap();
        assert_eq!(p.role, Role::Viewer);
        assert_eq!(p.via, Via::Token(record.id.clone()));
        let changes = f.auth.changes();
        f.file.update(|c| Ok(c.revoke("prom"))).unwrap();
        assert_eq!(
            f.auth.authenticate(bearer(&token), PEER, at(1)),
            Err(Denied::BadCredentials)
        );
        assert!(changes.has_changed().unwrap());
        assert!(!f.auth.still_valid(&p, at(1)));
    }

    #[test]
    fn wrong_tokens_slow_the_address_down_and_nobody_else() {
        let f = fixture("slow");
        let (_, token) = f
            .file
            .update(|c| c.add_token("t", Role::Operator, 0))
            .unwrap();
        assert_eq!(
            f.auth
                .authenticate(bearer("shub_00000000_guess"), PEER, at(0)),
            Err(Denied::BadCredentials)
        );
        // Even the right token waits: the address is slowed, not the token.
        assert_eq!(
            f.auth.authenticate(bearer(&token), PEER, at(50)),
            Err(Denied::Throttled { retry_after_ms: 50 })
        );
        let other = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        assert!(f.auth.authenticate(bearer(&token), other, at(50)).is_ok());
        assert!(f.auth.authenticate(bearer(&token), PEER, at(100)).is_ok());
        assert_eq!(
            f.auth.authenticate(Presented::default(), PEER, at(100)),
            Err(Denied::Unauthenticated)
        );
    }

    #[tokio::test]
    async fn a_login_code_opens_one_owner_session_once() {
        let f = fixture("code");
        let code = f.file.update(|c| c.add_login_code(u64::MAX)).unwrap();
        let login = f
            .auth
            .login(LoginAttempt::Code(code.clone()), PEER, at(0))
            .await
            .unwrap();
        assert_eq!(login.principal.role, Role::Owner);
        let session = Presented {
            bearer: None,
            session: Some(&login.cookie),
        };
        let p = f.auth.authenticate(session, PEER, at(1)).unwrap();
        assert!(p.is_session() && p.may(Role::Owner));
        assert_eq!(
            f.auth
                .login(LoginAttempt::Code(code), PEER, at(2))
                .await
                .unwrap_err(),
            Denied::BadCredentials
        );
        f.auth.logout(&login.cookie);
        assert_eq!(
            f.auth.authenticate(session, PEER, at(3)),
            Err(Denied::Unauthenticated)
        );
        assert!(!f.auth.still_valid(&p, at(3)));
    }

    #[tokio::test]
    async fn the_password_logs_in_as_owner_and_a_wrong_one_is_slowed() {
        let f = fixture("password");
        let hash = secret::hash_password("a long enough password").unwrap();
        f.file
            .update(|c| {
                c.owner_password = Some(hash);
                Ok(())
            })
            .unwrap();
        let wrong = f
            .auth
            .login(
                LoginAttempt::Password("guess guess guess".into()),
                PEER,
                at(0),
            )
            .await;
        assert_eq!(wrong.unwrap_err(), Denied::BadCredentials);
        let early = f
            .auth
            .login(
                LoginAttempt::Password("a long enough password".into()),
                PEER,
                at(10),
            )
            .await;
        assert_eq!(early.unwrap_err(), Denied::Throttled { retry_after_ms: 90 });
        let ok = f
            .auth
            .login(
                LoginAttempt::Password("a long enough password".into()),
                PEER,
                at(100),
            )
            .await
            .unwrap();
        assert_eq!(ok.principal.role, Role::Owner);
        assert_eq!(
            ok.max_age_s,
            HubConfig::defaults().unwrap().auth.session_ttl_ms / 1_000
        );
        assert_eq!(
            f.auth.metrics().logins.get(LoginMethod::Password as usize),
            1
        );
    }

    #[tokio::test]
    async fn a_session_opened_with_a_token_ends_when_the_token_is_revoked() {
        let f = fixture("token-session");
        let (record, token) = f
            .auth
            .create_token("phone".into(), Role::Viewer, at(0))
            .await
            .unwrap();
        let login = f
            .auth
            .login(LoginAttempt::Token(token), PEER, at(0))
            .await
            .unwrap();
        assert_eq!(login.principal.role, Role::Viewer);
        let session = Presented {
            bearer: None,
            session: Some(&login.cookie),
        };
        assert!(f.auth.authenticate(session, PEER, at(1)).is_ok());
        assert_eq!(f.auth.tokens(), vec![record.clone()]);
        assert!(f.auth.revoke_token(record.id).await.unwrap().is_some());
        assert_eq!(
            f.auth.authenticate(session, PEER, at(2)),
            Err(Denied::Unauthenticated)
        );
    }

    #[test]
    fn first_start_creates_the_file_with_a_link_once() {
        let f = fixture("first");
        let mut config = HubConfig::defaults().unwrap().auth;
        config.credentials_path = f.file.path().to_path_buf();
        let FirstStart::Created { code } = prepare(&config, at(0)).unwrap() else {
            panic!("expected a new file");
        };
        assert_eq!(prepare(&config, at(1)).unwrap(), FirstStart::Existing);
        let url = login_url("0.0.0.0:8080".parse().unwrap(), false, &code);
        assert_eq!(url, format!("http://127.0.0.1:8080/login.html#code={code}"));
    }
}
