//! deploy/docker/Dockerfile, checked by its instructions. Building the image is not possible on this
//! machine (no Docker daemon, and base images cannot be pulled: only package registries are
//! reachable), so these checks read the Dockerfile and hold it to what the deployments rely on.

use crate::support::read;

const DOCKERFILE: &str = "deploy/docker/Dockerfile";

/// (INSTRUCTION, arguments) with line continuations joined and comments dropped.
fn instructions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in read(DOCKERFILE).lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                pending.push_str(part);
                pending.push(' ');
            }
            None => {
                pending.push_str(trimmed);
                let (inst, args) = pending.split_once(' ').unwrap_or((pending.as_str(), ""));
                out.push((inst.to_uppercase(), args.trim().to_owned()));
                pending.clear();
            }
        }
    }
    assert!(
        pending.is_empty(),
        "{DOCKERFILE} ends inside a continued line"
    );
    out
}

/// The instructions of each build stage, by stage.
fn stages() -> Vec<Vec<(String, String)>> {
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    for inst in instructions() {
        if inst.0 == "FROM" {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .unwrap_or_else(|| panic!("{DOCKERFILE}: {} before FROM", inst.0))
            .push(inst);
    }
    stages
}

fn find<'a>(stage: &'a [(String, String)], inst: &str) -> Vec<&'a str> {
    stage
        .iter()
        .filter(|(i, _)| i == inst)
        .map(|(_, a)| a.as_str())
        .collect()
}

#[test]
fn multi_stage_build_of_the_tether_binary() {
    let stages = stages();
    assert!(stages.len() >= 2, "a build stage and a runtime stage");
    let build = &stages[0];
    let from = find(build, "FROM")[0];
    assert!(from.ends_with(" AS build"), "{from}");
    // The builder's Rust matches the toolchain the repository pins.
    let toolchain = read("rust-toolchain.toml");
    let channel = toolchain
        .lines()
        .find_map(|l| l.strip_prefix("channel = "))
        .expect("rust-toolchain.toml has a channel")
        .trim_matches('"');
    let minor: Vec<&str> = channel.split('.').take(2).collect();
    assert!(
        from.starts_with(&format!("rust:{}-", minor.join("."))),
        "{from} vs {channel}"
    );
    let run = find(build, "RUN").join("\n");
    assert!(
        run.contains("cargo build --release --locked -p tether-cli --bin tether"),
        "{run}"
    );
    assert!(
        read("crates/cli/Cargo.toml").contains("name = \"tether\""),
        "the cli crate builds a binary called tether"
    );

    let runtime = stages.last().expect("a runtime stage");
    let base = find(runtime, "FROM")[0];
    assert!(base.contains("slim"), "a slim runtime image: {base}");
    let copies = find(runtime, "COPY");
    assert!(
        copies.iter().any(|c| c.starts_with("--from=build ")),
        "the binary comes from the build stage"
    );
}

#[test]
fn runtime_runs_tether_as_a_non_root_user_with_a_health_check() {
    let stages = stages();
    let runtime = stages.last().expect("a runtime stage");
    let user = find(runtime, "USER");
    assert_eq!(user.len(), 1, "one USER in the runtime stage");
    let uid = user[0].split(':').next().expect("a user");
    assert!(!["root", "0"].contains(&uid), "non-root: {}", user[0]);
    assert_eq!(find(runtime, "ENTRYPOINT"), ["[\"/usr/local/bin/tether\"]"]);
    assert!(find(runtime, "COPY")
        .iter()
        .any(|c| c.ends_with(" /usr/local/bin/tether")));
    assert_eq!(find(runtime, "CMD"), ["[\"runner\"]"]);
    let health = find(runtime, "HEALTHCHECK");
    assert_eq!(health.len(), 1);
    assert!(health[0].contains(" CMD "), "{}", health[0]);
    assert!(health[0].contains("/metrics") && health[0].contains("TETHER_HEALTHCHECK_URL"));
}

#[test]
fn runtime_works_with_a_read_only_root_filesystem() {
    let stages = stages();
    let runtime = stages.last().expect("a runtime stage");
    let env = find(runtime, "ENV").join(" ");
    let workdir = env
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("TETHER_WORKDIR="))
        .expect("TETHER_WORKDIR is set in the image");
    // The work directory and /tmp are volumes (writable even on a read-only root), created before
    // the VOLUME line with the runtime user as owner, since changes after it would be discarded.
    let volume = find(runtime, "VOLUME");
    assert_eq!(volume, [format!("[\"{workdir}\", \"/tmp\"]")]);
    let at = |inst: &str| runtime.iter().position(|(i, _)| i == inst).expect(inst);
    assert!(at("RUN") < at("VOLUME"));
    assert!(find(runtime, "RUN").join(" ").contains(&format!(
        "-o tether -g tether -m 0750 /var/lib/tether {workdir}"
    )));
}
