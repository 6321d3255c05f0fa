//! The services' error answer: a status and `{"error": "..."}`, with an
//! optional field that says more (the metadata manager's `quota`).
//!
//! A 503 answer carries `Retry-After: 2`; a 413 answer carries
//! `Connection: close` (the rest of an oversized body is never read, so
//! the connection cannot carry another request: a keep-alive client that
//! reused it would see its next request fail).

use axum::extract::rejection::JsonRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

/// The JSON body of every error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// More about the error, by name (e.g. `quota`), flattened into the body.
    #[serde(flatten, default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub detail: serde_json::Map<String, serde_json::Value>,
}

/// An error answer: status, a message for the client and, for some
/// errors, a named field that says more.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    detail: Option<(&'static str, serde_json::Value)>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            detail: None,
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401: no credential.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }

    /// 500 (say what failed in the log, not to the client).
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// Adds the field `name` (serialized `value`) to the body.
    pub fn with_detail(mut self, name: &'static str, value: impl Serialize) -> ApiError {
        match serde_json::to_value(value) {
            Ok(v) => self.detail = Some((name, v)),
            Err(e) => tracing::error!(error = %e, field = name, "error detail does not serialize"),
        }
        self
    }

    /// The caller's verified identity from what the TLS layer's
    /// verification said: `Ok(None)` (no client certificate) is 401,
    /// `Err` (attributes that do not verify) 403.
    pub fn credential<T, E: std::fmt::Display>(
        verified: Result<Option<T>, E>,
    ) -> Result<T, ApiError> {
        match verified {
            Ok(Some(id)) => Ok(id),
            Ok(None) => Err(ApiError::unauthorized(
                "a proxy credential with VO attributes is required (client certificate)",
            )),
            Err(e) => Err(ApiError::forbidden(format!("credential refused: {e}"))),
        }
    }

    /// The body this error is answered with.
    pub fn body(&self) -> ErrorBody {
        let mut detail = serde_json::Map::new();
        if let Some((k, v)) = &self.detail {
            detail.insert((*k).to_owned(), v.clone());
        }
        ErrorBody {
            error: self.message.clone(),
            detail,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut r = (status, Json(self.body())).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        }
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}

impl From<JsonRejection> for ApiError {
    /// A body over the size limit is 413; every other malformed body 400.
    fn from(e: JsonRejection) -> ApiError {
        let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, format!("bad request body: {}", e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_and_headers() {
        let e = ApiError::forbidden("no").with_detail("quota", serde_json::json!({"max": 1}));
        assert_eq!(
            serde_json::to_string(&e.body()).unwrap(),
            r#"{"error":"no","quota":{"max":1}}"#
        );
        let plain = ApiError::bad_request("bad").body();
        assert_eq!(serde_json::to_string(&plain).unwrap(), r#"{"error":"bad"}"#);
        let r = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        let r = ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "big").into_response();
        assert_eq!(r.headers()[header::CONNECTION], "close");
        assert_eq!(
            ApiError::credential::<(), String>(Ok(None))
                .unwrap_err()
                .status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            ApiError::credential::<(), String>(Err("expired".into()))
                .unwrap_err()
                .status,
            StatusCode::FORBIDDEN
        );
    }
}
