//! The NAT matrix: a listener behind each kind of router against a dialer behind each kind, over
//! TCP and over QUIC, every pair with the outcome one rule ([`outcome`]) gives it, written as
//! topology files (`p2plab matrix`). The files are committed; a test fails when they are stale.
//!
//! - [`SUBSET`] (`topologies/nat-matrix.yaml`): {open, home, strict}², run by `cargo test`.
//! - The full matrix (`topologies/matrix/`): one lab per listener side, every dialer side in it,
//!   and a lab of peers behind one router with and without hairpinning. `ci/matrix.sh` runs them
//!   (also in `.ci/run`).
//! - The IPv6 matrix (`topologies/matrix/ipv6.yaml`): IPv6-only peers behind an IPv6 firewall or
//!   an unfiltered IPv6 router, against each other, TCP and QUIC, by the same rule.

use std::fmt::Write as _;

use p2plab_contract::{
    nat::{Profile, Proto},
    Transport,
};

/// What a peer sits behind: a router profile, or two stacked (CGNAT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Open,
    Home,
    Strict,
    /// A home router with a forward of the peer's port.
    PortForward,
    /// A home router with an IGD; the peer maps its own port (`upnp: true`).
    Upnp,
    /// A home router behind a carrier's home router.
    Cgnat,
    UdpBlocked,
    /// An IPv6-only LAN behind a stateful IPv6 firewall (no translation).
    Firewall6,
    /// An IPv6-only LAN routed without filtering.
    Routed6,
}

impl Side {
    /// The IPv6 sides, matched against each other (an IPv6-only peer and an IPv4-only one share
    /// no family to go direct over).
    pub const IPV6: [Side; 2] = [Side::Firewall6, Side::Routed6];

    pub const ALL: [Side; 7] = [
        Side::Open,
        Side::Home,
        Side::Strict,
        Side::PortForward,
        Side::Upnp,
        Side::Cgnat,
        Side::UdpBlocked,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Side::Cgnat => "cgnat",
            Side::Firewall6 => "firewall6",
            Side::Routed6 => "routed6",
            other => other.profile().as_str(),
        }
    }

    /// The profile of the router next to the peer.
    pub fn profile(self) -> Profile {
        match self {
            Side::Open => Profile::Open,
            // (an IPv6 side's router is `home` for IPv4, which its IPv6-only hosts do not use)
            Side::Home | Side::Cgnat | Side::Firewall6 | Side::Routed6 => Profile::Home,
            Side::Strict => Profile::Strict,
            Side::PortForward => Profile::PortForward,
            Side::Upnp => Profile::Upnp,
            Side::UdpBlocked => Profile::UdpBlocked,
        }
    }

    /// Whether a peer behind it can be dialed from anywhere: its router lets unsolicited
    /// packets in (full cone) or forwards its port (statically or by UPnP).
    fn reachable(self) -> bool {
        matches!(
            self,
            Side::Open | Side::PortForward | Side::Upnp | Side::Routed6
        )
    }

    /// The segment's keys beyond `nat`.
    fn segment_keys(self) -> &'static str {
        match self {
            Side::Firewall6 => ", family: ipv6, ipv6: firewall",
            Side::Routed6 => ", family: ipv6, ipv6: routed",
            _ => "",
        }
    }

    /// Whether it can carry `t` at all.
    fn carries(self, t: Transport) -> bool {
        !(t.quic() && !t.tcp() && self.profile().blocks(Proto::Udp))
    }
}

/// A pair's expected outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The listener is reachable: the dialer's own dial gets through.
    Dialed,
    /// Both private: DCUtR punches a direct path.
    HolePunch,
    /// The dialer is reachable: the listener's half of DCUtR (its dial back) gets through.
    DialedBack,
    /// A symmetric NAT and a filtering one: the hole punch fails, the relay carries everything.
    RelayOnly,
    /// The listener (`true`) or the dialer (`false`) cannot use the transport: it connects to
    /// nobody.
    Blocked { listener: bool },
}

/// The rule: what happens between a listener behind `l` and a dialer behind `d` over `t`.
pub fn outcome(l: Side, d: Side, t: Transport) -> Outcome {
    if !l.carries(t) {
        return Outcome::Blocked { listener: true };
    }
    if !d.carries(t) {
        return Outcome::Blocked { listener: false };
    }
    if l.reachable() {
        return Outcome::Dialed;
    }
    if d.reachable() {
        return Outcome::DialedBack;
    }
    // both private: a hole punch needs a mapping the other side can aim at on both sides
    if l.profile().hole_punchable() && d.profile().hole_punchable() {
        Outcome::HolePunch
    } else {
        Outcome::RelayOnly
    }
}

/// The pairs of `topologies/nat-matrix.yaml`, the subset `cargo test` runs.
pub const SUBSET: [Side; 3] = [Side::Open, Side::Home, Side::Strict];

const TRANSPORTS: [Transport; 2] = [Transport::Tcp, Transport::Quic];
/// Messages per pair.
const COUNT: u32 = 10;
/// How soon after both peers start a pair that should go direct must have gone direct.
const DIRECT_WITHIN_S: u32 = 10;
/// The gap between a dialer's messages: its messages span the whole direct window, so that
/// `last: direct` holds whenever `direct` does (at 300 ms, a dial-back that took 5.3 s on a
/// loaded CI machine came after the tenth message, and the pair failed though it went direct).
const INTERVAL_MS: u32 = DIRECT_WITHIN_S * 1000 / COUNT;
/// The peers' port (forwards go to it).
const PEER_PORT: u16 = crate::plan::layout::PEER_PORT;

/// Every generated file: its path under the repository, and its text.
pub fn files() -> Vec<(String, String)> {
    let mut out = vec![(
        "topologies/nat-matrix.yaml".to_string(),
        lab(
            "nat-matrix",
            "{open, home, strict} x {open, home, strict}, TCP and QUIC: each pair's expected outcome (the full matrix: topologies/matrix/)",
            &SUBSET,
            &SUBSET,
        ),
    )];
    for l in Side::ALL {
        let name = format!("matrix-{}", l.name());
        let what = format!(
            "a listener behind {} against a dialer behind each kind of router, TCP and QUIC",
            l.name()
        );
        out.push((
            format!("topologies/matrix/{}.yaml", l.name()),
            lab(&name, &what, &[l], &Side::ALL),
        ));
    }
    out.push(("topologies/matrix/same-lan.yaml".to_string(), same_lan()));
    out.push((
        "topologies/matrix/ipv6.yaml".to_string(),
        lab(
            "matrix-ipv6",
            "IPv6-only peers behind an IPv6 firewall or an unfiltered IPv6 router, against each other, TCP and QUIC",
            &Side::IPV6,
            &Side::IPV6,
        ),
    ));
    out
}

/// How to write them again.
pub const REGENERATE: &str = "cargo run -p p2plab -- matrix";

const HEADER: &str = "# Generated by `p2plab matrix` from the rule in harness/src/plan/matrix.rs; edit that, not this.";

fn lab(name: &str, description: &str, listeners: &[Side], dialers: &[Side]) -> String {
    let mut o = String::new();
    let pairs: Vec<(Side, Side, Transport)> = TRANSPORTS
        .iter()
        .flat_map(|&t| {
            listeners
                .iter()
                .flat_map(move |&l| dialers.iter().map(move |&d| (l, d, t)))
        })
        .collect();
    let _ = writeln!(o, "{HEADER}");
    let _ = writeln!(o, "# Each pair is in its own namespace; its expected outcome is asserted, relay-only ones too:");
    let _ = writeln!(
        o,
        "# - direct: the listener is reachable (open, a forward, UPnP), or the dialer is and the"
    );
    let _ = writeln!(o, "#   listener dials back, or both are private behind endpoint-independent mappings (hole punch);");
    let _ = writeln!(
        o,
        "# - relay only: a symmetric NAT (strict) and a private peer: the hole punch fails;"
    );
    let _ = writeln!(
        o,
        "# - blocked: QUIC behind a UDP-blocking router: that peer connects to nobody."
    );
    let _ = writeln!(o, "name: {name}");
    let _ = writeln!(o, "description: \"{description}\"");
    let _ = writeln!(o, "timeout: 180s");
    let _ = writeln!(o, "segments:");
    let v6 = listeners
        .iter()
        .chain(dialers)
        .any(|s| Side::IPV6.contains(s));
    let _ = writeln!(
        o,
        "  internet: {{{}}}",
        if v6 { " family: dual " } else { "" }
    );
    let mut sides: Vec<(&str, Side)> = listeners.iter().map(|&s| ("l", s)).collect();
    sides.extend(dialers.iter().map(|&s| ("d", s)));
    for &(end, s) in &sides {
        let seg = format!("{end}-{}", s.name());
        let mut extra = String::new();
        if s == Side::Cgnat {
            let _ = writeln!(o, "  {seg}-carrier: {{ nat: home }}");
            extra = format!(", uplink: {seg}-carrier");
        }
        if s == Side::PortForward {
            // each peer on it gets its own external port
            let peers: Vec<String> = pairs
                .iter()
                .filter(|(l, d, _)| if end == "l" { *l == s } else { *d == s })
                .map(|&(l, d, t)| format!("{end}-{}", namespace(l, d, t)))
                .collect();
            let fw: Vec<String> = peers
                .iter()
                .enumerate()
                .map(|(i, p)| format!("{{ port: {}, to: {p}, to_port: {PEER_PORT} }}", 4101 + i))
                .collect();
            extra = format!(", forward: [{}]", fw.join(", "));
        }
        let _ = writeln!(
            o,
            "  {seg}: {{ nat: {}{}{extra} }}",
            s.profile(),
            s.segment_keys()
        );
    }
    let _ = writeln!(o, "nodes:");
    let _ = writeln!(o, "  boot: {{ role: monitor, segment: internet }}");
    for &(l, d, t) in &pairs {
        let ns = namespace(l, d, t);
        let upnp = |s: Side| if s == Side::Upnp { ", upnp: true" } else { "" };
        // a dialer that cannot reach its listener sends forever (count 0), so that the lab ends
        // when everything else is done
        let count = if matches!(outcome(l, d, t), Outcome::Blocked { .. }) {
            0
        } else {
            COUNT
        };
        let t = t.as_str();
        let _ = writeln!(
            o,
            "  l-{ns}: {{ role: listener, segment: l-{}, namespace: {ns}, transport: {t}{} }}",
            l.name(),
            upnp(l)
        );
        let _ = writeln!(
            o,
            "  d-{ns}: {{ role: dialer, segment: d-{}, namespace: {ns}, transport: {t}, count: {count}, interval: {INTERVAL_MS}ms{} }}",
            d.name(),
            upnp(d)
        );
    }
    let _ = writeln!(o, "expect:");
    for &(l, d, t) in &pairs {
        expect(&mut o, l, d, t);
    }
    o
}

fn namespace(l: Side, d: Side, t: Transport) -> String {
    format!("{}-{}-{}", l.name(), d.name(), t.as_str())
}

/// The expectations of one pair, by its outcome.
fn expect(o: &mut String, l: Side, d: Side, t: Transport) {
    let ns = namespace(l, d, t);
    let (dl, ll) = (format!("d-{ns}"), format!("l-{ns}"));
    let outcome = outcome(l, d, t);
    let _ = writeln!(
        o,
        "  # listener {}, dialer {}, {}: {outcome:?}",
        l.name(),
        d.name(),
        t.as_str()
    );
    let direct = |o: &mut String| {
        let _ = writeln!(
            o,
            "  - {{ direct: [{dl}, {ll}], within: {DIRECT_WITHIN_S}s }}"
        );
        let _ = writeln!(
            o,
            "  - {{ path: {{ from: {dl}, to: {ll}, last: direct }} }}"
        );
    };
    match outcome {
        Outcome::Dialed | Outcome::DialedBack => direct(o),
        Outcome::HolePunch => {
            direct(o);
            let _ = writeln!(
                o,
                "  - {{ event: {{ node: {dl}, kind: hole_punch, where: {{ ok: true }} }} }}"
            );
        }
        Outcome::RelayOnly => {
            let _ = writeln!(o, "  - {{ hole_punch_fails: [{dl}, {ll}] }}");
            let _ = writeln!(
                o,
                "  - {{ path: {{ from: {dl}, to: {ll}, all: relayed }} }}"
            );
        }
        Outcome::Blocked { listener } => {
            let blocked = if listener { &ll } else { &dl };
            let _ = writeln!(
                o,
                "  - {{ event: {{ node: {blocked}, kind: connected, max: 0 }} }}"
            );
            let _ = writeln!(
                o,
                "  - {{ event: {{ node: {dl}, kind: message_acked, max: 0 }} }}"
            );
            return;
        }
    }
    let _ = writeln!(
        o,
        "  - {{ delivered: {{ from: {dl}, to: {ll}, count: {COUNT}, lost: 0, duplicates: 0 }} }}"
    );
}

/// Peers behind one home router, with and without hairpinning, over TCP and over QUIC: direct
/// over their LAN either way (hairpinning only adds a path through the router).
fn same_lan() -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{HEADER}");
    let _ = writeln!(o, "# Two peers behind one home router, with and without hairpinning, TCP and QUIC: direct either way.");
    let _ = writeln!(o, "name: matrix-same-lan");
    let _ = writeln!(
        o,
        "description: \"peers behind one home router, hairpin on and off, TCP and QUIC: direct\""
    );
    let _ = writeln!(o, "timeout: 120s");
    let _ = writeln!(o, "segments:");
    let _ = writeln!(o, "  internet: {{}}");
    let _ = writeln!(o, "  lan-hairpin: {{ nat: home, hairpin: true }}");
    let _ = writeln!(o, "  lan-plain: {{ nat: home }}");
    let _ = writeln!(o, "nodes:");
    let _ = writeln!(o, "  boot: {{ role: monitor, segment: internet }}");
    let cases: Vec<(&str, Transport)> = ["hairpin", "plain"]
        .into_iter()
        .flat_map(|h| TRANSPORTS.into_iter().map(move |t| (h, t)))
        .collect();
    for &(h, t) in &cases {
        let (ns, t) = (format!("{h}-{}", t.as_str()), t.as_str());
        let _ = writeln!(
            o,
            "  l-{ns}: {{ role: listener, segment: lan-{h}, namespace: {ns}, transport: {t} }}"
        );
        let _ = writeln!(o, "  d-{ns}: {{ role: dialer, segment: lan-{h}, namespace: {ns}, transport: {t}, count: {COUNT}, interval: {INTERVAL_MS}ms }}");
    }
    let _ = writeln!(o, "expect:");
    for &(h, t) in &cases {
        let ns = format!("{h}-{}", t.as_str());
        let _ = writeln!(
            o,
            "  - {{ direct: [d-{ns}, l-{ns}], within: {DIRECT_WITHIN_S}s }}"
        );
        let _ = writeln!(
            o,
            "  - {{ path: {{ from: d-{ns}, to: l-{ns}, last: direct }} }}"
        );
        let _ = writeln!(o, "  - {{ delivered: {{ from: d-{ns}, to: l-{ns}, count: {COUNT}, lost: 0, duplicates: 0 }} }}");
    }
    o
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_rule() {
        use Outcome::*;
        use Side::*;
        let tcp = Transport::Tcp;
        assert_eq!(outcome(Home, Home, tcp), HolePunch);
        assert_eq!(outcome(Strict, Home, tcp), RelayOnly);
        assert_eq!(outcome(Home, Strict, tcp), RelayOnly);
        assert_eq!(outcome(Strict, Strict, tcp), RelayOnly);
        assert_eq!(outcome(Strict, Open, tcp), DialedBack);
        assert_eq!(outcome(Open, Strict, tcp), Dialed);
        assert_eq!(outcome(PortForward, Strict, tcp), Dialed);
        assert_eq!(outcome(Cgnat, Home, tcp), HolePunch);
        assert_eq!(outcome(Cgnat, Strict, tcp), RelayOnly);
        assert_eq!(outcome(UdpBlocked, Home, tcp), HolePunch);
        assert_eq!(outcome(Firewall6, Firewall6, tcp), HolePunch);
        assert_eq!(outcome(Firewall6, Routed6, Transport::Quic), DialedBack);
        assert_eq!(outcome(Routed6, Firewall6, tcp), Dialed);
        assert_eq!(
            outcome(UdpBlocked, Home, Transport::Quic),
            Blocked { listener: true }
        );
        assert_eq!(
            outcome(Open, UdpBlocked, Transport::Quic),
            Blocked { listener: false }
        );
        // every pair has exactly one outcome, and the rule is what the subset file was before it
        let relay_only: Vec<_> = SUBSET
            .iter()
            .flat_map(|&l| SUBSET.iter().map(move |&d| (l, d)))
            .filter(|&(l, d)| outcome(l, d, tcp) == RelayOnly)
            .collect();
        assert_eq!(
            relay_only,
            [(Home, Strict), (Strict, Home), (Strict, Strict)]
        );
    }

    #[test]
    fn every_generated_file_is_a_valid_topology() {
        for (path, text) in files() {
            crate::model::parse(&path, &text).unwrap_or_else(|e| panic!("{path}: {}", e.render()));
        }
    }

    /// The committed files are what `p2plab matrix` writes.
    #[test]
    fn the_committed_files_are_fresh() {
        let root = crate::engine::image::repo_root();
        for (path, want) in files() {
            let have = std::fs::read_to_string(root.join(&path)).unwrap_or_default();
            assert!(
                have == want,
                "{path} is not what the rule makes; regenerate with `{REGENERATE}`"
            );
        }
    }
}
