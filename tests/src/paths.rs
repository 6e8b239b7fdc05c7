//! Where the rig's scripts and outputs live.

use std::path::{Path, PathBuf};

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `target/rig/` in the workspace: images, caches and logs.
pub fn rig_dir() -> PathBuf {
    workspace_root().join("target").join("rig")
}

/// `target/rig/logs/`: one console log per scenario (`<scenario>.log`) and `build.log`.
pub fn logs_dir() -> PathBuf {
    rig_dir().join("logs")
}

/// `resources/rig/<script>` in the workspace.
pub(crate) fn rig_script(script: &str) -> PathBuf {
    workspace_root().join("resources").join("rig").join(script)
}
