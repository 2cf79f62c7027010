//! A lab router's nftables ruleset, rendered from its typed NAT profile.
//!
//! `docker/router.sh` finds the router's interfaces and the Docker host's addresses (I/O), then
//! runs `router-rules` (this module) to turn them and the profile into one ruleset, which it loads
//! with a single `nft -f` (one atomic transaction). The decisions live here so unit tests can read
//! them; the tests below pin what each profile's rules do.
//!
//! # What the rules do
//! - **Tables.** `ip p2plab_router` holds the IPv4 rules; `ip6 p2plab_router` the IPv6 ones (all
//!   forwarded IPv6 dropped when the LAN has none); `inet p2plab_upnp` (the `upnp` profile) holds the empty chains miniupnpd fills. Each is
//!   declared, deleted and made again, so loading the ruleset twice gives the same state.
//! - **Never the host.** The Docker host's addresses on the router's networks (`host_addrs`) are
//!   never forwarded to or sent to: no way out of the lab through the router.
//! - **Endpoint-independent mapping** (open, home, port-forward, upnp). Linux's `snat` does not keep
//!   a LAN endpoint's external port across connections, so two maps per protocol hold it:
//!   `<p>_int` (LAN ip . port → WAN ip . external port) and `<p>_ext` (external port → LAN
//!   endpoint), filled from the packets leaving the WAN interface (after SNAT, so the external
//!   port is the one the kernel chose) and refreshed by every packet, each entry expiring after the
//!   mapping timeout idle. A new connection from a mapped endpoint is SNATed to its mapping; an
//!   unmapped one keeps its port unless another endpoint holds that port, else gets a random one.
//! - **Endpoint-dependent mapping** (strict): `snat ... random`, a new external port per
//!   connection.
//! - **Filtering.** Inbound from the WAN only for conntrack's established flows, except: open
//!   DNATs any packet to a mapped external port back to its LAN endpoint (full cone);
//!   port-forward DNATs its static forwards; upnp lets miniupnpd's DNATs in.
//! - **Blocked protocols** (udp-blocked): dropped in the forward chain before anything is
//!   accepted, both ways; the router's own ports (its STUN responder) are not forwarded traffic.
//! - **A TCP allow list** (udp-blocked's `tcp_ports`): TCP from the LAN to any other port is
//!   dropped before anything is accepted, so no connection to it ever opens (IPv4 and IPv6).
//! - **IPv6** (a LAN with IPv6) is never translated. `firewall`: LAN hosts send anywhere in the
//!   lab, inbound only conntrack's established flows, so a hole punch (both sides send first)
//!   opens both ends; `routed`: forwarded both ways. Blocked protocols, the host's addresses and
//!   the UDP state timeout are as for IPv4.
//! - **UDP state** lives as long as a mapping (`ct timeout udp_mapping`), so filtering and mapping
//!   expire together.

use std::{fmt::Write as _, net::Ipv4Addr};

use p2plab_contract::{
    nat::{Forward, Ipv6Policy, Profile, Proto, TABLE, UPNP_TABLE},
    router::{mask, Ipv6Side, Prefix, LAB_RANGE6},
};

/// miniupnpd's ports on the LAN (the `upnp` profile): SSDP, NAT-PMP/PCP, its HTTP.
pub const SSDP_PORT: u16 = 1900;
pub const NATPMP_PORT: u16 = 5351;
pub const UPNP_HTTP_PORT: u16 = 5000;

/// Everything the ruleset depends on: the profile and what the router found about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Router {
    pub profile: Profile,
    pub lan_if: String,
    pub wan_if: String,
    /// The LAN prefix.
    pub lan: Prefix,
    pub wan_ip: Ipv4Addr,
    /// The Docker host's addresses on the router's networks (never forwarded or sent to).
    pub host_addrs: Vec<Ipv4Addr>,
    /// Seconds an idle mapping (and its UDP conntrack entry) lives.
    pub timeout_s: u32,
    /// The static forwards (`port-forward` only).
    pub forwards: Vec<Forward>,
    /// LAN hosts reach each other's mappings at the WAN address (EIM profiles only).
    pub hairpin: bool,
    /// The only TCP ports LAN hosts may reach beyond the router (`udp-blocked` only); empty: all.
    pub tcp_ports: Vec<u16>,
    /// The IPv6 side; `None`: every forwarded IPv6 packet is dropped.
    pub ipv6: Option<Ipv6Side>,
}

/// The set of the Docker host's addresses (`type` `ipv4_addr` or `ipv6_addr`), which nothing is
/// forwarded or sent to.
fn host_set(o: &mut String, addr_type: &str, elements: &str) -> std::fmt::Result {
    writeln!(o, "    set host_addrs {{")?;
    writeln!(
        o,
        "        type {addr_type}; comment \"the Docker host on the router's networks\""
    )?;
    writeln!(o, "        elements = {{ {elements} }}")?;
    writeln!(o, "    }}")
}

impl Router {
    /// The ruleset for `nft -f`.
    pub fn ruleset(&self) -> String {
        let mut o = String::new();
        // (writes to a String cannot fail)
        let _ = self.render(&mut o);
        o
    }

    fn lan_src(&self) -> String {
        format!("ip saddr {}", self.lan)
    }

    fn hairpin(&self) -> bool {
        self.hairpin && self.eim()
    }

    fn eim(&self) -> bool {
        self.profile.mapping() == p2plab_contract::nat::Mapping::EndpointIndependent
    }

    /// The forward chain's drop of LAN TCP to any port off the allow list (nothing without one).
    /// By destination port and before any accept: a SYN to another port never leaves, so neither
    /// a connection nor a hole punch to it opens, and its replies cannot exist.
    fn tcp_allow_list(&self, o: &mut String) -> std::fmt::Result {
        if self.tcp_ports.is_empty() {
            return Ok(());
        }
        let ports = self
            .tcp_ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        writeln!(
            o,
            "        iifname \"{}\" oifname \"{}\" tcp dport != {{ {ports} }} counter drop",
            self.lan_if, self.wan_if
        )
    }

    fn render(&self, o: &mut String) -> std::fmt::Result {
        let Self {
            profile,
            lan_if,
            wan_if,
            lan,
            wan_ip,
            ..
        } = self;
        let lan_src = self.lan_src();
        let hosts = self
            .host_addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        writeln!(o, "# generated by router-rules: P2PLAB_NAT={profile} LAN {lan_if} {lan} WAN {wan_if} {wan_ip}")?;
        for family in ["ip", "ip6"] {
            writeln!(o, "table {family} {TABLE} {{}}")?;
            writeln!(o, "delete table {family} {TABLE}")?;
        }
        writeln!(o, "table inet {UPNP_TABLE} {{}}")?;
        writeln!(o, "delete table inet {UPNP_TABLE}")?;
        writeln!(o, "table ip {TABLE} {{")?;
        host_set(o, "ipv4_addr", &hosts)?;
        if profile.translates() {
            let t = self.timeout_s;
            writeln!(o, "    ct timeout udp_mapping {{")?;
            writeln!(o, "        protocol udp; l3proto ip;")?;
            writeln!(o, "        policy = {{ unreplied : {t}, replied : {t} }};")?;
            writeln!(o, "    }}")?;
        }
        if self.eim() {
            for p in Proto::BOTH {
                self.map_decls(o, p)?;
            }
        }

        // prerouting (dnat): inbound to the WAN address
        writeln!(o, "    chain prerouting {{")?;
        writeln!(
            o,
            "        type nat hook prerouting priority dstnat; policy accept;"
        )?;
        if *profile == Profile::Open {
            for p in Proto::BOTH {
                let [_, ext] = p.maps();
                writeln!(o, "        iifname \"{wan_if}\" ip daddr {wan_ip} dnat ip to {p} dport map @{ext}")?;
            }
        }
        for f in &self.forwards {
            writeln!(
                o,
                "        iifname \"{wan_if}\" ip daddr {wan_ip} {} dport {} dnat ip to {}:{}",
                f.proto, f.ext_port, f.lan_ip, f.lan_port
            )?;
        }
        if self.hairpin() {
            // a LAN host aiming at a mapping (forwards included) reaches its LAN endpoint
            for p in Proto::BOTH {
                let [_, ext] = p.maps();
                writeln!(o, "        iifname \"{lan_if}\" {lan_src} ip daddr {wan_ip} dnat ip to {p} dport map @{ext}")?;
            }
        }
        writeln!(o, "    }}")?;

        // forward: only LAN <-> WAN, never to the host
        writeln!(o, "    chain forward {{")?;
        writeln!(
            o,
            "        type filter hook forward priority filter; policy drop;"
        )?;
        writeln!(o, "        ip daddr @host_addrs counter drop")?;
        for p in Proto::BOTH.into_iter().filter(|&p| profile.blocks(p)) {
            // before any accept: the blocked protocol neither leaves nor enters the LAN
            writeln!(o, "        meta l4proto {p} counter drop")?;
        }
        self.tcp_allow_list(o)?;
        if profile.translates() {
            writeln!(o, "        iifname \"{lan_if}\" oifname \"{wan_if}\" {lan_src} ct state new meta l4proto udp ct timeout set \"udp_mapping\"")?;
            writeln!(
                o,
                "        iifname \"{lan_if}\" oifname \"{wan_if}\" {lan_src} accept"
            )?;
            writeln!(o, "        iifname \"{wan_if}\" oifname \"{lan_if}\" ct state established,related accept")?;
            if self.hairpin() {
                writeln!(o, "        iifname \"{lan_if}\" oifname \"{lan_if}\" {lan_src} ct status dnat accept")?;
            }
            if matches!(
                profile,
                Profile::Open | Profile::PortForward | Profile::Upnp
            ) {
                // (upnp: the DNATs are miniupnpd's, in its own table)
                writeln!(o, "        iifname \"{wan_if}\" oifname \"{lan_if}\" ct state new ct status dnat meta l4proto udp ct timeout set \"udp_mapping\"")?;
                writeln!(
                    o,
                    "        iifname \"{wan_if}\" oifname \"{lan_if}\" ct status dnat accept"
                )?;
            }
        } else {
            writeln!(
                o,
                "        iifname \"{lan_if}\" oifname \"{wan_if}\" accept"
            )?;
            writeln!(
                o,
                "        iifname \"{wan_if}\" oifname \"{lan_if}\" accept"
            )?;
        }
        writeln!(o, "    }}")?;

        // postrouting (snat)
        if profile.translates() {
            writeln!(o, "    chain postrouting {{")?;
            writeln!(
                o,
                "        type nat hook postrouting priority srcnat; policy accept;"
            )?;
            if self.eim() {
                for p in Proto::BOTH {
                    let [int, ext] = p.maps();
                    writeln!(o, "        oifname \"{wan_if}\" {lan_src} ip saddr . {p} sport @{int} snat ip to ip saddr . {p} sport map @{int}")?;
                    writeln!(o, "        oifname \"{wan_if}\" {lan_src} {p} sport @{ext} snat ip to {wan_ip}:1024-65535 random")?;
                }
                writeln!(
                    o,
                    "        oifname \"{wan_if}\" {lan_src} snat ip to {wan_ip}"
                )?;
                if self.hairpin() {
                    // the receiver sees the sender's public endpoint (its mapping when it has one)
                    let lan = &self.lan;
                    for p in Proto::BOTH {
                        let [int, _] = p.maps();
                        writeln!(o, "        oifname \"{lan_if}\" {lan_src} ip daddr {lan} ct status dnat ip saddr . {p} sport @{int} snat ip to ip saddr . {p} sport map @{int}")?;
                    }
                    writeln!(o, "        oifname \"{lan_if}\" {lan_src} ip daddr {lan} ct status dnat snat ip to {wan_ip}")?;
                }
            } else {
                writeln!(
                    o,
                    "        oifname \"{wan_if}\" {lan_src} snat ip to {wan_ip} random"
                )?;
            }
            writeln!(o, "    }}")?;
        }
        if self.eim() {
            writeln!(o, "    chain mapping {{")?;
            writeln!(
                o,
                "        type filter hook postrouting priority srcnat + 10; policy accept;"
            )?;
            for p in Proto::BOTH {
                self.map_rules(o, p)?;
            }
            writeln!(o, "    }}")?;
        }

        // the router itself offers no service and never talks to the host
        writeln!(o, "    chain input {{")?;
        writeln!(
            o,
            "        type filter hook input priority filter; policy accept;"
        )?;
        writeln!(o, "        ct state established,related accept")?;
        writeln!(o, "        iif \"lo\" accept")?;
        if *profile == Profile::Upnp {
            writeln!(o, "        iifname \"{lan_if}\" {lan_src} udp dport {{ {SSDP_PORT}, {NATPMP_PORT} }} accept")?;
            writeln!(
                o,
                "        iifname \"{lan_if}\" {lan_src} tcp dport {UPNP_HTTP_PORT} accept"
            )?;
        }
        writeln!(o, "        meta l4proto {{ tcp, udp }} drop")?;
        writeln!(o, "    }}")?;
        writeln!(o, "    chain output {{")?;
        writeln!(
            o,
            "        type filter hook output priority filter; policy accept;"
        )?;
        writeln!(o, "        ip daddr @host_addrs drop")?;
        if self.hairpin() {
            // forwarding out of the interface a packet came in makes Linux send a redirect, and a
            // host that took it would skip the router (and its translation)
            writeln!(o, "        icmp type redirect drop")?;
        }
        writeln!(o, "    }}")?;
        writeln!(o, "}}")?;
        self.ip6_table(o)?;
        if *profile == Profile::Upnp {
            self.upnp_table(o)?;
        }
        Ok(())
    }

    /// The `ip6` table: nothing forwarded without an IPv6 side; else the side's policy.
    fn ip6_table(&self, o: &mut String) -> std::fmt::Result {
        let Self { lan_if, wan_if, .. } = self;
        writeln!(o, "table ip6 {TABLE} {{")?;
        let Some(v6) = &self.ipv6 else {
            writeln!(o, "    chain forward {{")?;
            writeln!(
                o,
                "        type filter hook forward priority filter; policy drop;"
            )?;
            writeln!(o, "    }}")?;
            return writeln!(o, "}}");
        };
        let hosts = v6.host_addrs().map(|a| a.to_string()).join(", ");
        host_set(o, "ipv6_addr", &hosts)?;
        let t = self.timeout_s;
        writeln!(o, "    ct timeout udp_state {{")?;
        writeln!(o, "        protocol udp; l3proto ip6;")?;
        writeln!(o, "        policy = {{ unreplied : {t}, replied : {t} }};")?;
        writeln!(o, "    }}")?;
        writeln!(o, "    chain forward {{")?;
        writeln!(
            o,
            "        type filter hook forward priority filter; policy drop;"
        )?;
        writeln!(o, "        ip6 daddr @host_addrs counter drop")?;
        // only the lab's own prefixes, whatever a route says
        writeln!(o, "        ip6 daddr != {LAB_RANGE6} counter drop")?;
        for p in Proto::BOTH.into_iter().filter(|&p| self.profile.blocks(p)) {
            writeln!(o, "        meta l4proto {p} counter drop")?;
        }
        self.tcp_allow_list(o)?;
        // The LAN side is the router's /64 and every LAN routed behind it (a carrier's router
        // serves its customers' routers' /64s): by interface, within the lab's space. The routes
        // decide which prefixes are behind the LAN interface.
        let lab = LAB_RANGE6;
        writeln!(o, "        iifname \"{lan_if}\" oifname \"{wan_if}\" ip6 saddr {lab} ct state new meta l4proto udp ct timeout set \"udp_state\"")?;
        writeln!(
            o,
            "        iifname \"{lan_if}\" oifname \"{wan_if}\" ip6 saddr {lab} accept"
        )?;
        match v6.policy {
            Ipv6Policy::Firewall => writeln!(o, "        iifname \"{wan_if}\" oifname \"{lan_if}\" ip6 daddr {lab} ct state established,related accept")?,
            Ipv6Policy::Routed => writeln!(
                o,
                "        iifname \"{wan_if}\" oifname \"{lan_if}\" ip6 daddr {lab} accept"
            )?,
        }
        writeln!(o, "    }}")?;
        // the router itself offers no service (neighbour discovery and ping still work)
        writeln!(o, "    chain input {{")?;
        writeln!(
            o,
            "        type filter hook input priority filter; policy accept;"
        )?;
        writeln!(o, "        ct state established,related accept")?;
        writeln!(o, "        iif \"lo\" accept")?;
        writeln!(o, "        meta l4proto {{ tcp, udp }} drop")?;
        writeln!(o, "    }}")?;
        writeln!(o, "    chain output {{")?;
        writeln!(
            o,
            "        type filter hook output priority filter; policy accept;"
        )?;
        writeln!(o, "        ip6 daddr @host_addrs drop")?;
        writeln!(o, "    }}")?;
        writeln!(o, "}}")
    }

    /// The two mapping maps of `p`, with the static forwards as permanent elements.
    fn map_decls(&self, o: &mut String, p: Proto) -> std::fmt::Result {
        let [int, ext] = p.maps();
        let fwd = self.forwards.iter().filter(|f| f.proto == p);
        let int_el: Vec<String> = fwd
            .clone()
            .map(|f| {
                format!(
                    "{} . {} : {} . {}",
                    f.lan_ip, f.lan_port, self.wan_ip, f.ext_port
                )
            })
            .collect();
        let ext_el: Vec<String> = fwd
            .map(|f| format!("{} : {} . {}", f.ext_port, f.lan_ip, f.lan_port))
            .collect();
        writeln!(o, "    map {int} {{")?;
        writeln!(o, "        type ipv4_addr . inet_service : ipv4_addr . inet_service; flags dynamic, timeout;")?;
        if !int_el.is_empty() {
            writeln!(o, "        elements = {{ {} }}", int_el.join(", "))?;
        }
        writeln!(o, "    }}")?;
        writeln!(o, "    map {ext} {{")?;
        writeln!(
            o,
            "        type inet_service : ipv4_addr . inet_service; flags dynamic, timeout;"
        )?;
        if !ext_el.is_empty() {
            writeln!(o, "        elements = {{ {} }}", ext_el.join(", "))?;
        }
        writeln!(o, "    }}")
    }

    /// The rules that fill `p`'s maps from the packets leaving the WAN interface.
    fn map_rules(&self, o: &mut String, p: Proto) -> std::fmt::Result {
        let [int, ext] = p.maps();
        let wan_if = &self.wan_if;
        let t = self.timeout_s;
        // An explicit mask for the conntrack address: nft 1.0.6 compiles `ct original ip saddr
        // 10.1.0.0/24` into a compare without a bitwise mask (seen with --debug=netlink).
        let ct_lan = format!(
            "ct original ip saddr & {} == {}",
            mask(self.lan.len),
            self.lan.net
        );
        writeln!(o, "        oifname \"{wan_if}\" ct direction original {ct_lan} ct state new meta l4proto {p} ct original ip saddr . ct original proto-src != @{int} {p} sport @{ext} counter drop comment \"external port held by another LAN endpoint\"")?;
        writeln!(o, "        oifname \"{wan_if}\" ct direction original {ct_lan} meta l4proto {p} update @{int} {{ ct original ip saddr . ct original proto-src timeout {t}s : ip saddr . {p} sport }} update @{ext} {{ {p} sport timeout {t}s : ct original ip saddr . ct original proto-src }}")?;
        writeln!(o, "        oifname \"{wan_if}\" ct direction reply ct status dnat meta l4proto {p} update @{int} {{ ct reply ip saddr . ct reply proto-src timeout {t}s : ip saddr . {p} sport }} update @{ext} {{ {p} sport timeout {t}s : ct reply ip saddr . ct reply proto-src }}")
    }

    /// miniupnpd's chains. miniupnpd (nftables backend, 2.3.1) only adds and deletes rules in
    /// existing chains of an inet table: one DNAT per mapping in `prerouting_miniupnpd`, PCP PEER
    /// SNATs in `postrouting_miniupnpd`, accepts in `forward_miniupnpd` (which no base chain jumps
    /// to: the ip table's forward chain accepts `ct status dnat` from the WAN, and only miniupnpd
    /// DNATs in this profile).
    fn upnp_table(&self, o: &mut String) -> std::fmt::Result {
        let wan_if = &self.wan_if;
        writeln!(o, "table inet {UPNP_TABLE} {{")?;
        writeln!(o, "    chain prerouting {{")?;
        writeln!(
            o,
            "        type nat hook prerouting priority dstnat; policy accept;"
        )?;
        writeln!(
            o,
            "        iifname \"{wan_if}\" meta nfproto ipv4 jump prerouting_miniupnpd"
        )?;
        writeln!(o, "    }}")?;
        writeln!(o, "    chain postrouting {{")?;
        writeln!(
            o,
            "        type nat hook postrouting priority srcnat; policy accept;"
        )?;
        writeln!(
            o,
            "        oifname \"{wan_if}\" meta nfproto ipv4 jump postrouting_miniupnpd"
        )?;
        writeln!(o, "    }}")?;
        for chain in [
            "prerouting_miniupnpd",
            "postrouting_miniupnpd",
            "forward_miniupnpd",
        ] {
            writeln!(o, "    chain {chain} {{")?;
            writeln!(o, "    }}")?;
        }
        writeln!(o, "}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(profile: Profile) -> Router {
        Router {
            profile,
            lan_if: "eth1".into(),
            wan_if: "eth0".into(),
            lan: "10.101.0.0/24".parse().unwrap(),
            wan_ip: Ipv4Addr::new(198, 18, 0, 2),
            host_addrs: vec![Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(10, 101, 0, 1)],
            timeout_s: 120,
            forwards: Vec::new(),
            hairpin: false,
            tcp_ports: Vec::new(),
            ipv6: None,
        }
    }

    fn with_ipv6(profile: Profile, policy: Ipv6Policy) -> Router {
        Router {
            ipv6: Some(Ipv6Side {
                policy,
                lan: "fd70:a65::/64".parse().unwrap(),
                wan_ip: "fd70:c612::2".parse().unwrap(),
            }),
            ..router(profile)
        }
    }

    fn lines(r: &Router) -> Vec<String> {
        r.ruleset().lines().map(|l| l.trim().to_string()).collect()
    }

    fn has(r: &Router, needle: &str) -> bool {
        lines(r).iter().any(|l| l.contains(needle))
    }

    #[test]
    fn masks() {
        assert_eq!(mask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(mask(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(mask(32), Ipv4Addr::new(255, 255, 255, 255));
        assert_eq!(mask(15), Ipv4Addr::new(255, 254, 0, 0));
    }

    #[test]
    fn every_profile_starts_clean_and_never_reaches_the_host() {
        for p in Profile::ALL {
            let r = router(p);
            let l = lines(&r);
            assert_eq!(l[1], "table ip p2plab_router {}", "{p}");
            assert_eq!(l[2], "delete table ip p2plab_router", "{p}");
            assert!(
                l.contains(&"elements = { 198.18.0.1, 10.101.0.1 }".to_string()),
                "{p}"
            );
            assert!(
                l.contains(&"ip daddr @host_addrs counter drop".to_string()),
                "{p}: forward"
            );
            assert!(
                l.contains(&"ip daddr @host_addrs drop".to_string()),
                "{p}: output"
            );
            assert!(
                l.contains(&"type filter hook forward priority filter; policy drop;".to_string()),
                "{p}"
            );
            // The router itself answers nothing but replies (and miniupnpd on the LAN).
            assert!(
                l.contains(&"meta l4proto { tcp, udp } drop".to_string()),
                "{p}"
            );
            // Braces balance.
            let text = r.ruleset();
            assert_eq!(text.matches('{').count(), text.matches('}').count(), "{p}");
        }
    }

    #[test]
    fn endpoint_independent_profiles_keep_a_mapping_per_lan_endpoint() {
        for p in [
            Profile::Open,
            Profile::Home,
            Profile::PortForward,
            Profile::Upnp,
        ] {
            let r = router(p);
            for proto in ["udp", "tcp"] {
                assert!(has(&r, &format!("map {proto}_int {{")), "{p}");
                assert!(
                    has(
                        &r,
                        &format!("snat ip to ip saddr . {proto} sport map @{proto}_int")
                    ),
                    "{p}"
                );
                assert!(has(&r, &format!("update @{proto}_int {{ ct original ip saddr . ct original proto-src timeout 120s")), "{p}");
                assert!(
                    has(&r, &format!("{proto} sport @{proto}_ext counter drop")),
                    "{p}"
                );
            }
            assert!(
                has(&r, "ct original ip saddr & 255.255.255.0 == 10.101.0.0"),
                "{p}: masked conntrack source"
            );
            assert!(
                has(
                    &r,
                    "oifname \"eth0\" ip saddr 10.101.0.0/24 snat ip to 198.18.0.2"
                ),
                "{p}"
            );
            assert!(
                !has(&r, "snat ip to 198.18.0.2 random"),
                "{p}: no per-connection port"
            );
        }
    }

    #[test]
    fn strict_takes_a_random_port_per_connection_and_keeps_no_map() {
        let r = router(Profile::Strict);
        assert!(has(
            &r,
            "oifname \"eth0\" ip saddr 10.101.0.0/24 snat ip to 198.18.0.2 random"
        ));
        assert!(!has(&r, "_int"), "{}", r.ruleset());
        assert!(!has(&r, "dnat"), "nothing comes in unsolicited");
    }

    #[test]
    fn only_open_lets_anyone_in_at_a_mapping() {
        for p in Profile::ALL {
            let r = router(p);
            let full_cone = has(&r, "ip daddr 198.18.0.2 dnat ip to udp dport map @udp_ext");
            assert_eq!(full_cone, p == Profile::Open, "{p}");
            // Replies only, for home and strict.
            let dnat_in = has(&r, "ct status dnat accept");
            assert_eq!(
                dnat_in,
                matches!(p, Profile::Open | Profile::PortForward | Profile::Upnp),
                "{p}"
            );
        }
    }

    #[test]
    fn port_forwards_are_dnats_and_permanent_mappings() {
        let mut r = router(Profile::PortForward);
        r.forwards = vec![
            "tcp:4001:10.101.0.10:4001".parse().unwrap(),
            "udp:4001:10.101.0.10:4001".parse().unwrap(),
            "tcp:8080:10.101.0.11:80".parse().unwrap(),
        ];
        assert!(has(
            &r,
            "iifname \"eth0\" ip daddr 198.18.0.2 tcp dport 8080 dnat ip to 10.101.0.11:80"
        ));
        assert!(has(&r, "elements = { 10.101.0.10 . 4001 : 198.18.0.2 . 4001, 10.101.0.11 . 80 : 198.18.0.2 . 8080 }"));
        assert!(has(
            &r,
            "elements = { 4001 : 10.101.0.10 . 4001, 8080 : 10.101.0.11 . 80 }"
        ));
        assert!(
            has(&r, "elements = { 10.101.0.10 . 4001 : 198.18.0.2 . 4001 }"),
            "the udp map"
        );
    }

    #[test]
    fn routed_translates_nothing_and_filters_nothing() {
        let r = router(Profile::Routed);
        assert!(!has(&r, "snat") && !has(&r, "dnat") && !has(&r, "ct timeout"));
        assert!(has(&r, "iifname \"eth0\" oifname \"eth1\" accept"));
    }

    #[test]
    fn hairpin_sends_lan_hosts_to_mappings_and_shows_them_the_public_source() {
        let mut r = router(Profile::Home);
        r.hairpin = true;
        for want in [
            "iifname \"eth1\" ip saddr 10.101.0.0/24 ip daddr 198.18.0.2 dnat ip to udp dport map @udp_ext",
            "iifname \"eth1\" oifname \"eth1\" ip saddr 10.101.0.0/24 ct status dnat accept",
            "oifname \"eth1\" ip saddr 10.101.0.0/24 ip daddr 10.101.0.0/24 ct status dnat ip saddr . tcp sport @tcp_int snat ip to ip saddr . tcp sport map @tcp_int",
            "oifname \"eth1\" ip saddr 10.101.0.0/24 ip daddr 10.101.0.0/24 ct status dnat snat ip to 198.18.0.2",
            "icmp type redirect drop",
        ] {
            assert!(has(&r, want), "{want}\n{}", r.ruleset());
        }
        assert!(
            !has(&router(Profile::Home), "icmp type redirect drop"),
            "off by default"
        );
        // no mapping to aim at: nothing to hairpin, whatever is asked
        let mut s = router(Profile::Strict);
        s.hairpin = true;
        assert_eq!(s.ruleset(), router(Profile::Strict).ruleset());
    }

    #[test]
    fn udp_blocked_drops_udp_before_anything_is_accepted_and_is_home_otherwise() {
        let r = router(Profile::UdpBlocked);
        let l = lines(&r);
        let drop = l
            .iter()
            .position(|l| l == "meta l4proto udp counter drop")
            .expect("a udp drop");
        let first_accept = l
            .iter()
            .position(|l| l.ends_with("accept") && l.contains("iifname"))
            .unwrap();
        assert!(drop < first_accept, "{}", r.ruleset());
        assert!(!has(&r, "meta l4proto tcp counter drop"));
        assert!(!has(
            &router(Profile::Home),
            "meta l4proto udp counter drop"
        ));
        // TCP: the home router's mapping and filtering
        let tcp = |r: &Router| {
            lines(r)
                .into_iter()
                .filter(|l| l.contains("tcp"))
                .collect::<Vec<_>>()
        };
        assert_eq!(tcp(&r), tcp(&router(Profile::Home)));
    }

    #[test]
    fn a_tcp_allow_list_drops_lan_tcp_to_other_ports_before_any_accept_over_both_families() {
        let mut r = with_ipv6(Profile::UdpBlocked, Ipv6Policy::Firewall);
        r.tcp_ports = vec![443, 51820];
        let rule = "iifname \"eth1\" oifname \"eth0\" tcp dport != { 443, 51820 } counter drop";
        let l = lines(&r);
        let at: Vec<usize> = (0..l.len()).filter(|&i| l[i] == rule).collect();
        assert_eq!(at.len(), 2, "once per family: {}", r.ruleset());
        let accepts: Vec<usize> = (0..l.len())
            .filter(|&i| l[i].ends_with("accept") && l[i].contains("iifname"))
            .collect();
        // each family's drop comes before that family's first accept
        for (drop, next) in at
            .iter()
            .zip([accepts[0], *accepts.iter().find(|&&a| a > at[1]).unwrap()])
        {
            assert!(*drop < next, "{}", r.ruleset());
        }
        // without a list, nothing of the kind
        assert!(!has(
            &with_ipv6(Profile::UdpBlocked, Ipv6Policy::Firewall),
            "tcp dport !="
        ));
    }

    #[test]
    fn upnp_opens_miniupnpd_to_the_lan_only_and_gives_it_its_chains() {
        let r = router(Profile::Upnp);
        assert!(has(
            &r,
            "iifname \"eth1\" ip saddr 10.101.0.0/24 udp dport { 1900, 5351 } accept"
        ));
        let opens_upnp_table =
            |r: &Router| lines(r).iter().any(|l| l == "table inet p2plab_upnp {");
        assert!(opens_upnp_table(&r));
        assert!(has(&r, "chain forward_miniupnpd {"));
        assert!(
            !opens_upnp_table(&router(Profile::Home)),
            "only declared and deleted elsewhere"
        );
    }

    #[test]
    fn the_mapping_timeout_is_the_udp_state_timeout() {
        let mut r = router(Profile::Home);
        r.timeout_s = 30;
        assert!(has(&r, "policy = { unreplied : 30, replied : 30 };"));
        assert!(has(&r, "timeout 30s"));
    }

    #[test]
    fn ipv6_is_dropped_without_a_side_and_firewalled_or_routed_with_one() {
        let none = lines(&router(Profile::Home));
        let at = none
            .iter()
            .position(|l| l == "table ip6 p2plab_router {")
            .unwrap();
        assert_eq!(
            none[at + 1..at + 5],
            [
                "chain forward {",
                "type filter hook forward priority filter; policy drop;",
                "}",
                "}"
            ]
        );
        let fw = with_ipv6(Profile::Home, Ipv6Policy::Firewall);
        for want in [
            "ip6 daddr @host_addrs counter drop",
            "elements = { fd70:a65::1, fd70:c612::1 }",
            "ip6 daddr != fd70::/16 counter drop",
            "iifname \"eth1\" oifname \"eth0\" ip6 saddr fd70::/16 accept",
            "iifname \"eth0\" oifname \"eth1\" ip6 daddr fd70::/16 ct state established,related accept",
            "ip6 daddr @host_addrs drop",
        ] {
            assert!(has(&fw, want), "{want}\n{}", fw.ruleset());
        }
        assert!(
            !has(&fw, "snat ip6") && !has(&fw, "dnat ip6"),
            "never translated"
        );
        let routed = with_ipv6(Profile::Home, Ipv6Policy::Routed);
        assert!(has(
            &routed,
            "iifname \"eth0\" oifname \"eth1\" ip6 daddr fd70::/16 accept"
        ));
        assert!(!has(&routed, "ct state established,related accept\n"));
        assert!(!lines(&routed)
            .iter()
            .any(|l| l.starts_with("iifname \"eth0\" oifname \"eth1\" ip6")
                && l.contains("ct state established")));
        // a UDP-blocking network blocks UDP over IPv6 too
        let blocked = lines(&with_ipv6(Profile::UdpBlocked, Ipv6Policy::Firewall));
        assert_eq!(
            blocked
                .iter()
                .filter(|l| *l == "meta l4proto udp counter drop")
                .count(),
            2
        );
        let text = fw.ruleset();
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }

    /// Every profile's whole ruleset against its snapshot in `tools/snapshots/nft/`, so any
    /// change to what a router loads shows in review. `P2PLAB_UPDATE_SNAPSHOTS=1` rewrites them.
    #[test]
    fn rulesets_match_their_snapshots() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots/nft");
        let update = std::env::var("P2PLAB_UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1");
        // every profile, and the home router with hairpinning
        let cases = Profile::ALL.into_iter().map(|p| (p, false, None)).chain([
            (Profile::Home, true, None),
            (Profile::Home, false, Some(Ipv6Policy::Firewall)),
        ]);
        for (p, hairpin, v6) in cases {
            let mut r = match v6 {
                Some(policy) => with_ipv6(p, policy),
                None => router(p),
            };
            r.hairpin = hairpin;
            if p == Profile::PortForward {
                r.forwards = vec![
                    "tcp:4001:10.101.0.10:4001".parse().unwrap(),
                    "udp:4001:10.101.0.10:4001".parse().unwrap(),
                ];
            }
            let got = r.ruleset();
            let name = match (hairpin, v6) {
                (true, _) => format!("{p}-hairpin"),
                (false, Some(policy)) => format!("{p}-ipv6-{policy}"),
                (false, None) => p.to_string(),
            };
            let path = dir.join(format!("{name}.nft"));
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &got).unwrap();
                continue;
            }
            let want = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (P2PLAB_UPDATE_SNAPSHOTS=1 cargo test -p p2plab-tools --lib nft writes it)", path.display()));
            if got != want {
                let line = got
                    .lines()
                    .zip(want.lines())
                    .position(|(g, w)| g != w)
                    .map_or(got.lines().count().min(want.lines().count()), |i| i)
                    + 1;
                panic!(
                    "the {p} ruleset differs from {} at line {line}; if the change is meant, \
                     P2PLAB_UPDATE_SNAPSHOTS=1 cargo test -p p2plab-tools --lib nft rewrites the snapshots",
                    path.display()
                );
            }
        }
    }
}
