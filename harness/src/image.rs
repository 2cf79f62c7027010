//! The node image: one image for every role, built from nothing by `docker/build-image.sh`
//! (release binaries on the host, a debootstrapped base when none can be pulled). The script is
//! idempotent and takes a lock, so parallel callers build once.

use std::path::PathBuf;

/// The image every lab container runs.
pub fn image_name() -> String {
    std::env::var("P2PLAB_IMAGE").unwrap_or_else(|_| "p2plab-node:latest".to_string())
}

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
    let script = repo_root().join("docker").join("build-image.sh");
    let out = tokio::process::Command::new("bash")
        .arg(&script)
        .current_dir(repo_root())
        .env("P2PLAB_IMAGE", image_name())
        .env(
            "P2PLAB_CARGO_PROFILE",
            std::env::var("P2PLAB_CARGO_PROFILE").ok().or(profile.map(str::to_string)).unwrap_or_else(|| "release".into()),
        )
        .output()
        .await
        .map_err(|e| ImageError {
            code: -1,
            output: format!("cannot run {}: {e}", script.display()),
        })?;
    if !out.status.success() {
        let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(&out.stderr));
        return Err(ImageError {
            code: out.status.code().unwrap_or(-1),
            output,
        });
    }
    Ok(image_name())
}
