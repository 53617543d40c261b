//! Who is calling: the request context built from `X-Auth-Token`, by static
//! tokens from the config or by Keystone.

use std::collections::HashMap;

use crate::config::StaticToken;

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// User id.
    pub user_id: String,
    /// Project id.
    pub project_id: String,
    /// Roles in that project.
    pub roles: Vec<String>,
}

impl Context {
    /// Holds the `admin` role.
    pub fn is_admin(&self) -> bool {
        self.has_role("admin")
    }

    /// Holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// Maps tokens to callers (auth mode `static`).
#[derive(Debug, Clone, Default)]
pub struct StaticAuth {
    tokens: HashMap<String, Context>,
}

impl StaticAuth {
    /// From the configured tokens.
    pub fn new(tokens: &[StaticToken]) -> StaticAuth {
        StaticAuth {
            tokens: tokens
                .iter()
                .map(|t| {
                    (
                        t.token.clone(),
                        Context {
                            user_id: t.user_id.clone(),
                            project_id: t.project_id.clone(),
                            roles: t.roles.clone(),
                        },
                    )
                })
                .collect(),
        }
    }

    /// The caller a token stands for.
    pub fn validate(&self, token: &str) -> Option<Context> {
        self.tokens.get(token).cloned()
    }
}

/// How tokens are validated.
pub enum Authenticator {
    /// Tokens from the config file.
    Static(StaticAuth),
    /// Keystone v3.
    Keystone(Box<crate::keystone::KeystoneAuth>),
}

impl Authenticator {
    /// The validator for an auth configuration.
    pub fn new(
        config: &crate::config::AuthConfig,
        counts: crate::keystone::TokenCounts,
    ) -> Result<Authenticator, crate::keystone::KeystoneError> {
        Ok(match config {
            crate::config::AuthConfig::Static(tokens) => {
                Authenticator::Static(StaticAuth::new(tokens))
            }
            crate::config::AuthConfig::Keystone(k) => Authenticator::Keystone(Box::new(
                crate::keystone::KeystoneAuth::new(k.clone(), counts)?,
            )),
        })
    }

    /// The caller `token` stands for; `None` when it is not valid.
    /// `allow_expired`: a valid service token came with it (Keystone only).
    pub async fn validate(
        &self,
        token: &str,
        allow_expired: bool,
    ) -> Result<Option<Context>, crate::keystone::KeystoneError> {
        match self {
            Authenticator::Static(s) => Ok(s.validate(token)),
            Authenticator::Keystone(k) => k.validate(token, allow_expired).await,
        }
    }
}
