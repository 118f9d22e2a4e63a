//! Pipelines and runs: define pipelines, start runs on a runner, read their state and logs.
//! Same conventions as the runner calls in `lib.rs`: user-typed names and ids are one encoded segment.

use reqwest::Method;
use tether_protocol::api::{
    CreateRunRequest, Pipeline, PipelineList, PutPipelineRequest, Run, RunList,
};

use crate::{Client, ClientError};

impl Client {
    /// Creates or replaces a pipeline (`PUT`, so applying the same file twice is a no-op).
    pub async fn put_pipeline(
        &self,
        name: &str,
        req: &PutPipelineRequest,
    ) -> Result<Pipeline, ClientError> {
        let path = Self::segment_path("api/v1/pipelines", name, "");
        self.send(self.request(Method::PUT, &path).json(req)).await
    }

    pub async fn list_pipelines(&self) -> Result<PipelineList, ClientError> {
        self.send(self.request(Method::GET, "api/v1/pipelines"))
            .await
    }

    pub async fn get_pipeline(&self, name: &str) -> Result<Pipeline, ClientError> {
        let path = Self::segment_path("api/v1/pipelines", name, "");
        self.send(self.request(Method::GET, &path)).await
    }

    pub async fn delete_pipeline(&self, name: &str) -> Result<(), ClientError> {
        let path = Self::segment_path("api/v1/pipelines", name, "");
        self.execute(self.request(Method::DELETE, &path))
            .await
            .map(|_| ())
    }

    /// Queues a run of `pipeline` on `runner` (its id or name).
    pub async fn create_run(&self, pipeline: &str, runner: &str) -> Result<Run, ClientError> {
        let path = Self::segment_path("api/v1/pipelines", pipeline, "/runs");
        self.post(
            &path,
            &CreateRunRequest {
                runner: runner.to_owned(),
            },
        )
        .await
    }

    pub async fn get_run(&self, id: &str) -> Result<Run, ClientError> {
        let path = Self::segment_path("api/v1/runs", id, "");
        self.send(self.request(Method::GET, &path)).await
    }

    /// A page of the run's combined log from byte `offset` on (the server's default page, 1 MiB),
    /// as raw bytes; empty at the end. The log only grows, so a reader passes the number of bytes
    /// it has already read and asks again until an empty answer; count and write bytes, not
    /// decoded text.
    pub async fn run_log_bytes(&self, id: &str, offset: u64) -> Result<Vec<u8>, ClientError> {
        let path = Self::segment_path("api/v1/runs", id, "/logs");
        let req = self
            .request(Method::GET, &path)
            .query(&[("offset", offset)]);
        let resp = self.execute(req).await?;
        resp.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// The run's combined log from byte `offset` on, as text (invalid UTF-8 is replaced).
    pub async fn run_logs(&self, id: &str, offset: u64) -> Result<String, ClientError> {
        let bytes = self.run_log_bytes(id, offset).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Asks the control plane to cancel a run; the answer is the run as it is now (cancelling
    /// running tasks takes a moment, so poll `get_run` for the final state).
    pub async fn cancel_run(&self, id: &str) -> Result<Run, ClientError> {
        let path = Self::segment_path("api/v1/runs", id, "/cancel");
        self.post(&path, &serde_json::json!({})).await
    }

    /// A runner's runs, newest first; `state` is one of queued, running, succeeded, failed,
    /// cancelled, lost.
    pub async fn runner_runs(
        &self,
        runner: &str,
        state: Option<&str>,
        limit: Option<u32>,
    ) -> Result<RunList, ClientError> {
        let path = Self::segment_path("api/v1/runners", runner, "/runs");
        let mut req = self.request(Method::GET, &path);
        if let Some(s) = state {
            req = req.query(&[("state", s)]);
        }
        if let Some(l) = limit {
            req = req.query(&[("limit", l.to_string())]);
        }
        self.send(req).await
    }
}

#[cfg(test)]
mod tests {
    use crate::Client;

    #[test]
    fn ids_and_names_are_one_segment() {
        assert_eq!(
            Client::segment_path("api/v1/pipelines", "a/b", "/runs"),
            "api/v1/pipelines/a%2Fb/runs"
        );
        assert_eq!(
            Client::segment_path("api/v1/runs", "../x", "/logs"),
            "api/v1/runs/..%2Fx/logs"
        );
    }
}
