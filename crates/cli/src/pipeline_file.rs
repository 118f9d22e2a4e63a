//! The file `tether pipelines apply` reads: YAML (JSON is YAML too). Stricter than the API body on
//! purpose: a misspelt key (`timeout:` for `timeout_seconds:`) is an error naming it, not ignored.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::bail;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use tether_protocol::api::{EnvValue, PipelineTask, PutPipelineRequest, SecretValue};

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a pipeline: a mapping with `name:` and `tasks:`"
)]
struct PipelineFile {
    #[serde(default)]
    name: Option<String>,
    tasks: Vec<TaskFile>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a task: a mapping with `name:` and `run:`"
)]
struct TaskFile {
    name: String,
    run: Scalar,
    #[serde(default)]
    env: BTreeMap<String, FileEnv>,
    #[serde(default)]
    timeout_seconds: Option<u64>,
}

/// An environment value: a scalar, or `{secret: <value>}` for one the control plane keeps
/// encrypted, never shows again and masks in the task's log.
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "a string, an integer or a boolean (quote other values), or {secret: <value>}"
)]
enum FileEnv {
    Plain(Scalar),
    Secret { secret: Scalar },
}

impl From<FileEnv> for EnvValue {
    fn from(v: FileEnv) -> Self {
        match v {
            FileEnv::Plain(p) => EnvValue::Plain(p.0),
            FileEnv::Secret { secret } => EnvValue::Secret {
                secret: SecretValue::Value(secret.0),
            },
        }
    }
}

/// A command or environment value. YAML reads `PORT: 8080` and `run: true` as a number and a
/// boolean; they are meant as the strings "8080" and "true". Floats are refused, because `1.10`
/// would silently become "1.1".
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, an integer or a boolean (quote other values)")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A parsed pipeline file: the name to store it under and the API body.
#[derive(Debug)]
pub struct Parsed {
    pub name: String,
    pub request: PutPipelineRequest,
}

/// Parses a pipeline file. `source` names it in errors (a path, or `<stdin>`); `name` (from
/// `--name`) overrides the file's `name:` or supplies a missing one. Rules the server owns
/// (name syntax, task count, duplicate task names) are left to the server's answer.
pub fn parse(text: &str, source: &str, name: Option<&str>) -> anyhow::Result<Parsed> {
    if text.trim().is_empty() {
        bail!("{source} is empty: a pipeline file needs `tasks:` (see `tether pipelines apply --help`)");
    }
    let file: PipelineFile = serde_yaml_ng::from_str(text).map_err(|e| yaml_error(source, &e))?;
    let Some(name) = name.map(str::to_owned).or(file.name) else {
        bail!("{source} has no `name:`; add one to the file or pass --name");
    };
    let tasks = file
        .tasks
        .into_iter()
        .map(|t| PipelineTask {
            name: t.name,
            run: t.run.0,
            env: t.env.into_iter().map(|(k, v)| (k, v.into())).collect(),
            timeout_seconds: t.timeout_seconds,
        })
        .collect();
    Ok(Parsed {
        name,
        request: PutPipelineRequest { tasks },
    })
}

/// One line with the place: serde_yaml_ng leaves out `line 1 column 1`, and says nothing of the
/// file, so both are added here.
fn yaml_error(source: &str, e: &serde_yaml_ng::Error) -> anyhow::Error {
    let mut msg = e.to_string().replace('\n', " ");
    if let Some(at) = e.location() {
        if !msg.contains(" line ") {
            msg.push_str(&format!(" at line {} column {}", at.line(), at.column()));
        }
    }
    anyhow::anyhow!("{source} is not a valid pipeline file: {msg}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str, name: Option<&str>) -> String {
        match parse(text, "p.yaml", name) {
            Ok(p) => panic!("parsed: {p:?}"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn a_full_file() {
        let p = parse(
            "name: nightly\ntasks:\n  - name: build\n    run: make\n    env:\n      PORT: 8080\n      DEBUG: true\n      TARGET: s3://b\n      API_KEY: {secret: hunter2}\n    timeout_seconds: 60\n  - name: ship\n    run: ./ship.sh\n",
            "p.yaml",
            None,
        )
        .expect("parses");
        assert_eq!(p.name, "nightly");
        let t = &p.request.tasks;
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].name.as_str(), t[0].run.as_str()), ("build", "make"));
        assert_eq!(t[0].env["PORT"], EnvValue::plain("8080"));
        assert_eq!(t[0].env["DEBUG"], EnvValue::plain("true"));
        assert_eq!(t[0].env["TARGET"], EnvValue::plain("s3://b"));
        assert_eq!(
            t[0].env["API_KEY"],
            EnvValue::Secret {
                secret: SecretValue::Value("hunter2".into())
            }
        );
        assert_eq!(t[0].timeout_seconds, Some(60));
        assert!(t[1].env.is_empty() && t[1].timeout_seconds.is_none());
        // `run: true` is the shell's `true`, not a YAML boolean.
        let p = parse("tasks: [{name: a, run: true}]", "p.yaml", Some("n")).expect("ok");
        assert_eq!(p.request.tasks[0].run, "true");
    }

    #[test]
    fn json_is_yaml() {
        let p = parse(
            r#"{"name": "j", "tasks": [{"name": "a", "run": "true", "env": {"K": "v"}}]}"#,
            "p.json",
            None,
        )
        .expect("parses");
        assert_eq!(p.name, "j");
        assert_eq!(p.request.tasks[0].env["K"], EnvValue::plain("v"));
    }

    #[test]
    fn the_name_flag_overrides_or_supplies_the_name() {
        let file = "name: from-file\ntasks:\n  - {name: a, run: 'true'}\n";
        assert_eq!(
            parse(file, "p.yaml", Some("from-flag")).expect("ok").name,
            "from-flag"
        );
        assert_eq!(parse(file, "p.yaml", None).expect("ok").name, "from-file");
        let nameless = "tasks:\n  - {name: a, run: 'true'}\n";
        assert_eq!(
            parse(nameless, "p.yaml", Some("given")).expect("ok").name,
            "given"
        );
        let e = err(nameless, None);
        assert!(
            e.contains("p.yaml") && e.contains("name:") && e.contains("--name"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let e = err(
            "name: x\ntasks:\n  - name: a\n    run: 'true'\n    timeout: 5\n",
            None,
        );
        assert!(
            e.contains("unknown field `timeout`") && e.contains("line 5"),
            "{e}"
        );
        assert!(!e.contains('\n'), "one line: {e}");
        let e = err("name: x\nretries: 3\ntasks: []\n", None);
        assert!(e.contains("`retries`") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn bad_yaml_says_where() {
        let e = err("name: x\ntasks:\n  - name: a\n   run: [unclosed\n", None);
        assert!(
            e.starts_with("p.yaml is not a valid pipeline file: "),
            "{e}"
        );
        assert!(e.contains("line "), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
        let e = err("- just\n- a list\n", None);
        assert!(
            e.contains("expected a pipeline: a mapping") && e.contains("line 1"),
            "{e}"
        );
        let e = err("tasks: [make]", Some("n"));
        assert!(e.contains("expected a task: a mapping"), "{e}");
    }

    #[test]
    fn missing_fields_empty_files_and_float_env_values() {
        let e = err("name: x\ntasks:\n  - name: a\n", None);
        assert!(e.contains("missing field `run`"), "{e}");
        let e = err("name: x\n", None);
        assert!(e.contains("missing field `tasks`"), "{e}");
        let e = err("  \n", None);
        assert!(e.contains("p.yaml is empty"), "{e}");
        let e = err(
            "name: x\ntasks:\n  - name: a\n    run: 'true'\n    env: {V: 1.10}\n",
            None,
        );
        assert!(e.contains("quote") && e.contains("line 5"), "{e}");
    }
}
