//! The reaper: a lab whose harness died (SIGKILL at a CI time limit, the OOM killer) is removed
//! without a human, within seconds.
//!
//! The Ryuk idea, with our own image and no registry. Before a lab creates anything, it starts a
//! reaper container: the node image, network `none`, the Docker socket and the host's `p2plab`
//! binary mounted, running `p2plab reap --run <run>`. The harness attaches to the reaper's stdin
//! and holds that connection for the lab's life. The engine closes the reaper's stdin when the
//! attached client goes (`StdinOnce`), and the kernel closes the client's socket when the harness
//! dies, however it dies. So the reaper reads end of file exactly when the harness is gone, and
//! then removes every container and network carrying the run's label, itself last (`AutoRemove`).
//!
//! The harness's own teardown removes the reaper with the rest (`docker rm -f` kills it before it
//! sees end of file). Keeping a lab (`--keep`, `P2PLAB_KEEP=1`) starts no reaper, or removes it.
//!
//! A second line of defence: each reaper carries the harness that started it (pid namespace, pid,
//! start time, boot id). The first lab of a `p2plab` process [`sweep`]s the runs whose harness is
//! dead and whose reaper is still there (a reaper that could not do its work).

use std::{collections::HashMap, path::PathBuf, sync::atomic::AtomicBool};

use bollard::{
    container::AttachContainerResults,
    models::{ContainerCreateBody, HostConfig},
    query_parameters::{
        AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder,
    },
};

use super::docker::{api, remove_by_label_except, DockerError, Engine, LABEL_RUN};

/// On a reaper: the run it reaps.
pub const LABEL_REAPS: &str = "org.p2plab.reaps";
/// On a reaper: the harness process it watches ([`Harness`]).
pub const LABEL_HARNESS: &str = "org.p2plab.harness";

/// Where the reaper finds the `p2plab` binary in its container.
const IN_CONTAINER: &str = "/usr/local/bin/p2plab-reaper";

/// One process for good: pids are reused, a pid with its start time and the boot is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Harness {
    /// The pid namespace (`pid:[4026531836]`): a pid means something only inside it.
    pid_ns: String,
    pid: u32,
    /// Clock ticks after boot (`/proc/<pid>/stat` field 22).
    start: u64,
    boot: String,
}

impl Harness {
    /// This process, or `None` where `/proc` does not tell.
    pub fn current() -> Option<Self> {
        let pid_ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        Some(Harness {
            pid_ns: pid_ns.to_string_lossy().into_owned(),
            pid: std::process::id(),
            start: p2plab_contract::procfs::parse_stat_start_ticks(&stat)?,
            boot: boot_id()?,
        })
    }

    fn label(&self) -> String {
        format!("{}/{}/{}/{}", self.pid_ns, self.pid, self.start, self.boot)
    }

    fn parse(s: &str) -> Option<Self> {
        let mut f = s.split('/');
        let h = Harness {
            pid_ns: f.next()?.to_string(),
            pid: f.next()?.parse().ok()?,
            start: f.next()?.parse().ok()?,
            boot: f.next()?.to_string(),
        };
        f.next().is_none().then_some(h)
    }

    /// Whether this process has ended, as `me` sees it; `None` when `me` cannot tell (another pid
    /// namespace: its pids are not ours).
    fn is_dead(&self, me: &Harness) -> Option<bool> {
        if self.boot != me.boot {
            return Some(true);
        }
        if self.pid_ns != me.pid_ns {
            return None;
        }
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok();
        Some(
            stat.and_then(|s| p2plab_contract::procfs::parse_stat_start_ticks(&s))
                != Some(self.start),
        )
    }
}

fn boot_id() -> Option<String> {
    let b = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(b.trim().to_string())
}

/// A started reaper: its container, and the attached stdin whose end tells it to reap.
pub(super) struct Reaper {
    pub(super) container: String,
    _stdin: AttachContainerResults,
}

/// The `p2plab` binary to mount into the reaper: `P2PLAB_REAPER_BIN`, else this process when it
/// is `p2plab`, else the `p2plab` beside a test binary (`target/<profile>/deps/..`).
fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("P2PLAB_REAPER_BIN") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    if exe.file_name().is_some_and(|n| n == "p2plab") {
        return Some(exe);
    }
    let dir = exe.parent()?;
    [dir.join("p2plab"), dir.parent()?.join("p2plab")]
        .into_iter()
        .find(|p| p.is_file())
}

/// The engine's socket on this host, from `DOCKER_HOST` (`unix://…`) or the default.
fn socket() -> Option<PathBuf> {
    match std::env::var("DOCKER_HOST") {
        Err(_) => Some(PathBuf::from("/var/run/docker.sock")),
        Ok(h) => h.strip_prefix("unix://").map(PathBuf::from),
    }
}

/// Starts the reaper of run `run_id` (named `docker_name`, labelled `labels` plus its own). A
/// lab can run without one; the error says why there is none.
pub(super) async fn start(
    engine: &Engine,
    run_id: &str,
    docker_name: &str,
    mut labels: HashMap<String, String>,
) -> Result<Reaper, DockerError> {
    sweep_once(engine).await;
    let bin = binary().ok_or_else(|| {
        DockerError::Other("no p2plab binary to run it (set P2PLAB_REAPER_BIN to one)".to_string())
    })?;
    let sock = socket()
        .ok_or_else(|| DockerError::Other("DOCKER_HOST is not a unix socket".to_string()))?;
    let harness = Harness::current()
        .ok_or_else(|| DockerError::Other("this process is not in /proc".to_string()))?;
    labels.insert(LABEL_REAPS.to_string(), run_id.to_string());
    labels.insert(LABEL_HARNESS.to_string(), harness.label());
    let docker = engine.api();
    let body = ContainerCreateBody {
        image: Some(super::image::image_name()),
        cmd: Some(vec![
            IN_CONTAINER.to_string(),
            "reap".to_string(),
            "--run".to_string(),
            run_id.to_string(),
            "--except".to_string(),
            docker_name.to_string(),
        ]),
        labels: Some(labels),
        // stdin stays open until the one attached client (the harness) goes
        open_stdin: Some(true),
        stdin_once: Some(true),
        attach_stdin: Some(true),
        host_config: Some(HostConfig {
            network_mode: Some("none".to_string()),
            auto_remove: Some(true),
            binds: Some(vec![
                format!("{}:{IN_CONTAINER}:ro", bin.display()),
                format!("{}:/var/run/docker.sock", sock.display()),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let opts = CreateContainerOptionsBuilder::default()
        .name(docker_name)
        .build();
    docker
        .create_container(Some(opts), body)
        .await
        .map_err(api("create the reaper"))?;
    let started = async {
        let attach = docker
            .attach_container(
                docker_name,
                Some(
                    AttachContainerOptionsBuilder::default()
                        .stdin(true)
                        .stream(true)
                        .build(),
                ),
            )
            .await
            .map_err(api("attach to the reaper"))?;
        docker
            .start_container(
                docker_name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(api("start the reaper"))?;
        Ok(attach)
    };
    match started.await {
        Ok(attach) => Ok(Reaper {
            container: docker_name.to_string(),
            _stdin: attach,
        }),
        Err(e) => {
            remove(engine, docker_name).await;
            Err(e)
        }
    }
}

/// Removes a reaper without letting it reap: `docker rm -f` kills it while its stdin is open.
pub(super) async fn remove(engine: &Engine, container: &str) {
    let opts = RemoveContainerOptionsBuilder::default().force(true).build();
    if let Err(e) = engine.api().remove_container(container, Some(opts)).await {
        tracing::debug!(container, error = %e, "removing the reaper");
    }
}

/// The reaper's side (`p2plab reap`): waits for end of file on stdin, then removes every
/// container and network of `run_id` but `except` (itself, removed by the engine when it exits).
pub async fn watch(engine: &Engine, run_id: &str, except: &str) -> Result<(), DockerError> {
    use tokio::io::AsyncReadExt;
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 256];
    // Anything the harness writes is ignored: only the end counts.
    while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    let label = format!("{LABEL_RUN}={run_id}");
    // The engine finishes the requests of a client that has gone: a container the harness was
    // creating when it died can appear after the first pass (ci/aborted-runs.sh found one
    // router `Created` 30 s after a SIGABRT during bring-up, 2026-12-07). So the label is swept
    // again at these times (seconds after the end of file); each pass is cheap when nothing is
    // left.
    const PASSES_AT_S: [u64; 5] = [0, 1, 2, 4, 8];
    let started = tokio::time::Instant::now();
    let mut last = None;
    for at in PASSES_AT_S {
        tokio::time::sleep_until(started + std::time::Duration::from_secs(at)).await;
        let mut done = false;
        for _ in 0..3 {
            match remove_by_label_except(engine, &label, Some(except)).await {
                Ok(()) => {
                    done = true;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if done {
            last = None;
        }
    }
    match last {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// [`sweep`], once per process, warning instead of failing.
async fn sweep_once(engine: &Engine) {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    match sweep(engine).await {
        Ok(runs) if !runs.is_empty() => eprintln!(
            "p2plab: removed {} run(s) whose harness had died: {}",
            runs.len(),
            runs.join(" ")
        ),
        Ok(_) => {}
        Err(e) => eprintln!("p2plab: looking for runs of dead harnesses failed: {e}"),
    }
}

/// Removes every run whose reaper is still there although its harness has died (as far as this
/// process can tell); returns their run ids.
pub async fn sweep(engine: &Engine) -> Result<Vec<String>, DockerError> {
    let Some(me) = Harness::current() else {
        return Ok(Vec::new());
    };
    let reapers = super::docker::containers_with(engine, LABEL_REAPS).await?;
    let mut swept = Vec::new();
    for r in reapers {
        let labels = r.labels.unwrap_or_default();
        let (Some(run), Some(h)) = (
            labels.get(LABEL_REAPS),
            labels.get(LABEL_HARNESS).and_then(|h| Harness::parse(h)),
        ) else {
            continue;
        };
        if h.is_dead(&me) == Some(true) {
            super::docker::remove_by_label(engine, &format!("{LABEL_RUN}={run}")).await?;
            swept.push(run.clone());
        }
    }
    Ok(swept)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_harness_label_reads_back() {
        let me = Harness::current().expect("/proc");
        assert_eq!(Harness::parse(&me.label()), Some(me.clone()));
        assert_eq!(Harness::parse("pid:[1]/2/3"), None);
        assert_eq!(Harness::parse("pid:[1]/x/3/b"), None);
        assert_eq!(Harness::parse("pid:[1]/2/3/b/extra"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_reused_pid_or_another_boot_is_not() {
        let me = Harness::current().expect("/proc");
        assert_eq!(me.is_dead(&me), Some(false));
        let reused = Harness {
            start: me.start + 1,
            ..me.clone()
        };
        assert_eq!(reused.is_dead(&me), Some(true));
        let gone = Harness {
            pid: u32::MAX - 1,
            ..me.clone()
        };
        assert_eq!(gone.is_dead(&me), Some(true));
        let rebooted = Harness {
            boot: "another".into(),
            ..me.clone()
        };
        assert_eq!(rebooted.is_dead(&me), Some(true));
        let elsewhere = Harness {
            pid_ns: "pid:[1]".into(),
            ..me.clone()
        };
        assert_eq!(elsewhere.is_dead(&me), None);
    }
}
