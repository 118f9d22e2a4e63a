//! deploy/aws/tether-runner.yaml: `cfn-lint` clean, and the secret wiring the platform guide relies
//! on, checked on the parsed template in both modes of the `SecretHotReload` parameter.

use std::process::Command;

use serde_yaml_ng::{Mapping, Value};

use crate::support::{at, cfn_lint, dump, expect_success, read, repo_root, run, seq_of, str_of};

const TEMPLATE: &str = "deploy/aws/tether-runner.yaml";

fn template() -> Value {
    let text = read(TEMPLATE);
    let t: Value =
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{TEMPLATE} is not YAML: {e}"));
    // The template uses long-form intrinsics (Ref, Fn::Sub, ...) so plain YAML parsing sees all of
    // it; a short tag (!Ref, !Sub, ...) would parse as an opaque tagged value and hide what it
    // refers to from these checks.
    fn no_tags(v: &Value) {
        match v {
            Value::Tagged(t) => panic!(
                "{TEMPLATE} uses the short tag {}; write the long form",
                t.tag
            ),
            Value::Mapping(m) => m.values().for_each(no_tags),
            Value::Sequence(s) => s.iter().for_each(no_tags),
            _ => {}
        }
    }
    no_tags(&t);
    t
}

fn resource<'a>(t: &'a Value, name: &str) -> &'a Value {
    at(t, &format!("Resources.{name}"))
}

fn is_no_value(v: &Value) -> bool {
    v.get("Ref").and_then(Value::as_str) == Some("AWS::NoValue")
}

/// The template as CloudFormation sees it with `SecretHotReload` = `hot`: every `Fn::If` on
/// `UseHotReload` replaced by its chosen branch, `AWS::NoValue` dropped from lists and maps.
fn resolve(v: &Value, hot: bool) -> Option<Value> {
    match v {
        Value::Mapping(m) => {
            if let Some(args) = m.get("Fn::If") {
                let args = seq_of(args, "Fn::If");
                assert_eq!(args.len(), 3, "Fn::If takes 3 arguments: {}", dump(v));
                assert_eq!(
                    args[0].as_str(),
                    Some("UseHotReload"),
                    "unexpected condition in {}",
                    dump(v)
                );
                let chosen = if hot { &args[1] } else { &args[2] };
                return resolve(chosen, hot);
            }
            if is_no_value(v) {
                return None;
            }
            let mut out = Mapping::new();
            for (k, val) in m {
                if let Some(r) = resolve(val, hot) {
                    out.insert(k.clone(), r);
                }
            }
            Some(Value::Mapping(out))
        }
        Value::Sequence(items) => Some(Value::Sequence(
            items.iter().filter_map(|i| resolve(i, hot)).collect(),
        )),
        other => Some(other.clone()),
    }
}

/// Resources present in a mode (a resource's `Condition` decides).
fn resources_in_mode(t: &Value, hot: bool) -> Mapping {
    let mut out = Mapping::new();
    for (name, res) in at(t, "Resources").as_mapping().expect("Resources is a map") {
        let present = match res.get("Condition").and_then(Value::as_str) {
            None => true,
            Some("UseHotReload") => hot,
            Some(other) => panic!("unexpected resource condition {other}"),
        };
        if present {
            out.insert(name.clone(), resolve(res, hot).expect("a resource"));
        }
    }
    out
}

fn ref_to(name: &str) -> Value {
    let mut m = Mapping::new();
    m.insert("Ref".into(), name.into());
    Value::Mapping(m)
}

fn container(resources: &Mapping) -> &Value {
    let defs = seq_of(
        at(
            &resources["TaskDefinition"],
            "Properties.ContainerDefinitions",
        ),
        "ContainerDefinitions",
    );
    assert_eq!(defs.len(), 1, "one container: the runner");
    &defs[0]
}

/// `Name` -> the rest, for a task definition's `Environment` or `Secrets` list.
fn named(list: &Value, what: &str) -> Vec<(String, Value)> {
    seq_of(list, what)
        .iter()
        .map(|e| (str_of(at(e, "Name"), "Name").to_owned(), e.clone()))
        .collect()
}

#[test]
fn cfn_lint_is_clean() {
    // `--include-checks I` adds the informational rules too: clean means no finding of any level.
    let out = run(
        Command::new(cfn_lint()).current_dir(repo_root()).args([
            "--include-checks",
            "I",
            "--",
            TEMPLATE,
        ]),
        None,
    );
    let stdout = expect_success("cfn-lint on the AWS template", &out);
    assert!(stdout.trim().is_empty(), "cfn-lint findings:\n{stdout}");
}

#[test]
fn cfn_lint_does_catch_a_broken_template() {
    // Control: the same linter run on a copy with one wrong value must fail, so a clean run above
    // means something.
    let broken = read(TEMPLATE).replace("DesiredCount: 2", "DesiredCount: two");
    assert_ne!(broken, read(TEMPLATE));
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("broken.yaml");
    std::fs::write(&path, broken).expect("write broken template");
    let out = run(Command::new(cfn_lint()).arg("--").arg(&path), None);
    assert!(!out.status.success(), "cfn-lint accepted DesiredCount: two");
}

#[test]
fn the_secret_is_json_with_client_id_and_client_secret() {
    let t = template();
    let secret = resource(&t, "ClientSecretStore");
    assert_eq!(
        str_of(at(secret, "Type"), "Type"),
        "AWS::SecretsManager::Secret"
    );
    assert!(
        str_of(at(secret, "Properties.Name.Fn::Sub"), "Name").contains("${RunnerName}"),
        "the secret's name carries the runner name, so it can be found from the ECS service"
    );
    let body = str_of(
        at(secret, "Properties.SecretString.Fn::Sub"),
        "SecretString",
    );
    let json: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("SecretString is not JSON ({e}): {body}"));
    let obj = json.as_object().expect("a JSON object");
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(keys, ["client_id", "client_secret"]);
    assert_eq!(obj["client_id"], "${ClientId}");
    assert_eq!(obj["client_secret"], "${ClientSecret}");
    assert_eq!(at(&t, "Parameters.ClientSecret.NoEcho"), &Value::Bool(true));
}

#[test]
fn only_that_secret_is_readable_and_only_by_the_roles_that_need_it() {
    let t = template();
    let secret_ref = ref_to("ClientSecretStore");
    let mut secret_grants = 0;
    for (name, res) in at(&t, "Resources").as_mapping().expect("Resources") {
        if res.get("Type").and_then(Value::as_str) != Some("AWS::IAM::Role") {
            continue;
        }
        let name = name.as_str().expect("resource name");
        assert!(
            ["ExecutionRole", "TaskRole"].contains(&name),
            "unexpected role {name}"
        );
        for policy in seq_of(at(res, "Properties.Policies"), "Policies") {
            for stmt in seq_of(at(policy, "PolicyDocument.Statement"), "Statement") {
                assert_eq!(str_of(at(stmt, "Effect"), "Effect"), "Allow");
                assert_eq!(
                    at(stmt, "Action"),
                    &Value::from("secretsmanager:GetSecretValue"),
                    "{name} may only read the secret"
                );
                assert_eq!(
                    at(stmt, "Resource"),
                    &secret_ref,
                    "{name}'s policy is limited to the runner's secret ARN"
                );
                secret_grants += 1;
            }
        }
    }
    assert_eq!(
        secret_grants, 2,
        "the execution role, and the hot-reload task role"
    );
    let managed = seq_of(
        at(
            resource(&t, "ExecutionRole"),
            "Properties.ManagedPolicyArns",
        ),
        "ManagedPolicyArns",
    );
    assert_eq!(managed.len(), 1);
    assert!(str_of(at(&managed[0], "Fn::Sub"), "policy ARN")
        .ends_with(":iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"));
    assert_eq!(
        at(resource(&t, "TaskRole"), "Condition"),
        &Value::from("UseHotReload"),
        "the runner process itself gets no AWS permissions unless it reads the secret"
    );
}

#[test]
fn default_mode_injects_the_secret_with_value_from() {
    let t = template();
    let res = resources_in_mode(&t, false);
    assert!(!res.contains_key("TaskRole"));
    assert!(at(&res["TaskDefinition"], "Properties")
        .get("TaskRoleArn")
        .is_none());
    let c = container(&res);
    let secrets = named(at(c, "Secrets"), "Secrets");
    let names: Vec<&str> = secrets.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET"]);
    assert_eq!(
        str_of(at(&secrets[0].1, "ValueFrom.Fn::Sub"), "ValueFrom"),
        "${ClientSecretStore}:client_id::"
    );
    assert_eq!(
        str_of(at(&secrets[1].1, "ValueFrom.Fn::Sub"), "ValueFrom"),
        "${ClientSecretStore}:client_secret::"
    );
    let env = named(at(c, "Environment"), "Environment");
    for (n, _) in &env {
        assert!(
            !n.starts_with("OAUTH_CLIENT_SECRET"),
            "exactly one secret source: {n} must not be set too"
        );
    }
}

#[test]
fn hot_reload_mode_hands_the_runner_the_secret_arn_instead() {
    let t = template();
    assert_eq!(
        at(&t, "Conditions.UseHotReload.Fn::Equals"),
        &Value::Sequence(vec![ref_to("SecretHotReload"), "true".into()])
    );
    assert_eq!(
        at(&t, "Parameters.SecretHotReload.AllowedValues"),
        &Value::Sequence(vec!["false".into(), "true".into()])
    );
    assert_eq!(
        at(&t, "Parameters.SecretHotReload.Default"),
        &Value::from("false")
    );

    let res = resources_in_mode(&t, true);
    assert!(res.contains_key("TaskRole"));
    assert_eq!(
        at(&res["TaskDefinition"], "Properties.TaskRoleArn.Fn::GetAtt"),
        &Value::Sequence(vec!["TaskRole".into(), "Arn".into()])
    );
    let c = container(&res);
    let secrets = named(at(c, "Secrets"), "Secrets");
    let names: Vec<&str> = secrets.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["OAUTH_CLIENT_ID"],
        "the client_id is still injected"
    );
    let env = named(at(c, "Environment"), "Environment");
    let arn = env
        .iter()
        .find(|(n, _)| n == "OAUTH_CLIENT_SECRET_ARN")
        .unwrap_or_else(|| {
            panic!(
                "no OAUTH_CLIENT_SECRET_ARN in {}",
                dump(at(c, "Environment"))
            )
        });
    assert_eq!(at(&arn.1, "Value"), &ref_to("ClientSecretStore"));
    assert!(env
        .iter()
        .any(|(n, _)| n == "TETHER_SECRET_REFRESH_SECONDS"));
    assert!(!env.iter().any(|(n, _)| n == "OAUTH_CLIENT_SECRET"));
}

#[test]
fn the_service_runs_two_tasks_with_a_circuit_breaker_and_no_way_in() {
    let t = template();
    let service = resource(&t, "Service");
    assert_eq!(at(service, "Properties.DesiredCount"), &Value::from(2));
    assert_eq!(
        str_of(at(service, "Properties.LaunchType"), "LaunchType"),
        "FARGATE"
    );
    let breaker = at(
        service,
        "Properties.DeploymentConfiguration.DeploymentCircuitBreaker",
    );
    assert_eq!(at(breaker, "Enable"), &Value::Bool(true));
    assert_eq!(at(breaker, "Rollback"), &Value::Bool(true));
    assert!(at(service, "Properties").get("LoadBalancers").is_none());

    // No inbound path of any kind.
    for (name, res) in at(&t, "Resources").as_mapping().expect("Resources") {
        let ty = str_of(at(res, "Type"), "Type");
        assert!(
            ty != "AWS::EC2::SecurityGroupIngress"
                && !ty.starts_with("AWS::ElasticLoadBalancing")
                && !ty.starts_with("AWS::ApiGateway"),
            "{name:?} ({ty}) would let traffic in"
        );
    }
    let sg = at(resource(&t, "SecurityGroup"), "Properties");
    assert!(sg.get("SecurityGroupIngress").is_none(), "no inbound rules");
    let egress = seq_of(at(sg, "SecurityGroupEgress"), "SecurityGroupEgress");
    assert_eq!(egress.len(), 1);
    assert_eq!(at(&egress[0], "FromPort"), &Value::from(443));
    assert_eq!(at(&egress[0], "ToPort"), &Value::from(443));
    let res = resources_in_mode(&t, false);
    let c = container(&res);
    assert!(
        c.get("PortMappings").is_none(),
        "the runner listens on no port"
    );
}

#[test]
fn the_task_drains_on_a_read_only_root_with_logs() {
    let t = template();
    let res = resources_in_mode(&t, false);
    let c = container(&res);
    assert_eq!(at(c, "ReadonlyRootFilesystem"), &Value::Bool(true));
    assert_eq!(
        seq_of(at(c, "Command"), "Command"),
        &vec![Value::from("runner")]
    );
    let stop = at(c, "StopTimeout").as_u64().expect("StopTimeout");
    assert_eq!(
        stop, 120,
        "the Fargate maximum, so running tasks get the longest drain"
    );
    assert_eq!(
        str_of(at(c, "LogConfiguration.LogDriver"), "LogDriver"),
        "awslogs"
    );
    let mounts: Vec<&str> = seq_of(at(c, "MountPoints"), "MountPoints")
        .iter()
        .map(|m| str_of(at(m, "ContainerPath"), "ContainerPath"))
        .collect();
    let env = named(at(c, "Environment"), "Environment");
    let workdir = env
        .iter()
        .find(|(n, _)| n == "TETHER_WORKDIR")
        .map(|(_, e)| str_of(at(e, "Value"), "TETHER_WORKDIR").to_owned())
        .expect("TETHER_WORKDIR is set");
    assert_eq!(mounts, [workdir.as_str(), "/tmp"], "the writable places");
    // ECS seeds a bind mount from the image only where the Dockerfile declares the same VOLUME
    // path; that is what makes it writable by the image's non-root user.
    let dockerfile = read("deploy/docker/Dockerfile");
    let volume = dockerfile
        .lines()
        .find(|l| l.starts_with("VOLUME"))
        .expect("the Dockerfile declares its volumes");
    for m in &mounts {
        assert!(
            volume.contains(&format!("\"{m}\"")),
            "{m} is not a VOLUME in the Dockerfile"
        );
    }
    let platform = env
        .iter()
        .find(|(n, _)| n == "TETHER_PLATFORM")
        .expect("TETHER_PLATFORM");
    assert_eq!(at(&platform.1, "Value"), &Value::from("aws_fargate"));
}
