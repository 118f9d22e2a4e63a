//! "Apply the new credentials" for the Credentials tab and the reveal page: the shared per-platform
//! steps (`tether_domain::apply_guide`, which the CLI prints too) with the runner's own values
//! filled in, following the live state: the steps while instances still have to move to the newest
//! generation, "Applied: …" once every live instance is on it. The secret itself is never put in:
//! commands say `<client_secret>`.

use tether_domain::apply_guide::{self, fill, Vars};
use tether_domain::{RolloutState, RunnerStatus};

use super::when;
use crate::services::runners::LiveRunner;

#[derive(Debug, Clone)]
pub struct ApplyGuide {
    /// The platform as the guide names it: AWS, Azure, Google Cloud, Snowflake, Local.
    pub platform: &'static str,
    pub secret_lives: String,
    pub steps: Vec<ApplyStep>,
    pub note: Option<String>,
    /// How the live instances pick up the new secret ("reloads by itself" for each), if any is live.
    pub reload: Option<String>,
    /// What holds until the steps are done, as true of the runner right now.
    pub until_done: String,
    /// Set once every live instance is on the newest generation: "Applied: …". The steps are then
    /// not shown.
    pub applied: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ApplyStep {
    pub what: String,
    /// Shell commands or SQL to copy, exactly.
    pub command: Option<String>,
}

/// The section for `l`, whose instances connect to `url`.
pub fn guide(l: &LiveRunner, url: &str) -> ApplyGuide {
    let g = apply_guide::guide(l.record.platform.as_str());
    let secret_file = l.secret_file.as_deref();
    let v = Vars {
        runner: l.record.name.as_str(),
        client_id: l.record.client_id.as_str(),
        url,
        generation: l.record.generation.0,
        secret_file,
    };
    let live = l.instances.len();
    let reloading = l
        .instances
        .iter()
        .filter(|i| i.hot_reload == Some(true))
        .count();
    let all_reload = live > 0 && reloading == live;
    let r = &l.rollout;
    let applied = (r.state == RolloutState::Applied).then(|| {
        let n = match r.instances_on_newest {
            1 => "1 instance".to_owned(),
            n => format!("{n} instances"),
        };
        format!(
            "Applied: {n} on generation {}{}.",
            r.generation,
            l.applied_since
                .map(|t| format!(" since {}", when(t)))
                .unwrap_or_default()
        )
    });
    let until_done = match (r.state, l.status.status) {
        (RolloutState::Overlap, _) => format!(
            "Until this is done, instances keep using the previous secret{}; then they are \
             disconnected. Nothing is disconnected before that.",
            r.retiring_until
                .map(|t| format!(" until {}", when(t)))
                .unwrap_or_default()
        ),
        (_, RunnerStatus::Running) => format!(
            "{} still use an older generation and must move to generation {}.",
            match r.instances_on_older {
                1 => "1 instance".to_owned(),
                n => format!("{n} instances"),
            },
            r.generation
        ),
        _ => "Until this is done, the runner's status shows unknown in the Runners list and it \
              can't run pipelines."
            .to_owned(),
    };
    let reload = apply_guide::reload_line(reloading, live);
    ApplyGuide {
        platform: g.short,
        secret_lives: fill(g.secret_lives, &v),
        steps: apply_guide::steps(g, all_reload)
            .map(|s| ApplyStep {
                what: fill(s.what, &v),
                command: s.command.map(|c| fill(c, &v)),
            })
            .collect(),
        note: g.note.map(|n| fill(n, &v)),
        reload,
        until_done,
        applied,
    }
}
