//! `router-rules`: prints a lab router's nftables ruleset (see the `p2plab_tools::nft` module).
//! `docker/router.sh` runs it with what it found about the router, then loads the output with
//! `nft -f`. Bad flags: one line on stderr and exit 2.
use std::net::Ipv4Addr;

use clap::Parser;
use p2plab_contract::nat::{Forward, Profile};
use p2plab_tools::nft::Router;

#[derive(Debug, Parser)]
#[command(name = "router-rules", version, about = "Print a lab router's nftables ruleset for its NAT profile")]
struct Cli {
    /// The NAT profile (open, home, strict, port-forward, upnp, routed).
    #[arg(long, value_name = "PROFILE")]
    nat: Profile,
    /// The LAN interface.
    #[arg(long, value_name = "IFACE", value_parser = iface)]
    lan_if: String,
    /// The WAN interface.
    #[arg(long, value_name = "IFACE", value_parser = iface)]
    wan_if: String,
    /// The LAN prefix, e.g. 10.101.0.0/24 (no host bits).
    #[arg(long, value_name = "PREFIX", value_parser = prefix)]
    lan_subnet: (Ipv4Addr, u8),
    /// The router's address on its WAN segment.
    #[arg(long, value_name = "IP")]
    wan_ip: Ipv4Addr,
    /// An address of the Docker host on one of the router's networks (repeatable).
    #[arg(long = "host-addr", value_name = "IP", required = true)]
    host_addrs: Vec<Ipv4Addr>,
    /// Seconds an idle mapping lives.
    #[arg(long, value_name = "SECS", default_value_t = 120, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    timeout: u32,
    /// Static forwards, comma-separated proto:ext_port:lan_ip:lan_port (port-forward only).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    forward: Vec<Forward>,
}

fn iface(s: &str) -> Result<String, String> {
    let ok = !s.is_empty() && s.len() <= 15 && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("'{s}' is not an interface name"))
    }
}

fn prefix(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let bad = || format!("'{s}' is not an IPv4 prefix like 10.101.0.0/24");
    let (net, len) = s.split_once('/').ok_or_else(bad)?;
    let net: Ipv4Addr = net.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().ok().filter(|l| (1..=30).contains(l)).ok_or_else(bad)?;
    if u32::from(net) & !u32::from(p2plab_tools::nft::mask(len)) != 0 {
        return Err(format!("'{s}' has host bits set"));
    }
    Ok((net, len))
}

fn main() {
    let cli = Cli::parse();
    if !cli.forward.is_empty() && cli.nat != Profile::PortForward {
        eprintln!("error: invalid value for '--forward': only used with --nat port-forward (--nat {})", cli.nat);
        std::process::exit(2);
    }
    let (lan_net, lan_len) = cli.lan_subnet;
    let router = Router {
        profile: cli.nat,
        lan_if: cli.lan_if,
        wan_if: cli.wan_if,
        lan_net,
        lan_len,
        wan_ip: cli.wan_ip,
        host_addrs: cli.host_addrs,
        timeout_s: cli.timeout,
        forwards: cli.forward,
    };
    print!("{}", router.ruleset());
}
