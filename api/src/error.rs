//! ApiError: the single mapping from engine, store and auth failures to what clients see.
//!
//! Every error a client can receive has a stable `code` (documented in docs/protocol.md), an
//! HTTP status for REST, and a `retryable` flag. REST answers
//! `{"error":{"code":..,"message":..,"retryable":..}}`; WebSocket sends an `error` frame with the
//! same fields and the request's `ref`.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use actix_web::ResponseError;
use roost_engine::store::StoreError;
use roost_engine::ConversationError;
use serde::Serialize;

/// Stable error codes. Adding one is a protocol change: document it in docs/protocol.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request or frame is not valid JSON.
    MalformedJson,
    /// The frame's `type` is not one the server knows.
    UnknownType,
    /// A field is missing, has the wrong type, or has an invalid value.
    InvalidField,
    /// A WebSocket frame is larger than the frame limit.
    FrameTooLarge,
    /// A message body is larger than the body limit.
    BodyTooLarge,
    /// An HTTP request body is larger than the request limit.
    PayloadTooLarge,
    /// Binary or fragmented WebSocket frames are not supported; use text frames.
    UnsupportedFrame,
    /// The protocol version asked for is not supported.
    UnsupportedVersion,
    /// No valid credentials: missing, unknown, revoked or expired token or ticket.
    Unauthorized,
    /// Username or password is wrong (deliberately not saying which).
    InvalidCredentials,
    /// The account is disabled.
    AccountDisabled,
    /// The user may not do this.
    Forbidden,
    /// The user is not a member of the conversation.
    NotMember,
    /// The conversation, user or message does not exist (or is not visible to the caller).
    NotFound,
    /// The thing to create already exists (for example a username).
    Conflict,
    /// The group is at its member limit.
    GroupFull,
    /// The edit/recall window of the message has passed.
    EditWindowPassed,
    /// Self-registration is switched off on this server.
    RegistrationClosed,
    /// The browser origin is not in the allowlist.
    OriginNotAllowed,
    /// Too many requests; wait `retry_after_ms`.
    RateLimited,
    /// The server is busy; retry the same request (same client_msg_id) shortly.
    Overloaded,
    /// Storage is unavailable; nothing was acknowledged; retry with the same client_msg_id.
    Unavailable,
    /// The conversation lives on another node; retry (possibly on another node).
    NotOwner,
    /// Cluster admin endpoints on a node that does not run in a cluster (`cluster.enabled = false`).
    ClusterDisabled,
    /// The cluster has no leader right now (an election is under way, or too few nodes are up to
    /// elect one); retry.
    NoLeader,
    /// A bug or unexpected state on the server.
    Internal,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub retry_after_ms: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    pub fn rate_limited(retry_after_ms: u64) -> Self {
        Self {
            code: ErrorCode::RateLimited,
            message: "too many requests".into(),
            retry_after_ms: Some(retry_after_ms),
        }
    }

    pub fn unauthorized() -> Self {
        Self::new(
            ErrorCode::Unauthorized,
            "missing, invalid, expired or revoked credentials",
        )
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidField, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// Whether the same request may succeed if retried unchanged.
    pub fn retryable(&self) -> bool {
        matches!(
            self.code,
            ErrorCode::RateLimited
                | ErrorCode::Overloaded
                | ErrorCode::Unavailable
                | ErrorCode::NotOwner
                | ErrorCode::NoLeader
        )
    }

    pub fn status(&self) -> StatusCode {
        use ErrorCode::*;
        match self.code {
            MalformedJson | UnknownType | InvalidField | UnsupportedFrame | UnsupportedVersion | BodyTooLarge
            | GroupFull | EditWindowPassed => StatusCode::BAD_REQUEST,
            FrameTooLarge | PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Unauthorized | InvalidCredentials => StatusCode::UNAUTHORIZED,
            AccountDisabled | Forbidden | NotMember | RegistrationClosed | OriginNotAllowed => StatusCode::FORBIDDEN,
            NotFound | ClusterDisabled => StatusCode::NOT_FOUND,
            Conflict => StatusCode::CONFLICT,
            RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Overloaded | Unavailable | NotOwner | NoLeader => StatusCode::SERVICE_UNAVAILABLE,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            code: self.code,
            message: &self.message,
            retryable: self.retryable(),
            retry_after_ms: self.retry_after_ms,
        }
    }
}

/// The error object as serialized on the wire.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub code: ErrorCode,
    pub message: &'a str,
    pub retryable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        #[derive(Serialize)]
        struct Envelope<'a> {
            error: ErrorBody<'a>,
        }
        let mut response = HttpResponse::build(self.status());
        if let Some(ms) = self.retry_after_ms {
            response.insert_header(("Retry-After", ms.div_ceil(1000).max(1).to_string()));
        }
        response.json(Envelope { error: self.body() })
    }
}

impl From<ConversationError> for ApiError {
    fn from(error: ConversationError) -> Self {
        let message = error.to_string();
        let code = match error {
            ConversationError::NotFound(_) | ConversationError::TargetNotFound(_) => ErrorCode::NotFound,
            ConversationError::NotMember(_) => ErrorCode::NotMember,
            ConversationError::Forbidden(_) => ErrorCode::Forbidden,
            ConversationError::Invalid(_) => ErrorCode::InvalidField,
            ConversationError::BodyTooLarge { .. } => ErrorCode::BodyTooLarge,
            ConversationError::GroupFull { .. } => ErrorCode::GroupFull,
            ConversationError::EditWindowPassed(_) => ErrorCode::EditWindowPassed,
            ConversationError::NotOwner(_) => ErrorCode::NotOwner,
            ConversationError::Overloaded => ErrorCode::Overloaded,
            ConversationError::Unavailable(_) => ErrorCode::Unavailable,
            ConversationError::Internal(_) => ErrorCode::Internal,
        };
        ApiError::new(code, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::AlreadyExists { what } => ApiError::new(ErrorCode::Conflict, format!("{what} already exists")),
            StoreError::NotFound { what } => ApiError::not_found(what),
            StoreError::Unavailable(why) => {
                ApiError::new(ErrorCode::Unavailable, format!("storage unavailable: {why}"))
            }
            StoreError::Corrupt(why) => ApiError::internal(format!("storage corrupt: {why}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_stable_snake_case() {
        let json = serde_json::to_string(&ErrorCode::EditWindowPassed).expect("serializes");
        assert_eq!(json, "\"edit_window_passed\"");
        let e = ApiError::from(ConversationError::Overloaded);
        assert!(e.retryable());
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
