//! The agent's one error type, [`ApiError`], and the extractors whose
//! rejections are answered in its shape: every error body is
//! `{"error": CODE, "message": TEXT}` with a 4xx/5xx status. Messages name
//! paths, secrets, envs and variables, never a value: serde messages that may
//! quote the input ("invalid type: string ...") are cut to the field path.
//! The install service's errors (`InstallError`) are answered with the
//! status of their kind. Internal details of 5xx errors are logged once
//! (here, or where the install service made them) and not echoed.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use common::names::NameError;
use common::wire::ErrorBody;

use crate::envs::EnvError;
use crate::install::{InstallError, Kind, INTERNAL};

/// An error answered to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// A server-side failure: `detail` (names and paths only) is logged, a
    /// generic message is answered.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", INTERNAL)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code.to_owned(),
            message: self.message,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// The install service's errors answered with the status of their kind;
/// the code and message are the error's own (an internal failure's detail
/// was logged when it was made, and is not echoed).
impl From<InstallError> for ApiError {
    fn from(e: InstallError) -> Self {
        let status = match e.kind() {
            Kind::Invalid => StatusCode::BAD_REQUEST,
            Kind::Refused => StatusCode::FORBIDDEN,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::Full => StatusCode::CONFLICT,
            Kind::Unusable => StatusCode::UNPROCESSABLE_ENTITY,
            Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Kind::Crashed => StatusCode::BAD_GATEWAY,
            Kind::Late => StatusCode::GATEWAY_TIMEOUT,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.code(), e.message())
    }
}

/// A bad env name (`run`), answered as the install service answers one.
impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        InstallError::from(e).into()
    }
}

/// An env that cannot run a command, answered as the install service
/// answers one.
impl From<EnvError> for ApiError {
    fn from(e: EnvError) -> Self {
        InstallError::from(e).into()
    }
}

/// Cut a serde message to what cannot hold a value: the field path and the
/// kind of problem (`unknown field `x``, `missing field `y``, `invalid type`).
fn safe_serde_message(text: &str) -> String {
    // axum: "<fixed sentence>: <path>: <serde message>" (path absent at the root).
    let detail = text.split_once(": ").map_or(text, |(_, rest)| rest);
    let (path, msg) = match detail.split_once(": ") {
        Some((p, m)) if !p.contains(' ') => (Some(p), m),
        _ => (None, detail),
    };
    let kept = if msg.starts_with("unknown field")
        || msg.starts_with("missing field")
        || msg.starts_with("unknown variant")
    {
        // "unknown field `x`, expected one of ..." -> "unknown field `x`"
        msg.split(", expected").next().unwrap_or(msg).to_owned()
    } else if msg.starts_with("invalid type") {
        "invalid type".to_owned()
    } else if msg.starts_with("invalid value") {
        "invalid value".to_owned()
    } else if msg.starts_with("invalid length") {
        "invalid length".to_owned()
    } else {
        "invalid content".to_owned()
    };
    // serde's trailing " at line L column C" is position only; keep it.
    let position = msg
        .rfind(" at line ")
        .map(|i| &msg[i..])
        .filter(|tail| is_position(tail))
        .unwrap_or_default()
        .to_owned();
    let position = if kept.ends_with(&position) {
        String::new()
    } else {
        position
    };
    match path {
        Some(p) => format!("{p}: {kept}{position}"),
        None => format!("{kept}{position}"),
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        match r {
            JsonRejection::JsonDataError(e) => Self::new(
                status,
                "invalid_body",
                format!("request body: {}", safe_serde_message(&e.body_text())),
            ),
            JsonRejection::JsonSyntaxError(e) => Self::new(
                status,
                "malformed_json",
                // serde_json syntax errors carry a category and a position, never input
                format!(
                    "malformed JSON: {}",
                    e.body_text().split_once(": ").map_or("", |(_, m)| m)
                ),
            ),
            JsonRejection::MissingJsonContentType(_) => Self::new(
                status,
                "unsupported_media_type",
                "expected Content-Type: application/json",
            ),
            _ if status == StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                status,
                "body_too_large",
                "request body is larger than the agent's limit",
            ),
            other => Self::new(status, "bad_body", other.body_text()),
        }
    }
}

/// Whether `tail` is exactly ` at line N column M`.
fn is_position(tail: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    tail.strip_prefix(" at line ")
        .and_then(|rest| rest.split_once(" column "))
        .is_some_and(|(line, column)| digits(line) && digits(column))
}

/// `axum::Json` whose rejections are [`ApiError`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(rejection.into()),
        }
    }
}

/// `axum::extract::Path` whose rejections are [`ApiError`]s.
#[derive(Debug, Clone)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|r: PathRejection| {
                ApiError::new(r.status(), "invalid_path_param", r.body_text())
            })
    }
}

/// `axum::extract::Query` whose rejections are [`ApiError`]s.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|r: QueryRejection| {
                ApiError::new(
                    r.status(),
                    "invalid_query",
                    safe_serde_message(&r.body_text()),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_lose_quoted_input() {
        let m = safe_serde_message(
            "Failed to deserialize the JSON body into the target type: items[0].secret.values.k: \
             invalid type: string \"sk-secret\", expected a map at line 1 column 40",
        );
        assert_eq!(
            m,
            "items[0].secret.values.k: invalid type at line 1 column 40"
        );
        let m = safe_serde_message(
            "Failed to deserialize the JSON body into the target type: unknown field `bogus`, \
             expected one of `argv`, `timeout_secs` at line 1 column 8",
        );
        assert_eq!(m, "unknown field `bogus` at line 1 column 8");
        let m = safe_serde_message(
            "Failed to deserialize the JSON body into the target type: x: invalid value: \
             string \"a at line 1 column 2 b\", expected u8",
        );
        assert_eq!(m, "x: invalid value");
    }
}
