//! `p2plab`: the lab's command line. See `p2plab --help` and the README.
//!
//! Exit codes: 0 success (for `run`: every expectation held in every repeat); 1 a run whose
//! expectations failed, or a lab that could not be built; 2 bad input (a topology file that does
//! not validate, a bad flag), with one message naming the file, line and column or the flag.

use std::{
    io::IsTerminal,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;

use p2plab::{
    bench::{self, lab as benchlab},
    engine::{
        docker, image,
        run::{self, Options, Progress, RunResult},
    },
    judge::live::Live,
    model::{self as topology, Topology},
    plan::{compose, layout},
    report::{self, graph},
    Engine,
};

#[derive(Parser)]
#[command(
    name = "p2plab",
    version,
    about = "A network lab for libp2p: YAML topologies become isolated Docker labs with NAT routers, faults on a timeline and judged expectations"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check topology files: exit 0 if all are valid, 2 with file:line:column otherwise.
    Validate {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Build the lab, run its faults, judge its expectations, tear it down.
    Run {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Run it this many times (success rate per expectation, with a 95% interval).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
        repeat: u32,
        /// Write events.jsonl, results.json, junit.xml, summary.md and index.html here.
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
        /// Keep the lab afterwards (also: P2PLAB_KEEP=1 keeps a failed one).
        #[arg(long)]
        keep: bool,
        /// Print every node event as it arrives.
        #[arg(long, short)]
        verbose: bool,
        /// Run the lab across the engines of a Docker Swarm instead of on the local engine:
        /// their API addresses, comma-separated, a manager first (e.g. the three of
        /// `ci/swarm-bed.sh env`). Segments become attachable overlay networks; containers are
        /// spread so that LAN hosts and their router are on different engines.
        #[arg(long, value_delimiter = ',', value_name = "URLS")]
        engines: Vec<String>,
    },
    /// Build the lab and show it live until Ctrl-C, then tear it down: on a terminal a board
    /// redrawn in place (nodes, pairs, faults, by name), else one plain line per event.
    Up {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The nodes' raw JSON event lines on stdout instead (the merged stream).
        #[arg(long)]
        events: bool,
    },
    /// Remove a run's containers and networks (found by label), or every p2plab run's.
    Down {
        #[arg(
            value_name = "RUN",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        run: Option<String>,
        #[arg(long)]
        all: bool,
        /// The engines of a swarm the run was on (as given to `run --engines`).
        #[arg(long, value_delimiter = ',', value_name = "URLS")]
        engines: Vec<String>,
    },
    /// List the p2plab runs on this engine.
    Ls,
    /// Print the topology as a graph.
    Graph {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[arg(long, value_enum, default_value = "mermaid")]
        format: GraphFormat,
    },
    /// Print a docker compose file equivalent to the topology (fixed subnets: one copy at a time).
    Compose {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Write it here instead of stdout.
        #[arg(long, short, value_name = "OUT")]
        output: Option<PathBuf>,
        /// Choose the subnets without looking at this machine's networks and routes: the same
        /// file on every machine, for a repository (compose/docker-compose.yml is made so).
        #[arg(long)]
        fixed_subnets: bool,
    },
    /// Write the NAT matrix's topology files (topologies/nat-matrix.yaml and topologies/matrix/)
    /// from the rule that gives every pair its expected outcome.
    Matrix {
        /// The repository's root (the files go under its topologies/).
        #[arg(long, value_name = "DIR", default_value = ".")]
        root: PathBuf,
    },
    /// Measure the node and the lab, each figure next to its baseline: round trips, throughput,
    /// time to direct, discovery, lab bring-up, memory, many nodes in one process. Prints a table,
    /// writes JSON, and calls out what is more than 20% worse than docs/benchmarks.json.
    Bench {
        /// Groups to run, comma-separated: rtt, throughput, direct, discovery, labs, memory, scale.
        #[arg(long, value_delimiter = ',', value_name = "GROUPS")]
        only: Vec<String>,
        /// Fewer repeats everywhere: a smoke run, not figures to publish.
        #[arg(long)]
        quick: bool,
        /// Runs of the home-NAT lab for the time to direct (default 30; 5 with --quick).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
        direct_repeats: Option<u32>,
        /// The earlier figures to compare with: a JSON report (docs/benchmarks.json is the one
        /// --write-doc keeps), or a benchmarks.md of the earlier format with the JSON inside.
        #[arg(long, value_name = "FILE", default_value = "docs/benchmarks.json")]
        baseline: PathBuf,
        /// Write this run's JSON report here.
        #[arg(long, value_name = "FILE", default_value = "target/bench/bench.json")]
        json: PathBuf,
        /// Write this run as the new benchmarks document (e.g. docs/benchmarks.md), rendered from
        /// its data, which goes beside it with the extension .json (docs/benchmarks.json).
        #[arg(long, value_name = "FILE")]
        write_doc: Option<PathBuf>,
        /// Exit 3 when a figure regressed by more than 20%.
        #[arg(long)]
        fail_on_regression: bool,
        /// Also measure bring-up across the engines of a Docker Swarm (group `swarm`): their
        /// API addresses, comma-separated, a manager first (as `run --engines`).
        #[arg(long, value_delimiter = ',', value_name = "URLS")]
        engines: Vec<String>,
    },
    /// The reaper's side of a lab (started by the harness in a container of its own): wait for
    /// stdin to end, then remove every object of run RUN but the container EXCEPT.
    #[command(hide = true)]
    Reap {
        #[arg(long, value_name = "RUN")]
        run: String,
        #[arg(long, value_name = "EXCEPT")]
        except: String,
    },
    /// The node image.
    Image {
        #[command(subcommand)]
        cmd: ImageCmd,
    },
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Build it offline (release binaries, base image by debootstrap if missing); quick when
    /// nothing changed.
    Build,
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    Mermaid,
    Dot,
}

/// A topology error: already rendered, exit 2.
struct BadInput(String);

fn load(path: &Path) -> Result<Topology, BadInput> {
    topology::load(path).map_err(|e| BadInput(e.render()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("p2plab: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(Failure::Bad(BadInput(msg))) => {
            eprintln!("{msg}");
            ExitCode::from(2)
        }
        Err(Failure::Other(e)) => {
            eprintln!("p2plab: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

enum Failure {
    Bad(BadInput),
    Other(anyhow::Error),
}

impl From<BadInput> for Failure {
    fn from(b: BadInput) -> Self {
        Failure::Bad(b)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

async fn engine() -> Result<Engine> {
    Engine::connect().await.context("Docker")
}

/// The local engine, or with `--engines` a swarm's ([`Engine::connect_swarm`]).
async fn engines(urls: &[String]) -> Result<Engine, Failure> {
    if urls.is_empty() {
        return Ok(engine().await?);
    }
    if let Some(bad) = urls.iter().find(|u| {
        !["unix://", "tcp://", "http://"]
            .iter()
            .any(|p| u.starts_with(p))
    }) {
        return Err(BadInput(format!(
            "--engines: `{bad}` is not an engine address (unix:///path/docker.sock or tcp://host:port)"
        ))
        .into());
    }
    Ok(Engine::connect_swarm(urls).await.context("Docker Swarm")?)
}

/// Every engine of a swarm needs the image: it is built here, and no registry serves it.
async fn image_everywhere(engine: &Engine, image: &str) -> Result<()> {
    for m in engine.members().iter().filter(|_| engine.is_swarm()) {
        if !m.image_exists(image).await {
            anyhow::bail!(
                "engine {} has no image {image}: load it there (`docker save {image} | docker -H URL load`; ci/swarm-bed.sh up does)",
                m.name()
            );
        }
    }
    Ok(())
}

async fn dispatch(cli: Cli) -> Result<ExitCode, Failure> {
    match cli.cmd {
        Cmd::Validate { files } => {
            let mut bad = Vec::new();
            for f in &files {
                match load(f) {
                    Ok(t) => println!(
                        "{}: ok: {} ({} segments, {} nodes, {} faults, {} expectations)",
                        f.display(),
                        t.name,
                        t.segments.len(),
                        t.nodes.len(),
                        t.faults.len(),
                        t.expect.len()
                    ),
                    Err(e) => bad.push(e.0),
                }
            }
            if bad.is_empty() {
                Ok(ExitCode::SUCCESS)
            } else {
                Err(BadInput(bad.join("\n")).into())
            }
        }
        Cmd::Run {
            file,
            repeat,
            report: dir,
            keep,
            verbose,
            engines: urls,
        } => {
            let topo = load(&file)?;
            let engine = engines(&urls).await?;
            let image = ensure_image().await?;
            image_everywhere(&engine, &image).await?;
            let mut results: Vec<RunResult> = Vec::new();
            for i in 0..repeat {
                if repeat > 1 {
                    eprintln!("p2plab: {} run {}/{repeat}", topo.name, i + 1);
                }
                let mut opts = Options::new(image.clone());
                opts.keep = keep;
                let r = run_with_progress(
                    engine.clone(),
                    &topo,
                    opts,
                    if verbose { View::Lines } else { View::Quiet },
                )
                .await?;
                println!("{}", report::summary_text(&r));
                let interrupted = r.aborted.is_some();
                results.push(r);
                if interrupted {
                    break;
                }
            }
            if let Some(dir) = dir {
                let files = report::write(&dir, &results)
                    .with_context(|| format!("writing the report to {}", dir.display()))?;
                eprintln!(
                    "p2plab: report: {}",
                    files
                        .iter()
                        .map(|f| f.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            if repeat > 1 {
                let ok = results.iter().filter(|r| r.ok).count();
                println!("{}: {ok} of {} runs passed", topo.name, results.len());
            }
            Ok(if !results.is_empty() && results.iter().all(|r| r.ok) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Up { file, events } => {
            let topo = load(&file)?;
            let engine = engine().await?;
            let image = ensure_image().await?;
            let mut opts = Options::new(image);
            opts.stop_when_settled = false;
            let mut topo = topo;
            // until Ctrl-C; expectations are still judged and printed at the end
            topo.timeout = Duration::from_secs(7 * 24 * 3600);
            eprintln!(
                "p2plab: {}: bringing the lab up; Ctrl-C tears it down",
                topo.name
            );
            let view = match (events, std::io::stderr().is_terminal()) {
                (true, _) => View::Events,
                (false, true) => View::Board,
                (false, false) => View::Lines,
            };
            let r = run_with_progress(engine, &topo, opts, view).await?;
            println!("{}", report::summary_text(&r));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Reap { run, except } => {
            let engine = engine().await?;
            p2plab::engine::reaper::watch(&engine, &run, &except)
                .await
                .map_err(anyhow::Error::from)?;
            eprintln!("p2plab reaper: run {run} removed: its harness is gone");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Down {
            run,
            all,
            engines: urls,
        } => {
            let engine = engines(&urls).await?;
            let label = match (&run, all) {
                (_, true) => format!("{}=true", docker::LABEL_MANAGED),
                (Some(r), false) => format!("{}={r}", docker::LABEL_RUN),
                (None, false) => unreachable!("clap requires RUN or --all"),
            };
            let before = docker::list_runs(&engine)
                .await
                .map_err(anyhow::Error::from)?;
            docker::remove_by_label(&engine, &label)
                .await
                .map_err(anyhow::Error::from)?;
            let removed: Vec<&str> = before
                .iter()
                .filter(|r| all || run.as_deref() == Some(r.run_id.as_str()))
                .map(|r| r.run_id.as_str())
                .collect();
            if removed.is_empty() {
                eprintln!(
                    "p2plab: nothing to remove{}",
                    run.map(|r| format!(" for run {r}")).unwrap_or_default()
                );
            } else {
                println!("removed: {}", removed.join(" "));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Ls => {
            let engine = engine().await?;
            let runs = docker::list_runs(&engine)
                .await
                .map_err(anyhow::Error::from)?;
            if runs.is_empty() {
                println!("no p2plab runs");
            } else {
                println!(
                    "{:<16} {:<24} {:>10} {:>8} {:>8}  created",
                    "RUN", "LAB", "CONTAINERS", "RUNNING", "NETWORKS"
                );
                for r in runs {
                    let created = chrono::DateTime::from_timestamp(r.created as i64, 0)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default();
                    println!(
                        "{:<16} {:<24} {:>10} {:>8} {:>8}  {created}",
                        r.run_id, r.lab, r.containers, r.running, r.networks
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Graph { file, format } => {
            let topo = load(&file)?;
            let out = match format {
                GraphFormat::Mermaid => graph::mermaid(&topo, None),
                GraphFormat::Dot => graph::dot(&topo, None),
            };
            println!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Compose {
            file,
            output,
            fixed_subnets,
        } => {
            let topo = load(&file)?;
            let text = if fixed_subnets {
                compose::fixed(&topo, &image::image_name())
                    .map_err(anyhow::Error::msg)?
                    .0
            } else {
                let used = match Engine::connect().await {
                    Ok(e) => e.used_subnets().await.map_err(anyhow::Error::from)?,
                    Err(_) => std::fs::read_to_string("/proc/net/route")
                        .map(|t| p2plab::plan::parse_proc_routes(&t))
                        .unwrap_or_default(),
                };
                let subnets =
                    compose::subnets_for_compose(&topo, &used).map_err(anyhow::Error::msg)?;
                let lay = layout::layout(&topo, &subnets).map_err(anyhow::Error::from)?;
                compose::compose(&topo, &lay, &image::image_name())
            };
            match output {
                Some(o) => {
                    std::fs::write(&o, text).with_context(|| format!("writing {}", o.display()))?
                }
                None => print!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Matrix { root } => {
            for (path, text) in p2plab::plan::matrix::files() {
                let at = root.join(&path);
                if let Some(dir) = at.parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                std::fs::write(&at, text).with_context(|| format!("writing {}", at.display()))?;
                println!("{}", at.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Bench {
            only,
            quick,
            direct_repeats,
            baseline,
            json,
            write_doc,
            fail_on_regression,
            engines: urls,
        } => {
            let swarm = match urls.is_empty() {
                true => None,
                false => Some(engines(&urls).await?),
            };
            bench(
                only,
                quick,
                direct_repeats,
                baseline,
                json,
                write_doc,
                fail_on_regression,
                swarm,
            )
            .await
        }
        Cmd::Image {
            cmd: ImageCmd::Build,
        } => {
            let name = ensure_image().await?;
            println!("{name}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Reads the earlier figures: `None` when the file does not exist.
fn read_baseline(path: &Path) -> Result<Option<bench::Report>, Failure> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(BadInput(format!("--baseline {}: {e}", path.display())).into()),
    };
    let parsed = if text.trim_start().starts_with('{') {
        bench::Report::from_json(&text)
    } else {
        bench::Report::from_markdown(&text)
    };
    parsed
        .map(Some)
        .map_err(|e| BadInput(format!("--baseline {}: {e}", path.display())).into())
}

#[allow(clippy::too_many_arguments)]
async fn bench(
    only: Vec<String>,
    quick: bool,
    direct_repeats: Option<u32>,
    baseline: PathBuf,
    json: PathBuf,
    write_doc: Option<PathBuf>,
    fail_on_regression: bool,
    swarm: Option<Engine>,
) -> Result<ExitCode, Failure> {
    for g in &only {
        if !benchlab::GROUPS.contains(&g.as_str()) {
            return Err(BadInput(format!(
                "invalid value '{g}' for '--only': groups are {}",
                benchlab::GROUPS.join(", ")
            ))
            .into());
        }
    }
    let previous = read_baseline(&baseline)?;
    let engine = engine().await?;
    let docker_version = engine
        .api()
        .version()
        .await
        .ok()
        .and_then(|v| v.version)
        .unwrap_or_else(|| "unknown".into());
    let image = ensure_image().await?;
    if let Some(s) = &swarm {
        image_everywhere(s, &image).await?;
    }
    let opts = benchlab::BenchOptions {
        swarm,
        image,
        only,
        quick,
        direct_repeats: direct_repeats.map_or(if quick { 5 } else { 30 }, |n| n as usize),
    };
    let command = std::iter::once("p2plab".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let date = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let progress = |s: String| eprintln!("p2plab bench: {s}");
    let (figures, errors) = tokio::select! {
        f = benchlab::run_all(&engine, &opts, &progress) => f.map_err(|e| BadInput(e.to_string()))?,
        _ = shutdown_signal() => {
            eprintln!("p2plab bench: interrupted; the labs are torn down");
            return Ok(ExitCode::from(130));
        }
    };
    let report = bench::Report {
        format: bench::FORMAT,
        date,
        command,
        machine: bench::Machine::detect(docker_version),
        groups: benchlab::groups(&opts)
            .into_iter()
            .filter(|g| figures.iter().any(|f| f.group == g.id))
            .collect(),
        figures,
    };
    println!("{}", report.table(previous.as_ref()));
    if previous.is_none() {
        println!(
            "No earlier figures to compare with ({} not found).",
            baseline.display()
        );
    }
    if let Some(dir) = json.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&json, report.to_json())
        .with_context(|| format!("writing {}", json.display()))?;
    eprintln!("p2plab bench: JSON report: {}", json.display());
    if let Some(doc) = write_doc {
        let data = doc.with_extension("json");
        std::fs::write(&data, report.to_json())
            .with_context(|| format!("writing {}", data.display()))?;
        let name = data
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        std::fs::write(&doc, report.markdown(previous.as_ref(), &name))
            .with_context(|| format!("writing {}", doc.display()))?;
        eprintln!(
            "p2plab bench: wrote {} and {}",
            doc.display(),
            data.display()
        );
    }
    for e in &errors {
        println!("NOT MEASURED: {e}");
    }
    let regressed = previous.as_ref().is_some_and(|p| {
        bench::compare(&report, p, bench::REGRESSION_THRESHOLD)
            .iter()
            .any(|c| c.regression)
    });
    Ok(if !errors.is_empty() {
        ExitCode::from(1)
    } else if regressed && fail_on_regression {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

async fn ensure_image() -> Result<String> {
    eprintln!("p2plab: checking the node image (builds it when missing or stale)");
    image::ensure_image_with_progress(None, |phase| eprintln!("p2plab: image: {phase}"))
        .await
        .map_err(|e| anyhow::anyhow!("image build failed (exit {}):\n{}", e.code, e.output))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// One event as a short line: `+12.3s alice connected peer=bob path=direct`.
/// How a running lab is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    /// Bring-up progress and faults only.
    Quiet,
    /// One plain line per event, node names instead of peer ids.
    Lines,
    /// A board of nodes, pairs and faults, redrawn in place (a terminal).
    Board,
    /// The raw JSON event lines on stdout.
    Events,
}

/// How often the board is redrawn at most.
const BOARD_EVERY: Duration = Duration::from_millis(200);

async fn run_with_progress(
    engine: Engine,
    topo: &Topology,
    opts: Options,
    view: View,
) -> Result<RunResult> {
    let tty = std::io::stderr().is_terminal();
    let (ptx, mut prx) = mpsc::unbounded_channel::<Progress>();
    let bar = if tty {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.enable_steady_tick(Duration::from_millis(120));
        Some(b)
    } else {
        None
    };
    let say = |bar: &Option<ProgressBar>, s: String| match bar {
        Some(b) => b.println(s),
        None => eprintln!("{s}"),
    };
    let printer = {
        let bar = bar.clone();
        let lab = topo.name.clone();
        tokio::spawn(async move {
            let mut live = Live::new(&lab);
            let mut events = 0u64;
            let mut board_on = false;
            let mut dirty = false;
            let mut tick = tokio::time::interval(BOARD_EVERY);
            loop {
                let p = tokio::select! {
                    p = prx.recv() => match p {
                        Some(p) => p,
                        None => break,
                    },
                    _ = tick.tick(), if dirty => {
                        if let Some(b) = &bar {
                            b.set_message(live.board());
                        }
                        dirty = false;
                        continue;
                    }
                };
                match p {
                    Progress::Step(s) => {
                        if let Some(b) = bar.as_ref().filter(|_| !board_on) {
                            b.set_message(s.clone());
                        }
                        say(&bar, format!("p2plab: {s}"));
                    }
                    Progress::Up { name, n, total } => match &bar {
                        Some(b) if !board_on => {
                            b.set_length(total as u64);
                            b.set_position(n as u64);
                            b.set_message(format!("{name} up"));
                        }
                        Some(_) => {}
                        None => eprintln!("p2plab: {name} up ({n}/{total})"),
                    },
                    Progress::Event(l) => {
                        events += 1;
                        live.handle(&l);
                        match view {
                            View::Lines => say(&bar, live.line(&l)),
                            View::Events => println!("{}", l.to_json()),
                            View::Board => {
                                if let (Some(b), false) = (&bar, board_on) {
                                    // the lab is up: from now on the bar is the board
                                    b.set_style(
                                        ProgressStyle::with_template("{msg}")
                                            .unwrap_or_else(|_| ProgressStyle::default_bar()),
                                    );
                                    board_on = true;
                                }
                                dirty = true;
                            }
                            View::Quiet => {}
                        }
                        if let Some(b) = bar.as_ref().filter(|_| !board_on) {
                            b.set_message(format!("{events} events"));
                        }
                    }
                    Progress::Fault(f) => {
                        live.fault(&f);
                        if board_on {
                            dirty = true;
                        } else {
                            say(
                                &bar,
                                format!(
                                    "p2plab: +{:.1}s fault: {}{}",
                                    f.t_ms as f64 / 1000.0,
                                    f.action,
                                    if f.ok {
                                        String::new()
                                    } else {
                                        format!(" FAILED: {}", f.error)
                                    }
                                ),
                            );
                        }
                    }
                    Progress::Verdict(_) => {}
                }
            }
            if board_on {
                // the last state stays on the screen
                if let Some(b) = &bar {
                    b.finish_and_clear();
                }
                eprint!("{}", live.board());
                return;
            }
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
        })
    };
    let r = run::run(engine, topo, opts, Some(ptx), shutdown_signal()).await;
    let _ = printer.await;
    r.map_err(anyhow::Error::from)
}
