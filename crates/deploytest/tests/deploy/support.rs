//! Shared helpers: where the repository and the installed tools are, running them, reading files.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The repository root (this crate lives in `crates/deploytest`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A file of the repository as text.
pub fn read(rel: &str) -> String {
    let path = repo_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// One of the tools `scripts/install-deploy-tools` installs, by its repository-relative path.
/// Missing tools fail the test (never a silent skip): the deployment checks are only worth anything
/// when they run.
pub fn tool(rel: &str) -> PathBuf {
    let path = repo_root().join(rel);
    assert!(
        path.is_file(),
        "{rel} is missing: run scripts/install-deploy-tools (it installs cfn-lint and \
         kubernetes-validate into .venv and helm into .tools/helm/helm)"
    );
    path
}

pub fn cfn_lint() -> PathBuf {
    tool(".venv/bin/cfn-lint")
}

pub fn kubernetes_validate() -> PathBuf {
    tool(".venv/bin/kubernetes-validate")
}

pub fn helm_bin() -> PathBuf {
    tool(".tools/helm/helm")
}

/// Runs `cmd` with `stdin` as its input and returns what it did; panics if it could not start.
pub fn run(cmd: &mut Command, stdin: Option<&str>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(input.as_bytes())
            .unwrap_or_else(|e| panic!("cannot write to {cmd:?}: {e}"));
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("{cmd:?} did not finish: {e}"))
}

/// Panics with the command's output unless it exited 0; returns its stdout.
pub fn expect_success(what: &str, out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Looks up `path` (keys separated by `.`; list indexes as numbers) in a YAML value.
pub fn at<'a>(v: &'a serde_yaml_ng::Value, path: &str) -> &'a serde_yaml_ng::Value {
    let mut cur = v;
    for key in path.split('.') {
        cur = match key.parse::<usize>() {
            Ok(i) if cur.is_sequence() => cur.get(i),
            _ => cur.get(key),
        }
        .unwrap_or_else(|| panic!("no `{key}` (of `{path}`) in:\n{}", dump(v)));
    }
    cur
}

/// A YAML value as text, for failure messages.
pub fn dump(v: &serde_yaml_ng::Value) -> String {
    serde_yaml_ng::to_string(v).unwrap_or_else(|e| format!("<unprintable: {e}>"))
}

/// `v` as a string, or a failure naming `what`.
pub fn str_of<'a>(v: &'a serde_yaml_ng::Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {}", dump(v)))
}

/// `v` as a list, or a failure naming `what`.
pub fn seq_of<'a>(v: &'a serde_yaml_ng::Value, what: &str) -> &'a Vec<serde_yaml_ng::Value> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("{what} is not a list: {}", dump(v)))
}
