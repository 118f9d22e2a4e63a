//! tether's domain: the types every other crate agrees on and the rules that make them valid.
//! Nothing here does I/O beyond asking the OS for random bytes; parsing happens once, at the edge,
//! and everything past a handler works with these types instead of raw strings.

pub mod apply_guide;
mod base62;
pub mod credential;
pub mod ids;
pub mod names;
pub mod pipeline;
pub mod platform;
pub mod role;
pub mod secret;
pub mod status;

pub use credential::{
    CredentialState, CredentialsVersion, Generation, RefreshMode, Rollout, RolloutState,
    REFRESH_CONFIRMATION,
};
pub use ids::{ApiTokenId, RotationId, RunId, RunnerId, RunnerRef, TaskId, UserId};
pub use names::{Description, Password, RunnerName, TokenName, Username};
pub use pipeline::{EnvValue, PipelineName, RunEnd, RunState, TaskEnd, TaskName, TaskSpec};
pub use platform::Platform;
pub use role::Role;
pub use secret::{ApiToken, ClientId, ClientSecret, Pepper, Verifier};
pub use status::{derive_status, Disconnect, RunnerStatus, StatusFacts};

/// Why a value was refused. The edge attaches the field name; this says what is wrong with the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    pub fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

/// Fills `buf` from the OS CSPRNG. Failing to get randomness is not recoverable for a credential service.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    #[expect(
        clippy::expect_used,
        reason = "no safe way to continue without OS randomness"
    )]
    getrandom::getrandom(&mut buf).expect("the OS random number generator failed");
    buf
}

/// A random 25-character password (144 bits) for generated admin logins.
pub fn base62_password() -> String {
    base62::encode(&random_bytes::<18>(), 25)
}
