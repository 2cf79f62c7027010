//! The node image builds from nothing: no base image, no registry. A scratch base tag forces the
//! debootstrap path every time; both images are removed afterwards. Needs a Docker engine
//! (`P2PLAB_SKIP_DOCKER=1` skips).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use p2plab::{engine::docker::new_run_id, engine::image::repo_root, testing};

struct RemoveImages(Vec<String>);

impl Drop for RemoveImages {
    fn drop(&mut self) {
        for i in &self.0 {
            let _ = Command::new("docker").args(["rmi", "-f", i]).output();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_image_builds_from_nothing() {
    let _machine = p2plab::testing::whole_machine().await;
    if testing::engine_or_skip("image_from_nothing")
        .await
        .is_none()
    {
        return;
    }
    // The release binaries (and the regular image) first: this test is about the base.
    testing::image().await;
    let id = new_run_id();
    let base = format!("p2plab-scratch-base:{id}");
    let image = format!("p2plab-scratch:{id}");
    let _cleanup = RemoveImages(vec![image.clone(), base.clone()]);
    let out = Command::new("bash")
        .arg(repo_root().join("docker/build-image.sh"))
        .env("P2PLAB_SKIP_CARGO", "1")
        .env(
            "P2PLAB_CARGO_PROFILE",
            std::env::var("P2PLAB_CARGO_PROFILE").unwrap_or_else(|_| "dev".into()),
        )
        .env("P2PLAB_BASE", &base)
        .env("P2PLAB_IMAGE", &image)
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "build-image.sh failed:\n{log}");
    assert!(
        log.contains("debootstrap"),
        "the base was not made from nothing:\n{log}"
    );
    for bin in ["monitor", "listener", "dialer", "probe", "bench"] {
        let run = Command::new("docker")
            .args([
                "run",
                "--rm",
                "--network",
                "none",
                "--label",
                "org.p2plab.managed=true",
                &image,
                bin,
                "--version",
            ])
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{bin} --version in {image}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(String::from_utf8_lossy(&run.stdout).contains(bin), "{bin}");
    }
    let tools = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "--label",
            "org.p2plab.managed=true",
            &image,
            "sh",
            "-c",
            "nft --version && conntrack --version && ip -V && command -v p2plab-router",
        ])
        .output()
        .unwrap();
    assert!(
        tools.status.success(),
        "lab tools missing: {}",
        String::from_utf8_lossy(&tools.stderr)
    );
}
