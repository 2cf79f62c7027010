//! A lab router's decisions, apart from the shell that applies them (`docker/router.sh`, through
//! the `router-rules` binary): its settings read from the typed environment
//! ([`p2plab_contract::router::RouterEnv`]), its two interfaces and the Docker host's addresses
//! found from `ip`'s output ([`find_ifaces`]), its ruleset ([`crate::nft`]), miniupnpd's
//! configuration for the `upnp` profile ([`upnp_conf`]), the loopback STUN answer miniupnpd's
//! self-test needs ([`stun_answer`]), and its `router_ready` line ([`ready`]). All of it pure and
//! unit-tested; the shell waits for interfaces, sets routes, loads the ruleset with `nft -f` and
//! supervises miniupnpd.

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddrV4},
};

use p2plab_contract::{
    nat::Profile,
    router::{Prefix, ReadyForward, ReadyIpv6, ReadyUpnp, RouterEnv, RouterReady},
};

use crate::nft::{Router, NATPMP_PORT, SSDP_PORT, UPNP_HTTP_PORT};

/// The port of the loopback STUN responder that miniupnpd asks for its external address.
pub const STUN_PORT: u16 = 3478;

/// What a router found about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ifaces {
    pub lan_if: String,
    pub lan_ip: Ipv4Addr,
    pub wan_if: String,
    /// The WAN interface's prefix (the uplink segment).
    pub wan_subnet: Prefix,
    /// The Docker host's addresses on the router's networks: each subnet's first address
    /// (Docker's gateway) and every default route's gateway. Nothing may be sent there.
    pub host_addrs: Vec<Ipv4Addr>,
}

/// Why the interfaces are not usable (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceError {
    /// `true`: an interface may still appear (a container connected to its second network
    /// after it started gets that interface a little later); `false`: waiting will not help.
    pub retry: bool,
    pub message: String,
}

/// Finds the LAN interface (the one address in `env.lan`) and the WAN interface (the one holding
/// `env.wan_ip`) in `addrs`, the output of `ip -o -4 addr show`, and the host's addresses from
/// those and from `routes`, the output of `ip -4 route show default`; checks `env.uplink_gw`
/// against them.
pub fn find_ifaces(env: &RouterEnv, addrs: &str, routes: &str) -> Result<Ifaces, IfaceError> {
    let mut listed = Vec::new();
    let mut lans = Vec::new();
    let mut wan = None;
    let mut host_addrs: Vec<Ipv4Addr> = Vec::new();
    let add_host = |a: Ipv4Addr, host_addrs: &mut Vec<Ipv4Addr>| {
        if !host_addrs.contains(&a) {
            host_addrs.push(a);
        }
    };
    for line in addrs.lines() {
        // "<n>: <ifname> inet <a.b.c.d>/<len> ..."
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(name), Some(&"inet"), Some(cidr)) = (f.get(1), f.get(2), f.get(3)) else {
            continue;
        };
        let name = name.trim_end_matches(':');
        let name = name.split('@').next().unwrap_or(name);
        if name == "lo" {
            continue;
        }
        let Some((ip, len)) = cidr.split_once('/') else {
            continue;
        };
        let (Ok(ip), Ok(len)) = (ip.parse::<Ipv4Addr>(), len.parse::<u8>()) else {
            continue;
        };
        listed.push(format!("{name} {cidr}"));
        let net = Prefix::of(ip, len);
        if let Some(g) = net.docker_gateway() {
            add_host(g, &mut host_addrs);
        }
        if env.lan.contains(ip) {
            lans.push((name.to_string(), ip));
        }
        if ip == env.wan_ip {
            wan = Some((name.to_string(), net));
        }
    }
    for line in routes.lines() {
        // "default via <gw> dev <if> ..."
        let f: Vec<&str> = line.split_whitespace().collect();
        if let Some(gw) = f
            .iter()
            .position(|w| *w == "via")
            .and_then(|i| f.get(i + 1))
            .and_then(|g| g.parse().ok())
        {
            add_host(gw, &mut host_addrs);
        }
    }
    let seen = if listed.is_empty() {
        "none".to_string()
    } else {
        listed.join(", ")
    };
    let fail = |retry: bool, message: String| IfaceError {
        retry,
        message: format!("{message} (addresses: {seen})"),
    };
    let lan_var = p2plab_contract::router::var::LAN_SUBNET;
    let wan_var = p2plab_contract::router::var::WAN_IP;
    let gw_var = p2plab_contract::router::var::UPLINK_GW;
    if lans.len() > 1 {
        return Err(fail(
            false,
            format!(
                "{lan_var}={}: {} interfaces have an address in it",
                env.lan,
                lans.len()
            ),
        ));
    }
    let Some((lan_if, lan_ip)) = lans.pop() else {
        return Err(fail(
            true,
            format!(
                "{lan_var}={}: no interface has an address in this subnet",
                env.lan
            ),
        ));
    };
    let Some((wan_if, wan_subnet)) = wan else {
        return Err(fail(
            true,
            format!("{wan_var}={}: no interface has this address", env.wan_ip),
        ));
    };
    if lan_if == wan_if {
        return Err(fail(false, format!("{wan_var}={}: on the LAN interface {lan_if} (LAN and WAN must be different networks)", env.wan_ip)));
    }
    for name in [&lan_if, &wan_if] {
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            || name.is_empty()
            || name.len() > 15
        {
            return Err(fail(false, format!("unexpected interface name '{name}'")));
        }
    }
    if let Some(gw) = env.uplink_gw {
        if !wan_subnet.contains(gw) {
            return Err(fail(
                false,
                format!("{gw_var}={gw}: not on the WAN segment {wan_subnet} ({wan_if})"),
            ));
        }
        if gw == env.wan_ip {
            return Err(fail(
                false,
                format!("{gw_var}={gw}: is the router's own WAN address"),
            ));
        }
        if host_addrs.contains(&gw) {
            return Err(fail(
                false,
                format!("{gw_var}={gw}: is the Docker host's address on {wan_if} (refusing a route out of the lab; use the upstream router's LAN address)"),
            ));
        }
    }
    Ok(Ifaces {
        lan_if,
        lan_ip,
        wan_if,
        wan_subnet,
        host_addrs,
    })
}

/// The ruleset's inputs.
pub fn rules(env: &RouterEnv, ifaces: &Ifaces) -> Router {
    Router {
        profile: env.profile,
        lan_if: ifaces.lan_if.clone(),
        wan_if: ifaces.wan_if.clone(),
        lan: env.lan,
        wan_ip: env.wan_ip,
        host_addrs: ifaces.host_addrs.clone(),
        timeout_s: env.mapping_timeout_s(),
        forwards: env.forwards.clone(),
        hairpin: env.hairpin,
        tcp_ports: env.tcp_ports.clone(),
        ipv6: env.ipv6,
    }
}

/// miniupnpd's one `allow` rule: LAN hosts may map ports 1024-65535 to themselves only
/// (`secure_mode`).
pub fn upnp_allow(env: &RouterEnv) -> String {
    format!("1024-65535 {} 1024-65535", env.lan)
}

/// miniupnpd's configuration (the `upnp` profile). Its external address comes from a STUN
/// answer (see [`stun_answer`]): miniupnpd 2.3.1 refuses to map anything when its external
/// address is "reserved" (RFC 2544's 198.18.0.0/15, the lab's internet, is), and refuses
/// `ext_ip=` in those ranges, but takes a STUN answer without that check.
pub fn upnp_conf(env: &RouterEnv, ifaces: &Ifaces, uuid: Option<&str>) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# generated by router-rules (P2PLAB_NAT=upnp)");
    let _ = writeln!(o, "ext_ifname={}", ifaces.wan_if);
    let _ = writeln!(o, "listening_ip={}", ifaces.lan_if);
    let _ = writeln!(o, "http_port={UPNP_HTTP_PORT}");
    for line in [
        "enable_upnp=yes",
        "enable_natpmp=yes",
        "ipv6_disable=yes",
        "secure_mode=yes",
        "system_uptime=yes",
        "notify_interval=60",
        "clean_ruleset_interval=600",
        "min_lifetime=120",
        "max_lifetime=86400",
        "friendly_name=p2plab upnp router",
    ] {
        let _ = writeln!(o, "{line}");
    }
    if let Some(u) =
        uuid.filter(|u| u.chars().all(|c| c.is_ascii_hexdigit() || c == '-') && !u.is_empty())
    {
        let _ = writeln!(o, "uuid={u}");
    }
    let _ = writeln!(o, "ext_perform_stun=yes");
    let _ = writeln!(o, "ext_stun_host=127.0.0.1");
    let _ = writeln!(o, "ext_stun_port={STUN_PORT}");
    let table = p2plab_contract::nat::UPNP_TABLE;
    let _ = writeln!(o, "upnp_table_name={table}");
    let _ = writeln!(o, "upnp_nat_table_name={table}");
    let _ = writeln!(o, "upnp_forward_chain=forward_miniupnpd");
    let _ = writeln!(o, "upnp_nat_chain=prerouting_miniupnpd");
    let _ = writeln!(o, "upnp_nat_postrouting_chain=postrouting_miniupnpd");
    let _ = writeln!(o, "allow {}", upnp_allow(env));
    let _ = writeln!(o, "deny 0-65535 0.0.0.0/0 0-65535");
    o
}

/// The answer to a STUN binding request (RFC 5389) from `from`: `MAPPED-ADDRESS` and
/// `XOR-MAPPED-ADDRESS` of `wan_ip` and the asking port, i.e. "this router's WAN is on the
/// internet, unfiltered", which is true of the lab's internet. `None` for anything else. The
/// responder listens on 127.0.0.1 only, for miniupnpd's self-test.
pub fn stun_answer(request: &[u8], from: SocketAddrV4, wan_ip: Ipv4Addr) -> Option<Vec<u8>> {
    if request.len() < 20 || request.get(0..2)? != [0x00, 0x01] {
        return None;
    }
    let cookie: [u8; 4] = request.get(4..8)?.try_into().ok()?;
    let port = from.port();
    let xport = port ^ u16::from_be_bytes([cookie[0], cookie[1]]);
    let wan = wan_ip.octets();
    let mut body = Vec::with_capacity(24);
    // MAPPED-ADDRESS: type 0x0001, length 8, family IPv4
    body.extend_from_slice(&[0x00, 0x01, 0x00, 0x08, 0x00, 0x01]);
    body.extend_from_slice(&port.to_be_bytes());
    body.extend_from_slice(&wan);
    // XOR-MAPPED-ADDRESS: type 0x0020
    body.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x01]);
    body.extend_from_slice(&xport.to_be_bytes());
    body.extend(wan.iter().zip(cookie).map(|(a, c)| a ^ c));
    let mut out = Vec::with_capacity(20 + body.len());
    out.extend_from_slice(&[0x01, 0x01]); // binding success response
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(request.get(4..20)?); // cookie and transaction id
    out.extend_from_slice(&body);
    Some(out)
}

/// The `router_ready` line's content.
pub fn ready(
    env: &RouterEnv,
    ifaces: &Ifaces,
    ruleset: &str,
    apply_ms: u64,
    upnp: Option<(u32, u64)>,
) -> RouterReady {
    let p = env.profile;
    RouterReady {
        nat: p,
        mapping: p.mapping(),
        filtering: p.filtering(),
        lan: ifaces.lan_if.clone(),
        lan_ip: ifaces.lan_ip,
        lan_subnet: env.lan,
        wan: ifaces.wan_if.clone(),
        wan_ip: env.wan_ip,
        wan_subnet: ifaces.wan_subnet,
        uplink_gw: env.uplink_gw,
        uplink_routes: env.uplink_routes().to_vec(),
        mapping_timeout_s: env.mapping_timeout_s(),
        hairpin: env.hairpin,
        tcp_ports: env.tcp_ports.clone(),
        forwards: env.forwards.iter().map(ReadyForward::from).collect(),
        ipv6: env.ipv6.as_ref().map(ReadyIpv6::from),
        upnp: upnp
            .filter(|_| p == Profile::Upnp)
            .map(|(pid, start_ms)| ReadyUpnp {
                daemon: "miniupnpd".into(),
                pid,
                ext_ip: env.wan_ip,
                http: format!("{}:{UPNP_HTTP_PORT}", ifaces.lan_ip),
                ssdp_port: SSDP_PORT,
                natpmp_port: NATPMP_PORT,
                allow: upnp_allow(env),
                start_ms,
            }),
        blocked_host_addrs: ifaces.host_addrs.clone(),
        ruleset: ruleset.to_string(),
        apply_ms,
    }
}

/// `NAME='value'` lines for the shell's `eval`, each value single-quoted.
pub fn shell(vars: &[(&str, String)]) -> String {
    let mut o = String::new();
    for (k, v) in vars {
        let _ = writeln!(o, "{k}='{}'", v.replace('\'', r"'\''"));
    }
    o
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use p2plab_contract::router::lookup;

    const ADDRS: &str = "\
1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
2: eth0@if40    inet 198.18.4.2/24 brd 198.18.4.255 scope global eth0\\       valid_lft forever preferred_lft forever
3: eth1@if42    inet 10.32.4.254/24 brd 10.32.4.255 scope global eth1\\       valid_lft forever preferred_lft forever
";
    const ROUTES: &str = "default via 198.18.4.1 dev eth0 \n";

    fn env(extra: &[(&str, &str)]) -> RouterEnv {
        let mut e: Vec<(String, String)> = [
            ("P2PLAB_NAT", "home"),
            ("P2PLAB_LAN_SUBNET", "10.32.4.0/24"),
            ("P2PLAB_WAN_IP", "198.18.4.2"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            e.retain(|(k2, _)| k2 != k);
            e.push((k.to_string(), v.to_string()));
        }
        RouterEnv::from_env(lookup(&e)).unwrap()
    }

    #[test]
    fn interfaces_and_host_addresses_are_found() {
        let i = find_ifaces(&env(&[]), ADDRS, ROUTES).unwrap();
        assert_eq!(
            i,
            Ifaces {
                lan_if: "eth1".into(),
                lan_ip: Ipv4Addr::new(10, 32, 4, 254),
                wan_if: "eth0".into(),
                wan_subnet: "198.18.4.0/24".parse().unwrap(),
                host_addrs: vec![Ipv4Addr::new(198, 18, 4, 1), Ipv4Addr::new(10, 32, 4, 1)],
            }
        );
    }

    #[test]
    fn missing_interfaces_are_waited_for_and_impossible_ones_are_not() {
        let only_wan: String = ADDRS.lines().take(2).map(|l| format!("{l}\n")).collect();
        let e = find_ifaces(&env(&[]), &only_wan, ROUTES).unwrap_err();
        assert!(e.retry, "{e:?}");
        assert_eq!(
            e.message,
            "P2PLAB_LAN_SUBNET=10.32.4.0/24: no interface has an address in this subnet (addresses: eth0 198.18.4.2/24)"
        );
        let e = find_ifaces(&env(&[("P2PLAB_WAN_IP", "198.18.4.3")]), ADDRS, ROUTES).unwrap_err();
        assert!(
            e.retry
                && e.message
                    .starts_with("P2PLAB_WAN_IP=198.18.4.3: no interface has this address"),
            "{e:?}"
        );
        let two_lans = format!("{ADDRS}4: eth2    inet 10.32.4.7/24 scope global eth2\n");
        let e = find_ifaces(&env(&[]), &two_lans, ROUTES).unwrap_err();
        assert!(
            !e.retry && e.message.contains("2 interfaces have an address in it"),
            "{e:?}"
        );
        // the uplink gateway must be on the WAN segment, not the router itself, not the host
        for (gw, want) in [
            ("198.18.5.9", "not on the WAN segment 198.18.4.0/24 (eth0)"),
            ("198.18.4.2", "is the router's own WAN address"),
            ("198.18.4.1", "is the Docker host's address on eth0"),
        ] {
            let e = find_ifaces(&env(&[("P2PLAB_UPLINK_GW", gw)]), ADDRS, ROUTES).unwrap_err();
            assert!(!e.retry && e.message.contains(want), "{gw}: {e:?}");
        }
        assert!(find_ifaces(&env(&[("P2PLAB_UPLINK_GW", "198.18.4.254")]), ADDRS, ROUTES).is_ok());
    }

    #[test]
    fn stun_answers_binding_requests_with_the_wan_address() {
        let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        req.extend_from_slice(&[7; 12]);
        let from = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40000);
        let a = stun_answer(&req, from, Ipv4Addr::new(198, 18, 4, 2)).unwrap();
        assert_eq!(&a[0..4], &[0x01, 0x01, 0x00, 24]);
        assert_eq!(&a[4..20], &req[4..20]);
        assert_eq!(&a[20..32], &[0, 1, 0, 8, 0, 1, 0x9c, 0x40, 198, 18, 4, 2]);
        let xport = 40000u16 ^ 0x2112;
        let x = xport.to_be_bytes();
        assert_eq!(
            &a[32..44],
            &[
                0,
                0x20,
                0,
                8,
                0,
                1,
                x[0],
                x[1],
                198 ^ 0x21,
                18 ^ 0x12,
                4 ^ 0xa4,
                2 ^ 0x42
            ]
        );
        assert_eq!(stun_answer(&req[..19], from, Ipv4Addr::LOCALHOST), None);
        let mut not_binding = req.clone();
        not_binding[1] = 0x11;
        assert_eq!(stun_answer(&not_binding, from, Ipv4Addr::LOCALHOST), None);
    }

    #[test]
    fn the_upnp_configuration_and_ready_line() {
        let e = env(&[("P2PLAB_NAT", "upnp")]);
        let i = find_ifaces(&e, ADDRS, ROUTES).unwrap();
        let conf = upnp_conf(&e, &i, Some("0a1b-2c"));
        for want in [
            "ext_ifname=eth0\n",
            "listening_ip=eth1\n",
            "http_port=5000\n",
            "uuid=0a1b-2c\n",
            "ext_stun_port=3478\n",
            "upnp_table_name=p2plab_upnp\n",
            "allow 1024-65535 10.32.4.0/24 1024-65535\n",
            "deny 0-65535 0.0.0.0/0 0-65535\n",
        ] {
            assert!(conf.contains(want), "{want}: {conf}");
        }
        assert!(!upnp_conf(&e, &i, Some("x\nallow 0-65535")).contains("uuid"));
        let r = ready(&e, &i, "/run/x.nft", 7, Some((42, 300)));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["nat"], "upnp");
        assert_eq!(v["upnp"]["ext_ip"], "198.18.4.2");
        assert_eq!(v["upnp"]["http"], "10.32.4.254:5000");
        assert_eq!(v["upnp"]["daemon"], "miniupnpd");
        assert_eq!(
            v["blocked_host_addrs"],
            serde_json::json!(["198.18.4.1", "10.32.4.1"])
        );
        let home = ready(&env(&[]), &i, "/run/x.nft", 7, Some((42, 300)));
        assert_eq!(home.upnp, None);
        assert_eq!(
            serde_json::to_value(&home).unwrap()["mapping"],
            "endpoint-independent"
        );
    }

    #[test]
    fn shell_values_are_quoted() {
        assert_eq!(
            shell(&[("A", "x y".into()), ("B", "it's".into())]),
            "A='x y'\nB='it'\\''s'\n"
        );
    }
}
