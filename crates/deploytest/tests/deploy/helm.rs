//! deploy/helm/tether-runner: `helm lint --strict`, every rendering validated against the Kubernetes
//! schemas by `kubernetes-validate --strict`, and the rendered objects checked for the secret wiring,
//! the rolling-restart checksum, hot reload and the network policy.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use serde::Deserialize;
use serde_yaml_ng::Value;

use crate::support::{
    at, dump, expect_success, helm_bin, kubernetes_validate, read, repo_root, run, seq_of, str_of,
};

const CHART: &str = "deploy/helm/tether-runner";
/// The defaults the platform guide uses for the release name and the namespace.
const RELEASE: &str = "tether-runner";
const NAMESPACE: &str = "tether-runner";

/// Value sets the chart must lint, render and validate with.
const VARIANTS: [(&str, &[&str]); 4] = [
    ("default values", &[]),
    ("values-gcp.yaml", &["-f", "values-gcp.yaml"]),
    (
        "hot reload",
        &["-f", "values-gcp.yaml", "--set", "hotReload.enabled=true"],
    ),
    (
        "Workload Identity",
        &[
            "-f",
            "values-gcp.yaml",
            "--set",
            "serviceAccount.gcpServiceAccount=tether-runner@my-gcp-project.iam.gserviceaccount.com",
            "--set",
            "networkPolicy.allowGkeMetadataServer=true",
        ],
    ),
];

/// A helm command with its cache, config and data homes in a temp dir (nothing in $HOME), run in
/// the chart's directory like the platform guide's commands.
pub(crate) struct Helm {
    home: tempfile::TempDir,
    chart: PathBuf,
    release: &'static str,
    namespace: &'static str,
}

impl Helm {
    /// The runner chart.
    fn new() -> Self {
        Self::for_chart(CHART, RELEASE, NAMESPACE)
    }

    /// The chart at `chart` (from the repository root), installed as `release` in `namespace`.
    pub(crate) fn for_chart(chart: &str, release: &'static str, namespace: &'static str) -> Self {
        Self {
            home: tempfile::tempdir().expect("temp dir for helm"),
            chart: repo_root().join(chart),
            release,
            namespace,
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(helm_bin());
        let home = self.home.path();
        cmd.current_dir(&self.chart)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"));
        cmd
    }

    pub(crate) fn lint(&self, args: &[&str]) -> String {
        let out = run(
            self.command().args(["lint", "--strict", "."]).args(args),
            None,
        );
        expect_success(&format!("helm lint --strict . {}", args.join(" ")), &out)
    }

    /// `helm template` output as text.
    pub(crate) fn template(&self, args: &[&str]) -> String {
        let out = self.try_template(args);
        expect_success(&format!("helm template {}", args.join(" ")), &out)
    }

    /// `helm template`, whether or not it succeeds.
    pub(crate) fn try_template(&self, args: &[&str]) -> std::process::Output {
        run(
            self.command()
                .args(["template", self.release, ".", "--namespace", self.namespace])
                .args(args),
            None,
        )
    }
}

/// Rendered objects, one per YAML document.
pub(crate) fn objects(rendered: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(rendered)
        .map(|doc| Value::deserialize(doc).expect("helm rendered valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn render(args: &[&str]) -> Vec<Value> {
    objects(&Helm::new().template(args))
}

pub(crate) fn object<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objs
        .iter()
        .filter(|o| o.get("kind").and_then(Value::as_str) == Some(kind))
        .collect();
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

fn pod_spec(objs: &[Value]) -> &Value {
    at(object(objs, "Deployment"), "spec.template.spec")
}

fn runner_container(objs: &[Value]) -> &Value {
    let containers = seq_of(at(pod_spec(objs), "containers"), "containers");
    assert_eq!(containers.len(), 1);
    &containers[0]
}

fn checksum(objs: &[Value]) -> String {
    str_of(
        at(
            object(objs, "Deployment"),
            "spec.template.metadata.annotations.checksum/config",
        ),
        "checksum/config",
    )
    .to_owned()
}

pub(crate) fn env_names(container: &Value) -> Vec<String> {
    container
        .get("env")
        .map(|e| {
            seq_of(e, "env")
                .iter()
                .map(|v| str_of(at(v, "name"), "env name").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn kubernetes_validate_strict(manifests: &str, extra: &[&str]) -> std::process::Output {
    run(
        Command::new(kubernetes_validate())
            .args(["--strict", "--quiet"])
            .args(extra)
            .arg("-"),
        Some(manifests),
    )
}

#[test]
fn helm_lint_strict_passes_with_every_value_set() {
    let helm = Helm::new();
    for (name, args) in VARIANTS {
        let out = helm.lint(args);
        assert!(out.contains("0 chart(s) failed"), "{name}: {out}");
    }
}

#[test]
fn rendered_manifests_pass_strict_kubernetes_schema_validation() {
    let helm = Helm::new();
    for (name, args) in VARIANTS {
        let rendered = helm.template(args);
        assert_eq!(
            objects(&rendered).len(),
            5,
            "{name}: the five objects of the chart"
        );
        // The bundled schemas of the newest Kubernetes the validator knows, and of 1.30, an older
        // release GKE still runs.
        for version in [&[][..], &["-k", "1.30.0"][..]] {
            let out = kubernetes_validate_strict(&rendered, version);
            expect_success(
                &format!("kubernetes-validate --strict ({name}, {version:?})"),
                &out,
            );
        }
    }
}

#[test]
fn kubernetes_validate_does_reject_a_broken_rendering() {
    // Control: a wrong type and an unknown field must fail the same validation, so a pass above
    // means something.
    let rendered = Helm::new().template(&[]);
    for (from, to) in [
        ("replicas: 2", "replicas: two"),
        (
            "revisionHistoryLimit: 5",
            "revisionHistoryLimit: 5\n  replicaz: 2",
        ),
    ] {
        assert!(rendered.contains(from));
        let out = kubernetes_validate_strict(&rendered.replacen(from, to, 1), &[]);
        assert!(!out.status.success(), "kubernetes-validate accepted `{to}`");
    }
}

#[test]
fn defaults_name_everything_after_the_release_in_its_namespace() {
    let objs = render(&[]);
    let kinds: BTreeSet<&str> = objs.iter().map(|o| str_of(at(o, "kind"), "kind")).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "Deployment",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Secret",
            "ServiceAccount"
        ])
    );
    for o in &objs {
        assert_eq!(
            at(o, "metadata.namespace"),
            &Value::from(NAMESPACE),
            "{}",
            dump(o)
        );
    }
    assert_eq!(
        at(object(&objs, "Deployment"), "metadata.name"),
        &Value::from("tether-runner")
    );
    assert_eq!(
        at(object(&objs, "Secret"), "metadata.name"),
        &Value::from("tether-runner-config")
    );
}

#[test]
fn values_gcp_has_the_keys_the_guide_names() {
    let values: Value = serde_yaml_ng::from_str(&read(&format!("{CHART}/values-gcp.yaml")))
        .expect("values-gcp.yaml is YAML");
    for key in ["url", "oauthClientId", "oauthClientSecret"] {
        str_of(at(&values, &format!("config.{key}")), key);
    }
}

#[test]
fn the_secret_reaches_the_runner_through_env_from() {
    let objs = render(&["-f", "values-gcp.yaml"]);
    let secret = object(&objs, "Secret");
    let name = str_of(at(secret, "metadata.name"), "Secret name");
    assert_eq!(name, "tether-runner-config", "<fullname>-config");
    let data = at(secret, "stringData");
    assert_eq!(
        at(data, "OAUTH_CLIENT_SECRET"),
        &Value::from("tcs_REPLACE_WITH_YOUR_CLIENT_SECRET"),
        "the Secret holds config.oauthClientSecret"
    );
    assert_eq!(
        at(data, "OAUTH_CLIENT_ID"),
        &Value::from("tcid_REPLACE_WITH_YOUR_CLIENT_ID")
    );
    assert_eq!(
        at(data, "TETHER_URL"),
        &Value::from("https://tether.example.com")
    );

    let c = runner_container(&objs);
    let from = seq_of(at(c, "envFrom"), "envFrom");
    assert_eq!(from.len(), 1);
    assert_eq!(at(&from[0], "secretRef.name"), &Value::from(name));
    let env = env_names(c);
    assert!(
        !env.iter().any(|n| n.starts_with("OAUTH_CLIENT_SECRET")),
        "{env:?}"
    );
    assert_eq!(seq_of(at(c, "args"), "args"), &vec![Value::from("runner")]);
}

#[test]
fn a_new_client_secret_changes_the_checksum_so_helm_upgrade_rolls_the_pods() {
    let a = checksum(&render(&[
        "-f",
        "values-gcp.yaml",
        "--set",
        "config.oauthClientSecret=tcs_a",
    ]));
    let a_again = checksum(&render(&[
        "-f",
        "values-gcp.yaml",
        "--set",
        "config.oauthClientSecret=tcs_a",
    ]));
    let b = checksum(&render(&[
        "-f",
        "values-gcp.yaml",
        "--set",
        "config.oauthClientSecret=tcs_b",
    ]));
    assert_eq!(
        a, a_again,
        "the same values render the same checksum: no needless restarts"
    );
    assert_ne!(a, b, "a new secret must change the pod template");
    assert_eq!(a.len(), 64, "a sha256: {a}");
    let url = checksum(&render(&[
        "-f",
        "values-gcp.yaml",
        "--set",
        "config.oauthClientSecret=tcs_a",
        "--set",
        "config.url=https://other.example.com",
    ]));
    assert_ne!(a, url, "the URL is in the Secret too");
}

#[test]
fn hot_reload_mounts_the_secret_as_a_file_instead_of_env() {
    let objs = render(&["-f", "values-gcp.yaml", "--set", "hotReload.enabled=true"]);
    let c = runner_container(&objs);
    assert!(
        c.get("envFrom").is_none(),
        "no envFrom: it would put OAUTH_CLIENT_SECRET in env"
    );
    let env = seq_of(at(c, "env"), "env");
    let file = env
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some("OAUTH_CLIENT_SECRET_FILE"))
        .unwrap_or_else(|| panic!("no OAUTH_CLIENT_SECRET_FILE in {}", dump(at(c, "env"))));
    let path = str_of(at(file, "value"), "OAUTH_CLIENT_SECRET_FILE");
    for e in env {
        let name = str_of(at(e, "name"), "env name");
        assert_ne!(name, "OAUTH_CLIENT_SECRET", "the secret must not be in env");
        if let Some(key) = e.get("valueFrom").and_then(|v| v.get("secretKeyRef")) {
            assert_ne!(
                at(key, "key"),
                &Value::from("OAUTH_CLIENT_SECRET"),
                "{name}"
            );
        }
    }
    // The file comes from a whole-directory mount of the Secret (a subPath mount would never be
    // updated by the kubelet).
    let mount = seq_of(at(c, "volumeMounts"), "volumeMounts")
        .iter()
        .find(|m| path.starts_with(&format!("{}/", str_of(at(m, "mountPath"), "mountPath"))))
        .unwrap_or_else(|| panic!("nothing is mounted where {path} is"));
    assert!(mount.get("subPath").is_none());
    assert_eq!(at(mount, "readOnly"), &Value::Bool(true));
    let volume_name = at(mount, "name");
    let volume = seq_of(at(pod_spec(&objs), "volumes"), "volumes")
        .iter()
        .find(|v| v.get("name") == Some(volume_name))
        .expect("the mounted volume exists");
    assert_eq!(
        at(volume, "secret.secretName"),
        &Value::from("tether-runner-config")
    );
    let items = seq_of(at(volume, "secret.items"), "items");
    assert_eq!(items.len(), 1, "only the client_secret is mounted");
    assert_eq!(at(&items[0], "key"), &Value::from("OAUTH_CLIENT_SECRET"));
    let file_name = str_of(at(&items[0], "path"), "path");
    assert!(
        path.ends_with(&format!("/{file_name}")),
        "{path} vs {file_name}"
    );

    // A new secret reaches the pods through the file, so it must not roll them.
    let with = |secret: &str| {
        let set = format!("config.oauthClientSecret={secret}");
        checksum(&render(&[
            "-f",
            "values-gcp.yaml",
            "--set",
            "hotReload.enabled=true",
            "--set",
            &set,
        ]))
    };
    assert_eq!(with("tcs_a"), with("tcs_b"));
}

#[test]
fn the_network_policy_allows_only_dns_and_https_egress() {
    let policy = |args: &[&str]| -> (Vec<String>, Value) {
        let objs = render(args);
        let spec = at(object(&objs, "NetworkPolicy"), "spec").clone();
        let types = seq_of(at(&spec, "policyTypes"), "policyTypes")
            .iter()
            .map(|t| str_of(t, "policyType").to_owned())
            .collect();
        (types, spec)
    };
    let (types, spec) = policy(&[]);
    assert_eq!(types, ["Ingress", "Egress"]);
    assert!(
        spec.get("ingress").is_none(),
        "no ingress rule: nothing may connect in"
    );
    let mut ports = BTreeSet::new();
    for rule in seq_of(at(&spec, "egress"), "egress") {
        for p in seq_of(at(rule, "ports"), "ports") {
            ports.insert(format!(
                "{}/{}",
                str_of(at(p, "protocol"), "protocol"),
                at(p, "port").as_u64().expect("numeric port")
            ));
        }
    }
    assert_eq!(
        ports,
        BTreeSet::from(["TCP/443".into(), "TCP/53".into(), "UDP/53".into()])
    );

    // Workload Identity adds the GKE metadata server, and only that host.
    let (_, spec) = policy(&["--set", "networkPolicy.allowGkeMetadataServer=true"]);
    for rule in seq_of(at(&spec, "egress"), "egress").iter().skip(2) {
        let cidr = str_of(at(rule, "to.0.ipBlock.cidr"), "cidr");
        assert!(
            cidr.starts_with("169.254.169.") && cidr.ends_with("/32"),
            "{cidr}"
        );
    }
}

#[test]
fn pods_run_non_root_read_only_and_drain_slowly() {
    let objs = render(&[]);
    let pod = pod_spec(&objs);
    let grace = at(pod, "terminationGracePeriodSeconds")
        .as_u64()
        .expect("a number");
    assert!(grace >= 3600, "drains need time: {grace}");
    assert_eq!(at(pod, "securityContext.runAsNonRoot"), &Value::Bool(true));
    assert_eq!(at(pod, "automountServiceAccountToken"), &Value::Bool(false));
    let c = runner_container(&objs);
    assert_eq!(
        at(c, "securityContext.readOnlyRootFilesystem"),
        &Value::Bool(true)
    );
    assert_eq!(
        at(c, "securityContext.allowPrivilegeEscalation"),
        &Value::Bool(false)
    );
    // The only writable places are emptyDirs: the work directory the runner is told about, and /tmp.
    let workdir = seq_of(at(c, "env"), "env")
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some("TETHER_WORKDIR"))
        .map(|e| str_of(at(e, "value"), "TETHER_WORKDIR").to_owned())
        .expect("TETHER_WORKDIR");
    let volumes = seq_of(at(pod, "volumes"), "volumes");
    for path in [workdir.as_str(), "/tmp"] {
        let mount = seq_of(at(c, "volumeMounts"), "volumeMounts")
            .iter()
            .find(|m| m.get("mountPath").and_then(Value::as_str) == Some(path))
            .unwrap_or_else(|| panic!("{path} is not mounted"));
        let volume = volumes
            .iter()
            .find(|v| v.get("name") == mount.get("name"))
            .expect("volume");
        assert!(volume.get("emptyDir").is_some(), "{path}: {}", dump(volume));
    }
    // New pods come up before old ones go, and voluntary disruptions take one at a time.
    let deployment = object(&objs, "Deployment");
    assert_eq!(
        at(deployment, "spec.strategy.rollingUpdate.maxUnavailable"),
        &Value::from(0)
    );
    let pdb = object(&objs, "PodDisruptionBudget");
    assert_eq!(at(pdb, "spec.maxUnavailable"), &Value::from(1));
    assert_eq!(
        at(pdb, "spec.selector.matchLabels"),
        at(deployment, "spec.selector.matchLabels")
    );
    assert_eq!(
        at(
            object(&objs, "NetworkPolicy"),
            "spec.podSelector.matchLabels"
        ),
        at(deployment, "spec.selector.matchLabels")
    );
}

#[test]
fn the_service_account_carries_the_workload_identity_annotation() {
    let gsa = "tether-runner@my-gcp-project.iam.gserviceaccount.com";
    let objs = render(&[
        "-f",
        "values-gcp.yaml",
        "--set",
        &format!("serviceAccount.gcpServiceAccount={gsa}"),
    ]);
    let sa = object(&objs, "ServiceAccount");
    // The key has dots in it, so it is looked up directly rather than through `at`.
    let annotation = at(sa, "metadata.annotations").get("iam.gke.io/gcp-service-account");
    assert_eq!(annotation, Some(&Value::from(gsa)), "{}", dump(sa));
    assert_eq!(
        at(pod_spec(&objs), "serviceAccountName"),
        at(sa, "metadata.name")
    );
    let plain = render(&[]);
    assert!(
        object(&plain, "ServiceAccount")
            .get("metadata")
            .and_then(|m| m.get("annotations"))
            .is_none(),
        "no Workload Identity annotation unless asked for"
    );
}
