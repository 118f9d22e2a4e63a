//! Where the CLI keeps the control plane URL and API token saved by `tether login`:
//! `<config dir>/tether/config.json` (or `$TETHER_CONFIG_DIR/config.json`), mode 0600.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use anyhow::{anyhow, Context};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Saved {
    pub url: String,
    pub token: String,
}

pub fn dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("TETHER_CONFIG_DIR") {
        return Ok(PathBuf::from(d));
    }
    dirs::config_dir()
        .map(|d| d.join("tether"))
        .ok_or_else(|| anyhow!("no config directory: set TETHER_CONFIG_DIR or HOME"))
}

pub fn load() -> anyhow::Result<Option<Saved>> {
    let path = dir()?.join("config.json");
    match fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("{} is not valid; run `tether login` again", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the file atomically (temp file then rename), never readable by others, even briefly.
pub fn save(saved: &Saved) -> anyhow::Result<PathBuf> {
    let dir = dir()?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("config.json");
    let tmp = dir.join(".config.json.tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(serde_json::to_string_pretty(saved)?.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("saving {}", path.display()))?;
    Ok(path)
}

/// Deletes the saved login; its path if there was one.
pub fn forget() -> anyhow::Result<Option<PathBuf>> {
    let path = dir()?.join("config.json");
    match fs::remove_file(&path) {
        Ok(()) => Ok(Some(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("deleting {}", path.display())),
    }
}
