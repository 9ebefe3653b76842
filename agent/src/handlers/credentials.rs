//! The credential routes, outside the bearer-token layer (they have their
//! own rules, `crate::credentials`):
//!
//! - `GET /v1/credentials/aws/{name}`: the ECS container-credentials
//!   protocol. `Authorization` is the raw token of an env the session is
//!   exposed in, or the helper token (no `Bearer`); 401 for a missing or
//!   wrong one (before anything is said about the session), 404 for an
//!   unknown session, 503 `session_expired` past its expiry.
//! - `GET /` and `GET /computeMetadata/v1/...`: the GCE metadata protocol
//!   for the `gcp` session, answered only to connections whose peer runs as
//!   the node user (403 otherwise), with a loopback or metadata `Host`, no
//!   `X-Forwarded-For`, and `Metadata-Flavor: Google` on the request (403
//!   otherwise, as on GCE); every answer carries `Metadata-Flavor: Google`.
//!
//! No answer but the 200s carries a credential; nothing is logged.

use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::credentials::gce_metadata::{self, Answer};
use crate::credentials::peer::{is_node_user, PeerInfo};
use crate::credentials::{aws_ecs, CredError};
use crate::error::{ApiError, ApiPath, ApiQuery};
use crate::state::AppState;

impl From<CredError> for ApiError {
    fn from(e: CredError) -> Self {
        let (status, code) = match &e {
            CredError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            CredError::Unknown(_) | CredError::WrongKind { .. } | CredError::NoGcp => {
                (StatusCode::NOT_FOUND, "unknown_secret")
            }
            CredError::Expired { .. } => (StatusCode::SERVICE_UNAVAILABLE, "session_expired"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// `GET /v1/credentials/aws/{name}`.
pub(crate) async fn aws(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .map_or(&b""[..], HeaderValue::as_bytes);
    let minted = state.inner.credentials.aws(&name, token)?;
    let mut resp = Json(aws_ecs::ecs_document(&minted)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

const FLAVOR: &str = "metadata-flavor";

/// A metadata answer: `resp` with `Metadata-Flavor: Google`.
fn flavored(resp: impl IntoResponse) -> Response {
    let mut resp = resp.into_response();
    resp.headers_mut()
        .insert(FLAVOR, HeaderValue::from_static("Google"));
    resp
}

fn forbidden(message: &str) -> Response {
    flavored(ApiError::new(StatusCode::FORBIDDEN, "forbidden", message))
}

/// Whether the `Host` names this machine's loopback or the metadata server.
fn local_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name.eq_ignore_ascii_case("metadata.google.internal")
        || name.eq_ignore_ascii_case("metadata")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The checks every metadata request passes; `Err` says why it is a 403.
fn admit(
    peer: Option<&PeerInfo>,
    headers: &HeaderMap,
    need_flavor: bool,
) -> Result<(), &'static str> {
    if !is_node_user(peer) {
        return Err("the metadata server answers the node user's own processes only");
    }
    if !local_host(headers) || headers.contains_key("x-forwarded-for") {
        return Err("request refused (Host or forwarding headers)");
    }
    let flavor = headers.get(FLAVOR).and_then(|v| v.to_str().ok());
    if need_flavor && flavor != Some("Google") {
        return Err("missing Metadata-Flavor: Google header");
    }
    Ok(())
}

/// `GET /`: google-auth's ping.
pub(crate) async fn metadata_root(
    peer: Option<Extension<PeerInfo>>,
    headers: HeaderMap,
) -> Response {
    match admit(peer.as_deref(), &headers, false) {
        Ok(()) => flavored("computeMetadata/\n"),
        Err(why) => forbidden(why),
    }
}

/// `GET /computeMetadata/v1/{*path}`.
pub(crate) async fn metadata(
    State(state): State<AppState>,
    peer: Option<Extension<PeerInfo>>,
    ApiPath(path): ApiPath<String>,
    ApiQuery(params): ApiQuery<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    if let Err(why) = admit(peer.as_deref(), &headers, true) {
        return forbidden(why);
    }
    let (_name, minted) = match state.inner.credentials.gcp() {
        Ok(found) => found,
        Err(e) => return flavored(ApiError::from(e)),
    };
    let recursive = params
        .iter()
        .any(|(k, v)| k == "recursive" && v.eq_ignore_ascii_case("true"));
    match gce_metadata::answer(&path, recursive, &minted) {
        Answer::Json(doc) => flavored(Json(doc)),
        Answer::Text(text) => flavored(([(header::CONTENT_TYPE, "application/text")], text)),
        Answer::NotFound => flavored(ApiError::not_found("not_found", "no such metadata")),
    }
}
