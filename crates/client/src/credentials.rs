//! A runner's credential lifecycle: refresh the client secret, reveal it again, list the
//! generations and end an overlap early. Secrets come back in the answer bodies only; no error
//! built here carries one.

use reqwest::Method;
use tether_protocol::api::{
    Credentials, RefreshRequest, RefreshResponse, RevealResponse, RevokePreviousRequest,
    RevokePreviousResponse, RotationStep, RotationStepRequest, Run,
};

use crate::{Client, ClientError};

/// The problem code of a refresh refused because runs are in progress on the runner.
pub const RUNS_IN_PROGRESS: &str = "runs_in_progress";
/// The problem code of a reveal after the reveal window has closed.
pub const REVEAL_WINDOW_CLOSED: &str = "reveal_window_closed";

impl Client {
    /// Makes a new client secret (generation n+1). A 409 `runs_in_progress` answer lists the runs
    /// that would be interrupted: read them with [`ClientError::runs_in_progress`].
    pub async fn refresh_credentials(
        &self,
        runner: &str,
        req: &RefreshRequest,
    ) -> Result<RefreshResponse, ClientError> {
        let path = Self::segment_path("api/v1/runners", runner, "/credentials/refresh");
        self.post(&path, req).await
    }

    /// The newest secret again, while its reveal window is open (410 `reveal_window_closed` after).
    pub async fn reveal_credentials(&self, runner: &str) -> Result<RevealResponse, ClientError> {
        let path = Self::segment_path("api/v1/runners", runner, "/credentials/reveal");
        self.post(&path, &serde_json::json!({})).await
    }

    /// The runner's client id and credential generations (never a secret).
    pub async fn credentials(&self, runner: &str) -> Result<Credentials, ClientError> {
        let path = Self::segment_path("api/v1/runners", runner, "/credentials");
        self.send(self.request(Method::GET, &path)).await
    }

    /// Revokes every generation older than the active one, closing sessions still using them
    /// (the request has no body). The answer says what was revoked.
    pub async fn revoke_previous(
        &self,
        runner: &str,
    ) -> Result<RevokePreviousResponse, ClientError> {
        let path = Self::segment_path("api/v1/runners", runner, "/credentials/revoke-previous");
        self.send(self.request(Method::POST, &path)).await
    }

    /// Like [`Client::revoke_previous`], as a step of the rotation `rotation_id`.
    pub async fn revoke_previous_in(
        &self,
        runner: &str,
        rotation_id: &str,
    ) -> Result<RevokePreviousResponse, ClientError> {
        let path = Self::segment_path("api/v1/runners", runner, "/credentials/revoke-previous");
        let req = RevokePreviousRequest {
            rotation_id: Some(rotation_id.to_owned()),
        };
        self.post(&path, &req).await
    }

    /// Records a step of a rotation in the audit log; `started` (with no id) returns a new id.
    pub async fn rotation_step(
        &self,
        runner: &str,
        step: &str,
        rotation_id: Option<&str>,
        detail: serde_json::Value,
    ) -> Result<RotationStep, ClientError> {
        let path = Self::segment_path("api/v1/runners", runner, "/rotations");
        let req = RotationStepRequest {
            step: step.to_owned(),
            rotation_id: rotation_id.map(str::to_owned),
            detail: Some(detail),
        };
        self.post(&path, &req).await
    }
}

impl ClientError {
    /// The runs a refresh was refused for, when this is a `runs_in_progress` problem.
    pub fn runs_in_progress(&self) -> Option<Vec<Run>> {
        if self.code() != Some(RUNS_IN_PROGRESS) {
            return None;
        }
        Some(self.problem_member("runs").unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_from_body;

    const RUN: &str = r#"{"id":"0190f5c2-0000-7000-8000-000000000001","pipeline":"nightly",
        "runner":"prod-eu-1","runner_id":"r1","state":"running","reason":null,"tasks":[],
        "created_at":"2026-01-02T03:04:05Z","created_by":"user:alice",
        "started_at":"2026-01-02T03:04:06Z","finished_at":null}"#;

    #[test]
    fn runs_in_progress_keeps_the_runs_of_the_problem_document() {
        let body = format!(
            r#"{{"type":"urn:tether:problem:runs_in_progress","title":"Conflict","status":409,
            "detail":"1 run is in progress on runner 'prod-eu-1'","code":"runs_in_progress",
            "runs":[{RUN}]}}"#
        );
        let err = error_from_body(409, &body);
        assert_eq!(err.code(), Some(RUNS_IN_PROGRESS));
        let runs = err.runs_in_progress().expect("runs");
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].pipeline, "nightly");
        assert!(runs[0].started_at.is_some());
        assert!(
            err.to_string().contains("runs_in_progress") && err.to_string().contains("409"),
            "{err}"
        );
    }

    #[test]
    fn other_problems_have_no_runs() {
        let err = error_from_body(
            410,
            r#"{"type":"urn:tether:problem:reveal_window_closed","title":"Gone","status":410,
            "detail":"the reveal window has closed","code":"reveal_window_closed"}"#,
        );
        assert_eq!(err.code(), Some(REVEAL_WINDOW_CLOSED));
        assert!(err.runs_in_progress().is_none());
        assert!(err.problem_member::<Vec<Run>>("runs").is_none());
        // An OAuth error and plain text stay what they were.
        assert!(matches!(
            error_from_body(401, r#"{"error":"invalid_client"}"#),
            ClientError::OAuth { status: 401, .. }
        ));
        assert!(matches!(
            error_from_body(502, ""),
            ClientError::Http { status: 502, ref body } if body == "Bad Gateway"
        ));
    }

    #[test]
    fn credential_paths_encode_the_runner() {
        assert_eq!(
            Client::segment_path("api/v1/runners", "a/b", "/credentials/refresh"),
            "api/v1/runners/a%2Fb/credentials/refresh"
        );
    }
}
