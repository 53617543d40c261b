//! Who is calling: the request context built from `X-Auth-Token`.

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

    /// May write in its project (`member` or `admin`), as Glance's default policy.
    pub fn can_write(&self) -> bool {
        self.is_admin() || self.has_role("member")
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
