//! "Apply the new credentials" for the Credentials tab and the reveal page: the shared per-platform
//! steps (`tether_domain::apply_guide`, which the CLI prints too) with the runner's own values
//! filled in. The secret itself is never put in: commands say `<client_secret>`.

use tether_domain::apply_guide::{self, fill, Vars};
use tether_domain::Platform;

#[derive(Debug, Clone)]
pub struct ApplyGuide {
    /// The platform as the guide names it: AWS, Azure, Google Cloud, Snowflake, Local.
    pub platform: &'static str,
    pub secret_lives: String,
    pub steps: Vec<ApplyStep>,
    pub note: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ApplyStep {
    pub what: String,
    /// Shell commands or SQL to copy, exactly.
    pub command: Option<String>,
}

/// The steps for a runner named `runner` with `client_id`, connecting to `url`.
pub fn guide(platform: Platform, runner: &str, client_id: &str, url: &str) -> ApplyGuide {
    let g = apply_guide::guide(platform.as_str());
    let v = Vars {
        runner,
        client_id,
        url,
        generation: 0,
    };
    ApplyGuide {
        platform: g.short,
        secret_lives: fill(g.secret_lives, &v),
        steps: g
            .steps
            .iter()
            .map(|s| ApplyStep {
                what: fill(s.what, &v),
                command: s.command.map(|c| fill(c, &v)),
            })
            .collect(),
        note: g.note.map(|n| fill(n, &v)),
    }
}
