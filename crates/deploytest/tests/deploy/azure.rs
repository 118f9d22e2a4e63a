//! deploy/azure: the ARM template's secret wiring, checked on the parsed JSON, and the Bicep file
//! checked to declare the same. There is no Bicep compiler here (it is not on any registry this
//! machine reaches), so the Bicep checks read its text: its object literals are simple enough to
//! pick apart line by line, and it must agree with the ARM template on parameters, secrets and env.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::read;

const ARM: &str = "deploy/azure/tether-runner.json";
const BICEP: &str = "deploy/azure/tether-runner.bicep";
const SECRETS: [&str; 2] = ["tether-client-id", "tether-client-secret"];

fn arm() -> Value {
    serde_json::from_str(&read(ARM)).unwrap_or_else(|e| panic!("{ARM} is not JSON: {e}"))
}

fn container_app(t: &Value) -> &Value {
    let apps: Vec<&Value> = t["resources"]
        .as_array()
        .expect("resources is a list")
        .iter()
        .filter(|r| r["type"] == "Microsoft.App/containerApps")
        .collect();
    assert_eq!(apps.len(), 1, "one Container App");
    apps[0]
}

fn env_of(app: &Value) -> &Vec<Value> {
    let containers = app["properties"]["template"]["containers"]
        .as_array()
        .expect("containers is a list");
    assert_eq!(containers.len(), 1, "one container: the runner");
    containers[0]["env"].as_array().expect("env is a list")
}

#[test]
fn arm_secrets_are_tether_client_id_and_tether_client_secret_from_parameters() {
    let t = arm();
    let app = container_app(&t);
    let secrets = app["properties"]["configuration"]["secrets"]
        .as_array()
        .expect("configuration.secrets is a literal list");
    let names: Vec<&str> = secrets
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, SECRETS);
    assert_eq!(secrets[0]["value"], "[parameters('clientId')]");
    assert_eq!(secrets[1]["value"], "[parameters('clientSecret')]");
    assert_eq!(
        t["parameters"]["clientSecret"]["type"]
            .as_str()
            .map(str::to_lowercase)
            .as_deref(),
        Some("securestring"),
        "the client_secret parameter is secure: never logged or shown in the deployment history"
    );
}

#[test]
fn arm_env_references_the_secrets_with_secret_ref() {
    let t = arm();
    let app = container_app(&t);
    let env = env_of(app);
    let find = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in env"))
    };
    for (var, secret) in [
        ("OAUTH_CLIENT_ID", SECRETS[0]),
        ("OAUTH_CLIENT_SECRET", SECRETS[1]),
    ] {
        let e = find(var);
        assert_eq!(e["secretRef"], secret, "{var}");
        assert!(
            e.get("value").is_none(),
            "{var} must come from the secret, not a value"
        );
    }
    // Every secretRef names a declared secret, and no other secret source is set.
    for e in env {
        if let Some(r) = e.get("secretRef") {
            assert!(SECRETS.contains(&r.as_str().expect("secretRef")), "{e}");
        }
        let name = e["name"].as_str().expect("env name");
        assert!(
            !["OAUTH_CLIENT_SECRET_FILE", "OAUTH_CLIENT_SECRET_ARN"].contains(&name),
            "exactly one secret source"
        );
    }
    assert_eq!(find("TETHER_PLATFORM")["value"], "azure_container_app");
    assert_eq!(find("TETHER_URL")["value"], "[parameters('tetherUrl')]");
    let args = app["properties"]["template"]["containers"][0]["args"].clone();
    assert_eq!(args, serde_json::json!(["runner"]));
}

#[test]
fn arm_replicas_are_fixed_and_there_is_no_ingress() {
    let t = arm();
    let app = container_app(&t);
    let scale = &app["properties"]["template"]["scale"];
    assert!(scale["minReplicas"].is_string() || scale["minReplicas"].is_number());
    assert_eq!(
        scale["minReplicas"], scale["maxReplicas"],
        "min == max: fixed replicas"
    );
    assert_eq!(t["parameters"]["replicas"]["defaultValue"], 2);
    let config = &app["properties"]["configuration"];
    match config.get("ingress") {
        None => {}
        Some(ingress) => assert_eq!(ingress["external"], false, "egress only"),
    }
    let grace = app["properties"]["template"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(grace >= 300, "time to drain running tasks: {grace}");
}

/// The lines of the Bicep file without `//` comments.
fn bicep_lines() -> Vec<String> {
    read(BICEP)
        .lines()
        .map(|l| match l.find("//") {
            // Not inside a string: every `//` in this file that is in a string follows a quote.
            Some(i) if !l[..i].contains('\'') => l[..i].trim_end().to_owned(),
            _ => l.to_owned(),
        })
        .collect()
}

/// The `{ ... }` object literals of the list that follows `key: [` (first occurrence), each as
/// its `name: value` pairs.
fn bicep_objects(lines: &[String], key: &str) -> Vec<Vec<(String, String)>> {
    let start = lines
        .iter()
        .position(|l| l.trim() == format!("{key}: ["))
        .unwrap_or_else(|| panic!("no `{key}: [` in {BICEP}"));
    let mut objects = Vec::new();
    let mut current: Option<Vec<(String, String)>> = None;
    let mut depth = 0;
    for line in &lines[start + 1..] {
        let l = line.trim();
        if depth == 0 && l == "]" {
            break;
        }
        if l == "{" {
            depth += 1;
            if depth == 1 {
                current = Some(Vec::new());
            }
            continue;
        }
        if l == "}" {
            depth -= 1;
            if depth == 0 {
                objects.push(current.take().expect("an open object"));
            }
            continue;
        }
        if let (1, Some(obj), Some((k, v))) = (depth, current.as_mut(), l.split_once(':')) {
            obj.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    objects
}

fn get<'a>(obj: &'a [(String, String)], key: &str) -> Option<&'a str> {
    obj.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[test]
fn bicep_declares_the_same_secrets_and_secret_refs() {
    let lines = bicep_lines();
    let secrets = bicep_objects(&lines, "secrets");
    let names: Vec<&str> = secrets
        .iter()
        .map(|o| get(o, "name").expect("name"))
        .collect();
    assert_eq!(names, ["'tether-client-id'", "'tether-client-secret'"]);
    assert_eq!(get(&secrets[0], "value"), Some("clientId"));
    assert_eq!(get(&secrets[1], "value"), Some("clientSecret"));
    let secure = lines
        .iter()
        .position(|l| l.trim() == "param clientSecret string")
        .expect("param clientSecret");
    assert_eq!(
        lines[secure - 1].trim(),
        "@secure()",
        "clientSecret is a secure parameter"
    );

    let env = bicep_objects(&lines, "env");
    let by_name = |n: &str| {
        env.iter()
            .find(|o| get(o, "name") == Some(&format!("'{n}'")))
            .unwrap_or_else(|| panic!("no {n} in the Bicep env"))
    };
    assert_eq!(
        get(by_name("OAUTH_CLIENT_ID"), "secretRef"),
        Some("'tether-client-id'")
    );
    assert_eq!(
        get(by_name("OAUTH_CLIENT_SECRET"), "secretRef"),
        Some("'tether-client-secret'")
    );
    assert_eq!(get(by_name("OAUTH_CLIENT_SECRET"), "value"), None);

    // The same env variables, in the same order, as the ARM template.
    let arm = arm();
    let arm_env: Vec<String> = env_of(container_app(&arm))
        .iter()
        .map(|e| format!("'{}'", e["name"].as_str().expect("name")))
        .collect();
    let bicep_env: Vec<String> = env
        .iter()
        .map(|o| get(o, "name").expect("name").to_owned())
        .collect();
    assert_eq!(bicep_env, arm_env);
}

#[test]
fn bicep_has_fixed_replicas_no_ingress_and_the_arm_parameters() {
    let lines = bicep_lines();
    let text = lines.join("\n");
    assert!(
        !text.contains("ingress"),
        "no ingress in {BICEP}: the runner only connects out"
    );
    let scale = lines
        .iter()
        .position(|l| l.trim() == "scale: {")
        .expect("scale block");
    assert_eq!(lines[scale + 1].trim(), "minReplicas: replicas");
    assert_eq!(lines[scale + 2].trim(), "maxReplicas: replicas");
    assert!(lines.iter().any(|l| l.trim() == "param replicas int = 2"));

    let bicep_params: BTreeSet<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("param "))
        .map(|rest| rest.split_whitespace().next().expect("a name").to_owned())
        .collect();
    let arm = arm();
    let arm_params: BTreeSet<String> = arm["parameters"]
        .as_object()
        .expect("parameters")
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        bicep_params, arm_params,
        "the Bicep file and the ARM template take the same parameters"
    );

    // Same resource types at the same API versions.
    let arm_types: BTreeSet<String> = arm["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| {
            format!(
                "{}@{}",
                r["type"].as_str().expect("type"),
                r["apiVersion"].as_str().expect("apiVersion")
            )
        })
        .collect();
    let bicep_types: BTreeSet<String> = lines
        .iter()
        .filter(|l| l.starts_with("resource "))
        .map(|l| l.split('\'').nth(1).expect("a quoted type").to_owned())
        .collect();
    assert_eq!(bicep_types, arm_types);
}
