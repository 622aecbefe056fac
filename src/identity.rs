//! Who is calling, as every layer sees it: the [`Identity`] an authenticated credential becomes
//! (`auth` makes it; `admission` counts sockets per owner; `hub` checks ownership), and the
//! claim names it may hold. A leaf: it depends on no other module of the crate.

use std::collections::BTreeSet;

/// Claims a credential may carry.
pub const READ_ONLY: &str = "READ_ONLY";
pub const EVENTS_PUBLISH: &str = "EVENTS_PUBLISH";
/// The admin routes: list and disconnect clients, per-channel stats.
pub const EVENTS_ADMIN: &str = "EVENTS_ADMIN";
/// The role that holds every claim.
pub const SUPER_USER: &str = "SUPER_USER";
pub const KNOWN_CLAIMS: [&str; 3] = [READ_ONLY, EVENTS_PUBLISH, EVENTS_ADMIN];

/// How the caller proved who they are. Part of the identity, so a JWT `sub` can never pose as
/// an API key's owner of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Jwt,
    ApiKey,
}

/// An authenticated caller: the owner of the sockets it opens, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    pub method: Method,
    claims: BTreeSet<String>,
    super_user: bool,
}

/// Who owns a socket: the same subject through another method is someone else.
pub type Owner = (Method, String);

/// A credential without the claim a route needs (`403`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this credential lacks the {0} claim")]
pub struct MissingClaim(pub &'static str);

impl Identity {
    pub fn new(
        subject: String,
        method: Method,
        claims: impl IntoIterator<Item = String>,
        super_user: bool,
    ) -> Self {
        Self {
            subject,
            method,
            claims: claims.into_iter().collect(),
            super_user,
        }
    }

    pub fn has_claim(&self, claim: &str) -> bool {
        self.super_user || self.claims.contains(claim)
    }

    /// An identity with no claims, for unit tests elsewhere in the crate.
    #[cfg(test)]
    pub fn for_tests(subject: &str) -> Self {
        Self::new(subject.to_owned(), Method::Jwt, [], false)
    }

    /// `403` unless the identity holds `claim`.
    pub fn require(&self, claim: &'static str) -> Result<(), MissingClaim> {
        if self.has_claim(claim) {
            Ok(())
        } else {
            Err(MissingClaim(claim))
        }
    }

    /// The owner of the sockets this identity opens.
    pub fn owner(&self) -> Owner {
        (self.method, self.subject.clone())
    }
}
