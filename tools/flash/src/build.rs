//! Building `lookupd` for an archive with cargo (the cross linker for aarch64 is configured in
//! the workspace's .cargo/config.toml).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{FlashError, Result};

/// The triple this `flash` was built for: what `--target host` means.
pub const HOST_TARGET: &str = env!("FLASH_HOST_TARGET");

/// The workspace `flash` was built from; cargo runs there.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `cargo build --release -p lookupd [--target TRIPLE]` in `workspace` and returns the
/// path of the binary cargo reports. `triple` is `None` for the host.
pub fn build_lookupd(workspace: &Path, triple: Option<&str>) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace).args([
        "build",
        "--release",
        "-p",
        "lookupd",
        "--bin",
        "lookupd",
        "--message-format=json-render-diagnostics",
    ]);
    if let Some(t) = triple {
        cmd.args(["--target", t]);
    }
    tracing::info!(?triple, workspace = %workspace.display(), "building lookupd");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| FlashError::Build {
            message: format!("cannot run {cargo}: {e}"),
        })?;
    let mut executable = None;
    let stdout = child.stdout.take().expect("piped");
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.map_err(|e| FlashError::Build {
            message: format!("reading cargo's output: {e}"),
        })?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["target"]["name"] == "lookupd"
            && let Some(exe) = msg["executable"].as_str()
        {
            executable = Some(PathBuf::from(exe));
        }
    }
    let status = child.wait().map_err(|e| FlashError::Build {
        message: e.to_string(),
    })?;
    if !status.success() {
        return Err(FlashError::Build {
            message: format!(
                "cargo build -p lookupd{} failed ({status})",
                triple.map(|t| format!(" --target {t}")).unwrap_or_default()
            ),
        });
    }
    executable.ok_or_else(|| FlashError::Build {
        message: "cargo reported no lookupd executable".into(),
    })
}
