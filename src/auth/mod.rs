//! Who may use the hub's web side, and how they prove it (SECURITY.md).
//! The owner logs in with a password or a one-time link and gets a browser
//! session; scripts and Prometheus present API tokens; every request is
//! checked against the [`policy`] (Host and Origin) first. Roles are
//! ordered: a [`Role::Viewer`] reads (dashboard, API reads, `/ws` without
//! commands), a [`Role::Operator`] also commands devices, the
//! [`Role::Owner`] also manages tokens.
//!
//! [`secret`], [`store`], [`sessions`], [`throttle`] and [`policy`] are
//! plain types (time passed in); [`Auth`] ties them to the credentials
//! file and the clock for the HTTP layer.

mod gate;
pub mod policy;
pub mod secret;
pub mod sessions;
pub mod store;
pub mod throttle;

use serde::{Deserialize, Serialize};

pub use gate::{
    login_url, prepare, Auth, AuthCollector, AuthMetrics, Denied, DenyReason, FirstStart, LoggedIn,
    LoginAttempt, LoginMethod, Presented, Principal, Via, SESSION_COOKIE,
};

/// What a user or token may do; later roles may do everything earlier
/// ones may.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::EnumIter,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Role {
    /// Dashboard, API reads, `/metrics`, `/ws` without commands.
    Viewer,
    /// Also sends commands to devices.
    Operator,
    /// Also manages API tokens.
    Owner,
}

impl Role {
    /// `viewer`, `operator` or `owner`.
    pub fn name(self) -> &'static str {
        self.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_named() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Owner);
        assert_eq!(Role::Operator.name(), "operator");
        assert_eq!("viewer".parse::<Role>().ok(), Some(Role::Viewer));
        assert!("admin".parse::<Role>().is_err());
        assert_eq!(serde_json::to_string(&Role::Owner).unwrap(), "\"owner\"");
    }
}
