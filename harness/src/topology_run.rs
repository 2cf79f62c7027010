//! The library form of `p2plab run FILE`, for a test of your own (in the style of
//! testcontainers): one call loads a topology file, brings the lab up in Docker, judges its
//! expectations, tears it down and writes its report; the handle it returns holds the verdicts,
//! the events and where the report is.
//!
//! ```no_run
//! // in a `#[tokio::test(flavor = "multi_thread")] async fn`:
//! # async fn my_peers_punch_through_two_home_nats() {
//! let run = p2plab::TopologyRun::file("topologies/home-nat.yaml").await.unwrap();
//! run.assert_passed(); // else: the verdicts, each node's last stderr lines, the report's path
//! # }
//! ```
//!
//! Without a Docker engine the call fails with one clear message; set `P2PLAB_SKIP_DOCKER=1` to
//! make it return [`Error::Skipped`] instead (for machines that cannot run labs). The node image
//! is built when missing or stale (from this repository's `docker/build-image.sh`; minutes on a
//! fresh machine, a second otherwise). With [`Builder::keep_lab`] the lab stays up after the
//! verdict, for a test to look inside, and is removed when the handle is dropped.

use std::path::{Path, PathBuf};

use p2plab_contract::EventLine;

use crate::{
    engine::{
        docker::{remove_run_from_drop, Engine},
        image,
        run::{self, Options, RunResult},
    },
    judge::expect::Verdict,
    model, report,
};

/// Why a topology could not be run (its verdicts are not errors: see [`TopologyRun::passed`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is not a valid topology: the rendered message names the file, line and column.
    #[error("{0}")]
    Topology(String),
    #[error("no Docker engine: {0} (set P2PLAB_SKIP_DOCKER=1 to skip labs on this machine)")]
    NoEngine(String),
    #[error("skipped: P2PLAB_SKIP_DOCKER=1")]
    Skipped,
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error(transparent)]
    Run(#[from] run::RunError),
}

/// How to run a topology; [`TopologyRun::builder`].
#[derive(Debug, Clone)]
pub struct Builder {
    path: PathBuf,
    image: Option<String>,
    report_dir: Option<PathBuf>,
    keep_lab: bool,
    cargo_profile: Option<String>,
}

impl Builder {
    /// Run this image instead of building the node image (`P2PLAB_IMAGE` or `p2plab-node:latest`).
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.image = Some(image.into());
        self
    }

    /// Write the report here (default `target/p2plab-reports/<topology name>` in this
    /// repository).
    pub fn report_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.report_dir = Some(dir.into());
        self
    }

    /// Keep the lab up after the verdict, until the handle is dropped.
    pub fn keep_lab(mut self, keep: bool) -> Self {
        self.keep_lab = keep;
        self
    }

    /// Build the node image from this cargo profile's binaries (`release` by default; `dev` reuses
    /// what `cargo test` built).
    pub fn cargo_profile(mut self, profile: impl Into<String>) -> Self {
        self.cargo_profile = Some(profile.into());
        self
    }

    /// Loads, runs, judges, tears down (unless kept) and writes the report.
    pub async fn run(self) -> Result<TopologyRun, Error> {
        let topo = model::load(&self.path).map_err(|e| Error::Topology(e.render()))?;
        if std::env::var("P2PLAB_SKIP_DOCKER").is_ok_and(|v| v == "1") {
            return Err(Error::Skipped);
        }
        let engine = Engine::connect()
            .await
            .map_err(|e| Error::NoEngine(e.to_string()))?;
        let image = match self.image {
            Some(i) => i,
            None => image::ensure_image_profile(self.cargo_profile.as_deref()).await?,
        };
        let mut opts = Options::new(image);
        opts.keep |= self.keep_lab;
        let result = run::run(engine.clone(), &topo, opts, None, std::future::pending()).await?;
        let report_dir = self.report_dir.unwrap_or_else(|| {
            image::repo_root()
                .join("target/p2plab-reports")
                .join(&topo.name)
        });
        if let Err(e) = report::write(&report_dir, std::slice::from_ref(&result)) {
            eprintln!(
                "p2plab: cannot write the report to {}: {e}",
                report_dir.display()
            );
        }
        let kept = self.keep_lab.then(|| (engine, result.run_id.clone()));
        Ok(TopologyRun {
            result,
            report_dir,
            kept,
        })
    }
}

/// A topology that was run and judged. See the [module documentation](self).
pub struct TopologyRun {
    result: RunResult,
    report_dir: PathBuf,
    /// A lab kept up after the verdict, removed on drop.
    kept: Option<(Engine, String)>,
}

impl TopologyRun {
    /// Runs the topology file at `path` with the defaults.
    pub async fn file(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::builder(path).run().await
    }

    pub fn builder(path: impl AsRef<Path>) -> Builder {
        Builder {
            path: path.as_ref().to_path_buf(),
            image: None,
            report_dir: None,
            keep_lab: false,
            cargo_profile: None,
        }
    }

    /// Every expectation held (and no container had a route out of the lab).
    pub fn passed(&self) -> bool {
        self.result.ok
    }

    pub fn verdicts(&self) -> &[Verdict] {
        &self.result.verdicts
    }

    /// Every node event of the run, in time order.
    pub fn events(&self) -> &[EventLine] {
        &self.result.timeline.events
    }

    /// Everything the runner knows about the run (figures per pair, faults, times, memory).
    pub fn result(&self) -> &RunResult {
        &self.result
    }

    /// Where `events.jsonl`, `results.json`, `junit.xml`, `summary.md` and `index.html` are.
    pub fn report_dir(&self) -> &Path {
        &self.report_dir
    }

    /// The verdict block `p2plab run` prints.
    pub fn summary(&self) -> String {
        report::summary_text(&self.result)
    }

    /// Panics unless the run passed, with the verdicts, each node's last stderr lines and the
    /// report's path.
    #[track_caller]
    pub fn assert_passed(&self) {
        if self.passed() {
            return;
        }
        let mut text = self.summary();
        for (node, tail) in &self.result.stderr {
            text.push_str(&format!("\n--- {node} stderr ---\n{tail}"));
        }
        panic!(
            "{text}\nreport: {}",
            self.report_dir.join("index.html").display()
        );
    }
}

impl std::fmt::Debug for TopologyRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopologyRun")
            .field("topology", &self.result.topology.name)
            .field("run_id", &self.result.run_id)
            .field("passed", &self.passed())
            .field("report_dir", &self.report_dir)
            .field("kept", &self.kept.is_some())
            .finish()
    }
}

impl Drop for TopologyRun {
    fn drop(&mut self) {
        if let Some((engine, run_id)) = self.kept.take() {
            remove_run_from_drop(&engine, &run_id);
        }
    }
}
