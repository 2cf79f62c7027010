//! The node image: one image for every role, built from nothing by `docker/build-image.sh`
//! (release binaries on the host, a debootstrapped base when none can be pulled). The script is
//! idempotent and takes a lock, so parallel callers build once.

use std::path::PathBuf;

/// The image every lab container runs.
pub fn image_name() -> String {
    std::env::var("P2PLAB_IMAGE").unwrap_or_else(|_| DEFAULT_IMAGE.to_string())
}

/// The node image's tag when `P2PLAB_IMAGE` does not name another.
pub const DEFAULT_IMAGE: &str = "p2plab-node:latest";

/// The repository root (where `docker/` lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Why the image could not be built.
#[derive(Debug, thiserror::Error)]
#[error("building the node image failed (docker/build-image.sh, exit {code}):\n{output}")]
pub struct ImageError {
    pub code: i32,
    pub output: String,
}

/// Runs `docker/build-image.sh` (quick when nothing changed) and returns the image name. The
/// binaries are release builds unless `P2PLAB_CARGO_PROFILE` says otherwise.
pub async fn ensure_image() -> Result<String, ImageError> {
    ensure_image_profile(None).await
}

/// As [`ensure_image`], with the binaries of cargo profile `profile` (`release` or `dev`) unless
/// `P2PLAB_CARGO_PROFILE` is set. The tests use `dev`: `cargo test` has built those already.
pub async fn ensure_image_profile(profile: Option<&str>) -> Result<String, ImageError> {
    ensure_image_with_progress(profile, |_| {}).await
}

/// As [`ensure_image_profile`], telling `progress` what the build is doing as it goes: the
/// script's own phase lines (base image, cargo build, image build, each with its time) and
/// cargo's last line or its errors, not the hundreds of crates it compiles. A fresh machine
/// takes minutes here; a command line should not sit silent through them.
pub async fn ensure_image_with_progress(
    profile: Option<&str>,
    progress: impl Fn(&str),
) -> Result<String, ImageError> {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let script = repo_root().join("docker").join("build-image.sh");
    let spawned = tokio::process::Command::new("bash")
        .arg(&script)
        .current_dir(repo_root())
        .env("P2PLAB_IMAGE", image_name())
        .env(
            "P2PLAB_CARGO_PROFILE",
            std::env::var("P2PLAB_CARGO_PROFILE")
                .ok()
                .or(profile.map(str::to_string))
                .unwrap_or_else(|| "release".into()),
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = spawned.map_err(|e| ImageError {
        code: -1,
        output: format!("cannot run {}: {e}", script.display()),
    })?;
    // Both pipes are drained together: a full stdout pipe would stall the script otherwise.
    let mut out_lines = child.stdout.take().map(|o| BufReader::new(o).split(b'\n'));
    let mut err_lines = child.stderr.take().map(|e| BufReader::new(e).split(b'\n'));
    let mut output = String::new();
    while out_lines.is_some() || err_lines.is_some() {
        let line = tokio::select! {
            l = async { out_lines.as_mut()?.next_segment().await.ok().flatten() }, if out_lines.is_some() => match l {
                Some(l) => l,
                None => { out_lines = None; continue; }
            },
            l = async { err_lines.as_mut()?.next_segment().await.ok().flatten() }, if err_lines.is_some() => match l {
                Some(l) => l,
                None => { err_lines = None; continue; }
            },
        };
        // Lossy: a byte that is not UTF-8 must not stop the draining (the script would block).
        let line = String::from_utf8_lossy(&line);
        if let Some(phase) = progress_line(&line) {
            progress(phase);
        }
        output.push_str(&line);
        output.push('\n');
    }
    let status = child.wait().await.map_err(|e| ImageError {
        code: -1,
        output: format!("{}: {e}", script.display()),
    })?;
    if !status.success() {
        return Err(ImageError {
            code: status.code().unwrap_or(-1),
            output,
        });
    }
    Ok(image_name())
}

/// The part of a line of the image build worth showing while it runs, if any.
fn progress_line(line: &str) -> Option<&str> {
    if let Some(phase) = line.strip_prefix("build-image.sh: ") {
        return Some(phase);
    }
    let t = line.trim_start();
    (t.starts_with("Finished ") || t.starts_with("error")).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_phases_and_cargo_outcomes_are_shown() {
        assert_eq!(
            progress_line("build-image.sh: built p2plab-node:latest in 12 s"),
            Some("built p2plab-node:latest in 12 s")
        );
        assert_eq!(
            progress_line("    Finished `release` profile [optimized] target(s) in 5m 11s"),
            Some("Finished `release` profile [optimized] target(s) in 5m 11s")
        );
        assert_eq!(
            progress_line("error[E0433]: cannot find module"),
            Some("error[E0433]: cannot find module")
        );
        assert_eq!(progress_line("   Compiling serde v1.0.229"), None);
        assert_eq!(progress_line("Step 3/7 : COPY bin/ /usr/local/bin/"), None);
    }
}
