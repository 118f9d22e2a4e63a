//! deploy/helm/tether-server: `helm lint --strict`, the renderings validated by
//! `kubernetes-validate --strict`, and what docs/operations/replicas.md promises checked in the
//! rendered objects: N replicas on the PostgreSQL URL from a Secret (never from values), shared key
//! files from a Secret with a mode tether accepts, readiness on `/readyz`, a PodDisruptionBudget
//! and a rolling update that never goes below the replicas asked for.

use serde_yaml_ng::Value;

use crate::helm::{env_names, kubernetes_validate_strict, object, objects, Helm};
use crate::support::{at, expect_success, seq_of, str_of};

const CHART: &str = "deploy/helm/tether-server";

const REQUIRED: [&str; 6] = [
    "--set",
    "publicUrl=https://tether.example.com",
    "--set",
    "database.existingSecret=tether-database",
    "--set",
    "keys.existingSecret=tether-keys",
];

fn helm() -> Helm {
    Helm::for_chart(CHART, "tether-server", "tether")
}

fn with(extra: &[&'static str]) -> Vec<&'static str> {
    REQUIRED
        .iter()
        .copied()
        .chain(extra.iter().copied())
        .collect()
}

fn container(objs: &[Value]) -> &Value {
    let containers = seq_of(
        at(object(objs, "Deployment"), "spec.template.spec.containers"),
        "containers",
    );
    assert_eq!(containers.len(), 1);
    &containers[0]
}

fn env<'a>(c: &'a Value, name: &str) -> &'a Value {
    seq_of(at(c, "env"), "env")
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
        .unwrap_or_else(|| panic!("env {name} is set"))
}

#[test]
fn the_server_chart_lints_and_renders_valid_manifests() {
    let helm = helm();
    for args in [
        with(&[]),
        with(&[
            "--set",
            "replicaCount=5",
            "--set",
            "podDisruptionBudget.enabled=false",
        ]),
    ] {
        let out = helm.lint(&args);
        assert!(out.contains("0 chart(s) failed"), "{out}");
        let rendered = helm.template(&args);
        for version in [&[][..], &["-k", "1.30.0"][..]] {
            let out = kubernetes_validate_strict(&rendered, version);
            expect_success(&format!("kubernetes-validate --strict {version:?}"), &out);
        }
    }
}

#[test]
fn replicas_take_the_database_url_and_the_keys_from_secrets_and_are_ready_only_on_readyz() {
    let objs = objects(&helm().template(&with(&[])));
    assert_eq!(objs.len(), 3, "Deployment, Service, PodDisruptionBudget");
    let deployment = object(&objs, "Deployment");
    assert_eq!(at(deployment, "spec.replicas").as_u64(), Some(3));
    assert_eq!(
        at(deployment, "spec.strategy.rollingUpdate.maxUnavailable").as_u64(),
        Some(0)
    );
    let c = container(&objs);
    let url = env(c, "TETHER_DATABASE_URL");
    assert!(
        url.get("value").is_none(),
        "the URL never comes from values"
    );
    assert_eq!(
        str_of(at(url, "valueFrom.secretKeyRef.name"), "secret"),
        "tether-database"
    );
    // The key files are the Secret's, mounted where the env says, readable by the owner only.
    let mount = seq_of(at(c, "volumeMounts"), "mounts")
        .iter()
        .find(|m| m.get("name").and_then(Value::as_str) == Some("keys"))
        .expect("keys mount");
    let dir = str_of(at(mount, "mountPath"), "mountPath");
    for (var, file) in [
        ("TETHER_SIGNING_KEY_FILE", "signing.key"),
        ("TETHER_PEPPER_FILE", "pepper.key"),
        ("TETHER_MASTER_KEY_FILE", "master.key"),
    ] {
        assert_eq!(
            str_of(at(env(c, var), "value"), var),
            format!("{dir}/{file}")
        );
    }
    let volume = seq_of(at(deployment, "spec.template.spec.volumes"), "volumes")
        .iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some("keys"))
        .expect("keys volume");
    assert_eq!(
        str_of(at(volume, "secret.secretName"), "secret"),
        "tether-keys"
    );
    assert_eq!(
        at(volume, "secret.defaultMode").as_u64().map(|m| m & 0o077),
        Some(0),
        "tether refuses key files others can read"
    );
    assert_eq!(
        str_of(at(c, "readinessProbe.httpGet.path"), "path"),
        "/readyz"
    );
    assert_eq!(
        str_of(at(c, "livenessProbe.httpGet.path"), "path"),
        "/healthz"
    );
    assert_eq!(
        at(object(&objs, "PodDisruptionBudget"), "spec.maxUnavailable").as_u64(),
        Some(1)
    );
    let names = env_names(c);
    assert!(
        names.contains(&"TETHER_EVENTS_MAX_LAG_SECONDS".to_owned()),
        "{names:?}"
    );
    assert!(
        !helm().template(&with(&[])).contains("postgres://"),
        "no database URL in the manifests"
    );
}

#[test]
fn a_stopping_pod_drains_its_sessions_within_its_grace_period() {
    let objs = objects(&helm().template(&with(&[])));
    let drain: u64 = str_of(
        at(
            env(container(&objs), "TETHER_SHUTDOWN_DRAIN_SECONDS"),
            "value",
        ),
        "drain",
    )
    .parse()
    .expect("seconds");
    assert!(drain > 0, "a rolling update drains sessions gracefully");
    let grace = at(
        object(&objs, "Deployment"),
        "spec.template.spec.terminationGracePeriodSeconds",
    )
    .as_u64()
    .expect("grace period");
    assert!(grace >= drain + 10, "grace {grace} s, drain {drain} s");

    let out = helm().try_template(&with(&[
        "--set",
        "shutdownDrainSeconds=40",
        "--set",
        "terminationGracePeriodSeconds=45",
    ]));
    assert!(!out.status.success(), "rendered a pod killed mid-drain");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("terminationGracePeriodSeconds (45) must exceed shutdownDrainSeconds (40)"),
        "{err}"
    );
}

#[test]
fn the_chart_refuses_to_render_without_what_a_replica_needs() {
    for (missing, message) in [
        ("publicUrl", "publicUrl is required"),
        (
            "database.existingSecret",
            "database.existingSecret is required",
        ),
        ("keys.existingSecret", "keys.existingSecret is required"),
    ] {
        let args: Vec<&str> = REQUIRED
            .chunks(2)
            .filter(|pair| !pair[1].starts_with(&format!("{missing}=")))
            .flatten()
            .copied()
            .collect();
        let out = helm().try_template(&args);
        assert!(!out.status.success(), "rendered without {missing}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{missing}: {err}");
    }
}
