//! The API's errors: RFC 7807 `application/problem+json` with the original's type URIs,
//! titles and statuses (manager-inventory §1.2). Every error a handler can return is one of
//! these; nothing else reaches the client.

use serde_json::{json, Value};
use warp::http::StatusCode;

macro_rules! problems {
    ($($variant:ident => ($status:expr, $slug:literal, $title:literal)),+ $(,)?) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Problem { $($variant),+ }

        impl Problem {
            pub fn status(self) -> StatusCode {
                match self { $(Problem::$variant => $status),+ }
            }
            pub fn type_uri(self) -> String {
                match self { $(Problem::$variant => format!("https://api.backend.ai/probs/{}", $slug)),+ }
            }
            pub fn title(self) -> &'static str {
                match self { $(Problem::$variant => $title),+ }
            }
        }
    };
}

problems! {
    GeneralError => (StatusCode::INTERNAL_SERVER_ERROR, "general-error", "General Backend API Error."),
    GenericNotFound => (StatusCode::NOT_FOUND, "generic-not-found", "Unknown URL path."),
    GenericBadRequest => (StatusCode::BAD_REQUEST, "generic-bad-request", "Bad request."),
    GenericForbidden => (StatusCode::FORBIDDEN, "generic-forbidden", "Forbidden operation."),
    MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "HTTP Method Not Allowed."),
    InternalServerError => (StatusCode::INTERNAL_SERVER_ERROR, "internal-server-error", "Internal server error."),
    ServerMisconfigured => (StatusCode::INTERNAL_SERVER_ERROR, "server-misconfigured", "Servier misconfigured."),
    ServiceUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "service-unavailable", "Serivce unavailable."),
    QueryNotImplemented => (StatusCode::SERVICE_UNAVAILABLE, "not-implemented", "This API query is not implemented."),
    InvalidAuthParameters => (StatusCode::BAD_REQUEST, "invalid-auth-params", "Missing or invalid authorization parameters."),
    AuthorizationFailed => (StatusCode::UNAUTHORIZED, "auth-failed", "Credential/signature mismatch."),
    InvalidApiParameters => (StatusCode::BAD_REQUEST, "invalid-api-params", "Missing or invalid API parameters."),
    GraphQlError => (StatusCode::BAD_REQUEST, "graphql-error", "GraphQL-generated error."),
    InstanceNotFound => (StatusCode::NOT_FOUND, "instance-not-found", "No such instance."),
    ImageNotFound => (StatusCode::NOT_FOUND, "image-not-found", "No such environment image."),
    KernelNotFound => (StatusCode::NOT_FOUND, "kernel-not-found", "No such kernel."),
    AppNotFound => (StatusCode::NOT_FOUND, "app-not-found", "No such app service provided by the session."),
    KernelAlreadyExists => (StatusCode::BAD_REQUEST, "kernel-already-exists", "The kernel already exists with a different runtime type (language)."),
    VFolderCreationFailed => (StatusCode::BAD_REQUEST, "vfolder-creation-failed", "Virtual folder creation has failed."),
    VFolderNotFound => (StatusCode::NOT_FOUND, "vfolder-not-found", "No such virtual folder."),
    VFolderAlreadyExists => (StatusCode::BAD_REQUEST, "vfolder-already-exists", "The virtual folder already exists with the same name."),
    QuotaExceeded => (StatusCode::PRECONDITION_FAILED, "quota-exceeded", "You have reached your resource limit."),
    RateLimitExceeded => (StatusCode::TOO_MANY_REQUESTS, "rate-limit-exceeded", "You have reached your API query rate limit."),
    InstanceNotAvailable => (StatusCode::SERVICE_UNAVAILABLE, "instance-not-available", "There is no available instance."),
    // Not in the original (its agents failed differently): the Docker engine does not answer.
    ContainerEngineUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "container-engine-unavailable", "The container engine is unavailable."),
    ServerFrozen => (StatusCode::SERVICE_UNAVAILABLE, "server-frozen", "The server is frozen due to maintenance. Please try again later."),
    KernelCreationFailed => (StatusCode::INTERNAL_SERVER_ERROR, "kernel-creation-failed", "Kernel creation has failed."),
    KernelDestructionFailed => (StatusCode::INTERNAL_SERVER_ERROR, "kernel-destruction-failed", "Kernel destruction has failed."),
    KernelRestartFailed => (StatusCode::INTERNAL_SERVER_ERROR, "kernel-restart-failed", "Kernel restart has failed."),
    KernelExecutionFailed => (StatusCode::INTERNAL_SERVER_ERROR, "kernel-execution-failed", "Executing user code in the kernel has failed."),
    // Not in the original, which answered a bare 500 here.
    StorageFull => (StatusCode::INSUFFICIENT_STORAGE, "storage-full", "The server's storage is full."),
}

/// An API error: a problem, optional detail appended to the title, optional `data`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub problem: Problem,
    pub detail: Option<String>,
    pub data: Option<Value>,
    /// Overrides the problem's status where HTTP has a more precise code (413, say).
    pub status: Option<StatusCode>,
}

impl ApiError {
    pub fn new(problem: Problem) -> Self {
        ApiError {
            problem,
            detail: None,
            data: None,
            status: None,
        }
    }

    pub fn msg(problem: Problem, detail: impl Into<String>) -> Self {
        ApiError {
            detail: Some(detail.into()),
            ..ApiError::new(problem)
        }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or_else(|| self.problem.status())
    }

    pub fn body(&self) -> Value {
        let title = match &self.detail {
            Some(d) => format!("{} ({})", self.problem.title(), d),
            None => self.problem.title().to_owned(),
        };
        let mut body = json!({"type": self.problem.type_uri(), "title": title});
        if let Some(data) = &self.data {
            body["data"] = data.clone();
        }
        body
    }

    /// An unexpected failure: logged in full here, reported to the client without internals.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!("{context}: {err}");
        ApiError::new(Problem::InternalServerError)
    }

    pub fn bad_params(detail: impl Into<String>) -> Self {
        ApiError::msg(Problem::InvalidApiParameters, detail)
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        if e.is_disk_full() {
            tracing::error!("database: {e}");
            return ApiError::disk_full();
        }
        ApiError::internal("database", e)
    }
}

impl ApiError {
    /// A write refused because the database's disk is full: nothing was changed.
    pub fn disk_full() -> Self {
        ApiError::msg(
            Problem::StorageFull,
            "the disk that holds the database is full, so nothing was changed; an operator must free space",
        )
    }
}

/// An agent error as the API reports it for operation `problem`.
pub fn agent_error(problem: Problem, e: crate::agent::AgentError) -> ApiError {
    use crate::agent::AgentError;
    match e {
        AgentError::NotFound(_) => ApiError::new(Problem::KernelNotFound),
        AgentError::InvalidInput(m) => ApiError::bad_params(m),
        AgentError::Timeout(m) => {
            ApiError::msg(problem, "TIMEOUT").with_data(json!({"agent-details": m}))
        }
        AgentError::Failure(m) => {
            ApiError::msg(problem, "FAILURE").with_data(json!({"agent-details": m}))
        }
    }
}

/// The registry's errors, as the API reports them.
impl From<crate::registry::RegistryError> for ApiError {
    fn from(e: crate::registry::RegistryError) -> Self {
        use crate::registry::{Operation, RegistryError};
        match e {
            RegistryError::Store(e) => e.into(),
            e @ RegistryError::NotRunning { .. } => {
                ApiError::bad_params(e.to_string()).with_status(StatusCode::CONFLICT)
            }
            e @ RegistryError::AgentUnreachable(_) => {
                ApiError::msg(Problem::InstanceNotAvailable, e.to_string())
            }
            RegistryError::Agent { op, source } => agent_error(
                match op {
                    Operation::Destroy => Problem::KernelDestructionFailed,
                    Operation::Restart => Problem::KernelRestartFailed,
                    Operation::Execute => Problem::KernelExecutionFailed,
                },
                source,
            ),
            e @ RegistryError::EndNotRecorded => ApiError::msg(Problem::StorageFull, e.to_string()),
        }
    }
}

impl From<crate::shared_config::SharedConfigError> for ApiError {
    fn from(e: crate::shared_config::SharedConfigError) -> Self {
        match e {
            crate::shared_config::SharedConfigError::BadKey(_) => {
                ApiError::bad_params(e.to_string())
            }
            crate::shared_config::SharedConfigError::Store(e) => e.into(),
            other => {
                tracing::error!("shared config: {other}");
                ApiError::msg(
                    Problem::ServiceUnavailable,
                    "the shared configuration store is unreachable",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_original_shape() {
        let e = ApiError::msg(Problem::InvalidApiParameters, "Malformed body");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            e.body(),
            json!({"type": "https://api.backend.ai/probs/invalid-api-params",
                   "title": "Missing or invalid API parameters. (Malformed body)"})
        );
        let q = ApiError::new(Problem::QuotaExceeded).with_data(json!({"limit": 1}));
        assert_eq!(q.status().as_u16(), 412);
        assert_eq!(q.body()["data"], json!({"limit": 1}));
    }
}
