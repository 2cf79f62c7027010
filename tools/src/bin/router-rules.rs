//! `router-rules`: a lab router's decisions for `docker/router.sh` (see `p2plab_tools::router`).
//! Every command reads the router's settings from its `P2PLAB_*` environment
//! ([`RouterEnv::from_env`]); a bad setting is one line on stderr naming the variable and its
//! value, and exit 1. Bad flags: exit 2.
//!
//! - `env`: checks the settings; prints them as `NAME='value'` lines for the shell's `eval`.
//! - `ifaces --addrs "$(ip -o -4 addr show)" --routes "$(ip -4 route show default)"`: finds the
//!   LAN and WAN interfaces and the Docker host's addresses; prints them for `eval`. Exit 3 when
//!   an interface is missing (it may still appear: try again), 1 when waiting cannot help.
//! - `rules --lan-if IF --wan-if IF --host-addr IP...`: the nftables ruleset for `nft -f`.
//! - `upnp-conf --lan-if IF --wan-if IF [--uuid U]`: miniupnpd's configuration.
//! - `stun`: answers STUN binding requests on 127.0.0.1 with the WAN address (miniupnpd's
//!   self-test); prints `ready` once bound, then serves until killed.
//! - `ready ...`: the `router_ready` line.
use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    process::ExitCode,
};

use clap::{Args, Parser, Subcommand};
use p2plab_contract::router::{Prefix, RouterEnv};
use p2plab_tools::router::{self, Ifaces, STUN_PORT};

#[derive(Debug, Parser)]
#[command(
    name = "router-rules",
    version,
    about = "A lab router's decisions, from its P2PLAB_* environment"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Check the settings and print them for the shell.
    Env,
    /// Find the interfaces and the Docker host's addresses.
    Ifaces {
        /// The output of `ip -o -4 addr show`.
        #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
        addrs: String,
        /// The output of `ip -4 route show default`.
        #[arg(
            long,
            value_name = "TEXT",
            default_value = "",
            allow_hyphen_values = true
        )]
        routes: String,
    },
    /// The nftables ruleset.
    Rules(Found),
    /// miniupnpd's configuration (the upnp profile).
    UpnpConf {
        #[command(flatten)]
        found: Found,
        /// The IGD's UUID.
        #[arg(long, value_name = "UUID")]
        uuid: Option<String>,
    },
    /// A STUN responder on 127.0.0.1 answering with the WAN address.
    Stun {
        #[arg(long, value_name = "PORT", default_value_t = STUN_PORT)]
        port: u16,
    },
    /// The router_ready line.
    Ready {
        #[command(flatten)]
        found: Found,
        /// The router's LAN address.
        #[arg(long, value_name = "IP")]
        lan_ip: Ipv4Addr,
        /// The WAN interface's prefix.
        #[arg(long, value_name = "PREFIX")]
        wan_subnet: Prefix,
        /// The ruleset file loaded.
        #[arg(long, value_name = "FILE")]
        ruleset: String,
        /// Milliseconds to render and load it.
        #[arg(long, value_name = "MS")]
        apply_ms: u64,
        /// miniupnpd's pid (the upnp profile).
        #[arg(long, value_name = "PID")]
        upnp_pid: Option<u32>,
        /// Milliseconds miniupnpd took to listen.
        #[arg(long, value_name = "MS", default_value_t = 0)]
        upnp_start_ms: u64,
    },
}

/// What `ifaces` found, handed back by the shell.
#[derive(Debug, Args)]
struct Found {
    #[arg(long, value_name = "IFACE")]
    lan_if: String,
    #[arg(long, value_name = "IFACE")]
    wan_if: String,
    /// An address of the Docker host on the router's networks (repeatable; space-separated lists accepted).
    #[arg(long = "host-addr", value_name = "IP", value_delimiter = ' ', num_args = 1..)]
    host_addrs: Vec<Ipv4Addr>,
}

impl Found {
    fn ifaces(self, lan_ip: Ipv4Addr, wan_subnet: Prefix) -> Ifaces {
        Ifaces {
            lan_if: self.lan_if,
            lan_ip,
            wan_if: self.wan_if,
            wan_subnet,
            host_addrs: self.host_addrs,
        }
    }
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("router-rules: {message}");
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = match RouterEnv::from_env(|k| std::env::var(k).ok()) {
        Ok(e) => e,
        Err(e) => return fail(1, e),
    };
    let unknown = Ipv4Addr::UNSPECIFIED;
    let nowhere = Prefix::of(unknown, 0);
    match cli.cmd {
        Cmd::Env => {
            let routes: Vec<String> = env.uplink_routes().iter().map(Prefix::to_string).collect();
            print!(
                "{}",
                router::shell(&[
                    ("NAT", env.profile.as_str().into()),
                    ("LAN_SUBNET", env.lan.to_string()),
                    ("WAN_IP", env.wan_ip.to_string()),
                    (
                        "UPLINK_GW",
                        env.uplink_gw.map(|g| g.to_string()).unwrap_or_default()
                    ),
                    ("UPLINK_ROUTES", routes.join(" ")),
                    ("WAIT_IFACES", env.wait_ifaces_s().to_string()),
                    (
                        "IPV6",
                        env.ipv6.map(|v| v.policy.to_string()).unwrap_or_default()
                    ),
                    (
                        "UPNP_HTTP_PORT",
                        p2plab_tools::nft::UPNP_HTTP_PORT.to_string()
                    ),
                    ("NATPMP_PORT", p2plab_tools::nft::NATPMP_PORT.to_string()),
                    ("STUN_PORT", STUN_PORT.to_string()),
                ])
            );
        }
        Cmd::Ifaces { addrs, routes } => match router::find_ifaces(&env, &addrs, &routes) {
            Ok(i) => {
                let hosts: Vec<String> = i.host_addrs.iter().map(Ipv4Addr::to_string).collect();
                print!(
                    "{}",
                    router::shell(&[
                        ("LAN_IF", i.lan_if),
                        ("LAN_IP", i.lan_ip.to_string()),
                        ("WAN_IF", i.wan_if),
                        ("WAN_SUBNET", i.wan_subnet.to_string()),
                        ("HOST_ADDRS", hosts.join(" ")),
                    ])
                );
            }
            Err(e) => return fail(if e.retry { 3 } else { 1 }, e.message),
        },
        Cmd::Rules(found) => print!(
            "{}",
            router::rules(&env, &found.ifaces(unknown, nowhere)).ruleset()
        ),
        Cmd::UpnpConf { found, uuid } => print!(
            "{}",
            router::upnp_conf(&env, &found.ifaces(unknown, nowhere), uuid.as_deref())
        ),
        Cmd::Stun { port } => return stun(port, env.wan_ip),
        Cmd::Ready {
            found,
            lan_ip,
            wan_subnet,
            ruleset,
            apply_ms,
            upnp_pid,
            upnp_start_ms,
        } => {
            let ready = router::ready(
                &env,
                &found.ifaces(lan_ip, wan_subnet),
                &ruleset,
                apply_ms,
                upnp_pid.map(|p| (p, upnp_start_ms)),
            );
            match serde_json::to_string(&ready) {
                Ok(line) => println!("{line}"),
                Err(e) => return fail(1, e),
            }
        }
    }
    ExitCode::SUCCESS
}

/// Serves STUN on 127.0.0.1:`port` until killed.
fn stun(port: u16, wan: Ipv4Addr) -> ExitCode {
    let socket = match UdpSocket::bind((Ipv4Addr::LOCALHOST, port)) {
        Ok(s) => s,
        Err(e) => return fail(1, format!("stun: bind 127.0.0.1:{port}: {e}")),
    };
    println!("ready");
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) => return fail(1, format!("stun: {e}")),
        };
        let (SocketAddr::V4(from), Some(request)) = (from, buf.get(..n)) else {
            continue;
        };
        if let Some(answer) = router::stun_answer(request, from, wan) {
            let _ = socket.send_to(&answer, from);
        }
    }
}
