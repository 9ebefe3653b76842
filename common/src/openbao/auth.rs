//! Authentication calls through the one [`Client`]: an AppRole login (a
//! node's batch token), unwrapping a response-wrapped secret (a node's
//! secret_id), and a token's own lookup (the user's token at `login`).
//! Tokens and secret_ids travel in headers and zeroed bodies only; what
//! the server says about a token is escaped before anyone prints it.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{Call, Client, Error, Method, Retry, StatusCode};
use crate::secret_value::{SecretText, SecretValue};
use crate::text::{escape_text, FOREIGN_TEXT_MAX};

/// A token from a login. No `Debug`: it holds the token.
pub struct Login {
    pub token: SecretText,
    /// Its TTL, seconds.
    pub ttl: u64,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// What the server says about a token (no token material), escaped.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenInfo {
    pub display_name: Option<String>,
    pub policies: Vec<String>,
    pub ttl: Option<u64>,
}

impl Client {
    /// Log in with an AppRole at `auth/<auth_mount>/login`: a fresh token.
    /// Rounds in which nodes answered "try another" (e.g. OpenBao's
    /// `500 transaction commit failed` to logins of nodes sharing one
    /// use-limited secret_id) are repeated as `retry` says.
    pub async fn approle_login(
        &self,
        auth_mount: &str,
        role_id: &str,
        secret_id: &str,
        retry: &Retry,
    ) -> Result<Login, Error> {
        #[derive(Deserialize)]
        struct Body {
            auth: Option<Auth>,
        }
        #[derive(Deserialize)]
        struct Auth {
            client_token: Option<SecretValue>,
            #[serde(default)]
            lease_duration: u64,
        }
        #[derive(Serialize)]
        struct Request<'a> {
            role_id: &'a str,
            secret_id: &'a str,
        }
        let op = "log in with the cluster's AppRole";
        let body = Zeroizing::new(
            serde_json::to_vec(&Request { role_id, secret_id }).expect("JSON serializes"),
        );
        let path = format!("auth/{auth_mount}/login");
        let call = Call::new(op, Method::POST, &path).body(&body);
        let answer = self.send_retrying(&call, retry).await?;
        if !answer.status.is_success() {
            return Err(answer.fail(op));
        }
        let auth = answer.parse::<Body>(op).ok().and_then(|b| b.auth);
        match auth {
            Some(Auth {
                client_token: Some(token),
                lease_duration,
            }) if token.expose_str().is_some() => Ok(Login {
                token: SecretText::new(token.expose_str().unwrap_or_default().to_owned()),
                ttl: lease_duration,
            }),
            _ => Err(Error::Decode {
                op: op.into(),
                url: answer.url.clone(),
            }),
        }
    }

    /// Unwrap the response wrapped by `wrapping_token`: its `data`, or
    /// `None` when the store refuses the token (400/403: already unwrapped,
    /// or its TTL ran out).
    pub async fn unwrap(
        &self,
        op: &str,
        wrapping_token: &str,
    ) -> Result<Option<SecretValue>, Error> {
        #[derive(Deserialize)]
        struct Body {
            #[serde(default)]
            data: Option<SecretValue>,
        }
        let call = Call::new(op, Method::POST, "sys/wrapping/unwrap").token(wrapping_token);
        let answer = self.send(&call).await?;
        if answer.status == StatusCode::BAD_REQUEST || answer.status == StatusCode::FORBIDDEN {
            return Ok(None);
        }
        if !answer.status.is_success() {
            return Err(answer.fail(op));
        }
        let body: Body = answer.parse(op)?;
        Ok(Some(body.data.unwrap_or_else(|| {
            SecretValue::new(serde_json::Value::Null)
        })))
    }

    /// `GET auth/token/lookup-self`: what the store says about `token`
    /// (refused: 403, or 401 on some servers).
    pub async fn lookup_self(&self, token: &str) -> Result<TokenInfo, Error> {
        #[derive(Deserialize)]
        struct Body {
            data: TokenInfo,
        }
        let op = "token lookup";
        let call = Call::new(op, Method::GET, "auth/token/lookup-self").token(token);
        let answer = self.send(&call).await?;
        if !answer.status.is_success() {
            return Err(answer.fail(op));
        }
        let info = answer.parse::<Body>(op)?.data;
        Ok(TokenInfo {
            display_name: info.display_name.map(|n| escape_text(&n, FOREIGN_TEXT_MAX)),
            policies: info
                .policies
                .iter()
                .map(|p| escape_text(p, FOREIGN_TEXT_MAX))
                .collect(),
            ttl: info.ttl,
        })
    }
}
