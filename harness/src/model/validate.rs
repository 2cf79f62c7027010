//! What serde cannot check, and the model built from the raw YAML: references, names, subnets,
//! uplink cycles, one kind per fault or expectation; replicas expanded.

use std::{collections::BTreeMap, time::Duration};

use ipnet::Ipv4Net;
use serde_saphyr::Spanned;

use p2plab_contract::{nat::Mapping as NatMapping, Path};

use super::{
    errors::{hint, Ctx},
    raw::*,
    *,
};

type S<T> = Spanned<T>;

pub(super) fn first_line(s: &str) -> String {
    // serde-saphyr's message may carry its own location suffix and snippet; keep the message.
    let l = s.lines().next().unwrap_or(s).trim().to_string();
    match l.find(" at line ") {
        Some(i) => l[..i].to_string(),
        None => l,
    }
}

pub(super) fn yaml_hint(msg: &str) -> Option<String> {
    if msg.contains("unknown field") {
        Some("see topologies/README.md for the keys this place accepts".into())
    } else if msg.contains("missing field") {
        Some("this key is required here; see topologies/README.md".into())
    } else if msg.contains("duplicate") {
        Some("names must be unique within their map".into())
    } else {
        None
    }
}

pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let ms = match unit.trim() {
        "ms" => n,
        "s" => n * 1e3,
        "m" | "min" => n * 60e3,
        "h" => n * 3600e3,
        _ => return None,
    };
    if ms > 1e12 {
        return None;
    }
    Some(Duration::from_micros((ms * 1e3) as u64))
}

fn duration(cx: &Ctx<'_>, d: &S<RawDuration>, key: &str) -> Result<Duration, TopologyError> {
    match &d.value {
        RawDuration::Secs(n) => Ok(Duration::from_secs(*n)),
        RawDuration::Text(t) => parse_duration(t).ok_or_else(|| {
            cx.err(
                d.referenced,
                format!("{key}: `{t}` is not a duration"),
                hint("write e.g. 500ms, 10s or 2m"),
            )
        }),
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
}

fn percent(cx: &Ctx<'_>, s: &S<String>) -> Result<f64, TopologyError> {
    let t = s.value.trim();
    let v: Option<f64> = t.strip_suffix('%').unwrap_or(t).trim().parse().ok();
    match v {
        Some(v) if (0.0..=100.0).contains(&v) => Ok(v),
        _ => Err(cx.err(
            s.referenced,
            format!("loss: `{t}` is not a percentage"),
            hint("write e.g. 10% (0 to 100)"),
        )),
    }
}

fn rate(cx: &Ctx<'_>, s: &S<String>) -> Result<String, TopologyError> {
    let t = s.value.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let ok = !num.is_empty()
        && num.parse::<u64>().is_ok_and(|n| n > 0)
        && matches!(unit, "kbit" | "mbit" | "gbit");
    if ok {
        Ok(t.to_string())
    } else {
        Err(cx.err(
            s.referenced,
            format!("rate: `{t}` is not a rate"),
            hint("write e.g. 512kbit, 10mbit or 1gbit"),
        ))
    }
}

fn impair_of(
    cx: &Ctx<'_>,
    delay: &Option<S<RawDuration>>,
    jitter: &Option<S<RawDuration>>,
    loss: &Option<S<String>>,
    rate_: &Option<S<String>>,
) -> Result<Impair, TopologyError> {
    let delay_ms = delay
        .as_ref()
        .map(|d| duration(cx, d, "delay"))
        .transpose()?
        .map(|d| d.as_millis() as u64);
    let jitter_ms = jitter
        .as_ref()
        .map(|d| duration(cx, d, "jitter"))
        .transpose()?
        .map(|d| d.as_millis() as u64);
    if let (Some(j), Some(jv)) = (jitter, jitter_ms) {
        if jv > delay_ms.unwrap_or(0) {
            return Err(cx.err(
                j.referenced,
                "jitter is larger than delay",
                hint("jitter varies the delay by ± that much; set delay ≥ jitter"),
            ));
        }
    }
    Ok(Impair {
        delay_ms,
        jitter_ms,
        loss_pct: loss.as_ref().map(|l| percent(cx, l)).transpose()?,
        rate: rate_.as_ref().map(|r| rate(cx, r)).transpose()?,
    })
}

pub(super) fn validate(cx: &Ctx<'_>, raw: RawTopology) -> Result<Topology, TopologyError> {
    if !valid_name(&raw.name.value) || raw.name.value.len() > 24 {
        return Err(cx.err(
            raw.name.referenced,
            format!("name: `{}` is not a valid lab name", raw.name.value),
            hint(
                "lowercase letters, digits and '-', starting with a letter, at most 24 characters",
            ),
        ));
    }
    let timeout = match &raw.timeout {
        Some(t) => duration(cx, t, "timeout")?,
        None => Duration::from_secs(180),
    };
    if timeout.is_zero() {
        if let Some(t) = &raw.timeout {
            return Err(cx.err(t.referenced, "timeout must be more than 0", None));
        }
    }
    let resources = match &raw.resources {
        Some(r) => {
            let d = duration(cx, r, "resources")?;
            if d < Duration::from_secs(1) {
                return Err(cx.err(
                    r.referenced,
                    "resources: sample at most once a second",
                    hint("e.g. `resources: 10s`"),
                ));
            }
            Some(d)
        }
        None => None,
    };
    let default_transport = match &raw.transport {
        Some(t) => transport(cx, t)?,
        None => Transport::Both,
    };

    // ---- segments
    if raw.segments.value.is_empty() {
        return Err(cx.err(
            raw.segments.referenced,
            "segments: at least one segment is needed",
            hint("e.g. `segments: { internet: {} }`"),
        ));
    }
    let mut segments = Vec::new();
    let public: Vec<&str> = raw
        .segments
        .value
        .iter()
        .filter(|(_, s)| s.value.nat.is_none())
        .map(|(k, _)| k.value.as_str())
        .collect();
    if public.is_empty() {
        return Err(cx.err(
            raw.segments.referenced,
            "segments: no public segment (one without `nat`)",
            hint("routers need an internet to uplink to, e.g. `internet: {}`"),
        ));
    }
    for (name, seg) in &raw.segments.value {
        if !valid_name(&name.value) {
            return Err(cx.err(
                name.referenced,
                format!("segment name `{}` is not valid", name.value),
                hint("lowercase letters, digits and '-', starting with a letter"),
            ));
        }
        let s = &seg.value;
        let subnet = match &s.subnet {
            Some(sub) => {
                let net: Ipv4Net = sub.value.parse().map_err(|_| {
                    cx.err(
                        sub.referenced,
                        format!("subnet: `{}` is not an IPv4 prefix", sub.value),
                        hint("write e.g. 10.1.0.0/24"),
                    )
                })?;
                if net.trunc() != net {
                    return Err(cx.err(
                        sub.referenced,
                        format!("subnet: `{}` has host bits set", sub.value),
                        hint(format!("did you mean {}?", net.trunc())),
                    ));
                }
                if net.prefix_len() > 28 || net.prefix_len() < 16 {
                    return Err(cx.err(
                        sub.referenced,
                        format!("subnet: /{} is out of range", net.prefix_len()),
                        hint("use a prefix from /16 to /28"),
                    ));
                }
                if let Some(bad) = crate::plan::forbidden()
                    .into_iter()
                    .find(|f| f.contains(&net.network()) || net.contains(&f.network()))
                {
                    return Err(cx.err(
                        sub.referenced,
                        format!("subnet: {net} overlaps the reserved range {bad}"),
                        hint("TEST-NETs host real infrastructure here and 10.255.255.0/24 is the resolver; use 198.18.0.0/15, 10.x or 100.64.0.0/10"),
                    ));
                }
                Some((net, sub.referenced))
            }
            None => None,
        };
        let nat = match &s.nat {
            None => {
                for (key, present, at) in [
                    (
                        "uplink",
                        s.uplink.is_some(),
                        s.uplink.as_ref().map(|u| u.referenced),
                    ),
                    (
                        "forward",
                        !s.forward.is_empty(),
                        s.forward.first().map(|f| f.referenced),
                    ),
                    (
                        "impair",
                        s.impair.is_some(),
                        s.impair.as_ref().map(|i| i.referenced),
                    ),
                    (
                        "mapping_timeout",
                        s.mapping_timeout.is_some(),
                        s.mapping_timeout.as_ref().map(|i| i.referenced),
                    ),
                    (
                        "hairpin",
                        s.hairpin.is_some(),
                        s.hairpin.as_ref().map(|h| h.referenced),
                    ),
                    (
                        "tcp_ports",
                        s.tcp_ports.is_some(),
                        s.tcp_ports.as_ref().map(|h| h.referenced),
                    ),
                    (
                        "ipv6",
                        s.ipv6.is_some(),
                        s.ipv6.as_ref().map(|h| h.referenced),
                    ),
                    (
                        "engine",
                        s.engine.is_some(),
                        s.engine.as_ref().map(|h| h.referenced),
                    ),
                ] {
                    if present {
                        return Err(cx.err(
                            at.unwrap_or(name.referenced),
                            format!("segment `{}`: `{key}` needs a router, and a segment without `nat` has none", name.value),
                            hint("add `nat: home` (or another profile) to make it a LAN behind a router"),
                        ));
                    }
                }
                None
            }
            Some(p) => {
                let profile = p.value.parse::<NatProfile>().map_err(|_| {
                    cx.err(
                        p.referenced,
                        format!("nat: unknown profile `{}`", p.value),
                        hint(format!(
                            "one of {}; a CGNAT is a LAN whose uplink is another LAN",
                            NatProfile::NAMES
                        )),
                    )
                })?;
                let uplink = match &s.uplink {
                    Some(u) => u.value.clone(),
                    None if public.len() == 1 => public[0].to_string(),
                    None => {
                        return Err(cx.err(
                            name.referenced,
                            format!(
                            "segment `{}`: `uplink` is needed, there are several public segments",
                            name.value
                        ),
                            hint(format!("one of: {}", public.join(", "))),
                        ))
                    }
                };
                if let Some(u) = &s.uplink {
                    if !raw.segments.value.keys().any(|k| k.value == u.value) {
                        return Err(cx.err(
                            u.referenced,
                            format!("uplink: no segment named `{}`", u.value),
                            known(raw.segments.value.keys().map(|k| &k.value)),
                        ));
                    }
                    if u.value == name.value {
                        return Err(cx.err(
                            u.referenced,
                            "uplink: a segment cannot be its own uplink",
                            None,
                        ));
                    }
                }
                let mut forward = Vec::new();
                for f in &s.forward {
                    if profile != NatProfile::PortForward {
                        return Err(cx.err(f.referenced, format!("forward: only a `port-forward` router forwards ports (this one is `{}`)", profile.as_str()), hint("set `nat: port-forward`")));
                    }
                    let fv = &f.value;
                    let proto = fv
                        .proto
                        .as_ref()
                        .map(|p| p.value.clone())
                        .unwrap_or_else(|| "both".into());
                    if !matches!(proto.as_str(), "tcp" | "udp" | "both") {
                        if let Some(p) = &fv.proto {
                            return Err(cx.err(
                                p.referenced,
                                format!("proto: `{proto}` is not tcp, udp or both"),
                                None,
                            ));
                        }
                    }
                    if fv.port.value == 0 {
                        return Err(cx.err(fv.port.referenced, "port: 0 is not a port", None));
                    }
                    forward.push((
                        Forward {
                            proto,
                            port: fv.port.value,
                            to: fv.to.value.clone(),
                            to_port: fv.to_port.unwrap_or(fv.port.value),
                        },
                        fv.to.referenced,
                    ));
                }
                if profile == NatProfile::PortForward && forward.is_empty() {
                    return Err(cx.err(
                        p.referenced,
                        "a `port-forward` router needs at least one `forward` entry",
                        hint("e.g. `forward: [{ port: 4001, to: alice }]`"),
                    ));
                }
                let impair = match &s.impair {
                    Some(i) => impair_of(
                        cx,
                        &i.value.delay,
                        &i.value.jitter,
                        &i.value.loss,
                        &i.value.rate,
                    )?,
                    None => Impair::default(),
                };
                let mapping_timeout_s = s
                    .mapping_timeout
                    .as_ref()
                    .map(|d| duration(cx, d, "mapping_timeout"))
                    .transpose()?
                    .map(|d| d.as_secs().max(1));
                let hairpin = match &s.hairpin {
                    Some(h) if h.value && profile.mapping() != NatMapping::EndpointIndependent => {
                        return Err(cx.err(
                            h.referenced,
                            format!("hairpin: a `{}` router has no endpoint-independent mapping for a LAN host to aim at", profile.as_str()),
                            hint("hairpinning needs `open`, `home`, `port-forward`, `upnp` or `udp-blocked`"),
                        ))
                    }
                    Some(h) => h.value,
                    None => false,
                };
                let tcp_ports = match &s.tcp_ports {
                    None => Vec::new(),
                    Some(t) if profile != NatProfile::UdpBlocked => {
                        return Err(cx.err(
                            t.referenced,
                            format!("tcp_ports: a `{}` router lets TCP out to every port", profile.as_str()),
                            hint("an allow list is an option of `nat: udp-blocked` (a corporate network: no UDP, TCP to these ports only)"),
                        ))
                    }
                    Some(t) => {
                        let bad = |why: String| {
                            cx.err(
                                t.referenced,
                                format!("tcp_ports: {why}"),
                                hint("e.g. `tcp_ports: [443, 51820]` (51820: the monitors' port, so that the relay is reachable)"),
                            )
                        };
                        if t.value.is_empty() {
                            return Err(bad("the list is empty (leave it out to allow every port)".into()));
                        }
                        if t.value.contains(&0) {
                            return Err(bad("port 0 cannot be dialed".into()));
                        }
                        if let Some(p) = t.value.iter().enumerate().find_map(|(i, p)| t.value[..i].contains(p).then_some(p)) {
                            return Err(bad(format!("port {p} is listed twice")));
                        }
                        t.value.clone()
                    }
                };
                Some((
                    Nat {
                        profile,
                        uplink,
                        forward: forward.iter().map(|f| f.0.clone()).collect(),
                        impair,
                        mapping_timeout_s,
                        hairpin,
                        tcp_ports,
                        ipv6: None,
                    },
                    forward,
                ))
            }
        };
        let family = match &s.family {
            None => Family::Ipv4,
            Some(f) => {
                let family = Family::parse(&f.value).ok_or_else(|| {
                    cx.err(
                        f.referenced,
                        format!("family: `{}` is not {}", f.value, Family::NAMES),
                        None,
                    )
                })?;
                family
            }
        };
        let (mut nat, fwd_refs) = match nat {
            Some((n, f)) => (Some(n), f),
            None => (None, Vec::new()),
        };
        if let Some(n) = nat.as_mut() {
            n.ipv6 = match (&s.ipv6, family.v6()) {
                (Some(p), true) => Some(p.value.parse::<Ipv6Policy>().map_err(|_| {
                    cx.err(
                        p.referenced,
                        format!("ipv6: `{}` is not {}", p.value, Ipv6Policy::NAMES),
                        hint("firewall: inbound only for flows a LAN host opened (the default); routed: no filtering"),
                    )
                })?),
                (None, true) => Some(Ipv6Policy::Firewall),
                (Some(p), false) => {
                    return Err(cx.err(
                        p.referenced,
                        format!("ipv6: the LAN `{}` has no IPv6", name.value),
                        hint("add `family: dual` (or `family: ipv6`) to the segment"),
                    ))
                }
                (None, false) => None,
            };
        }
        segments.push((
            Segment {
                name: name.value.clone(),
                subnet: subnet.map(|s| s.0),
                nat,
                family,
                engine: engine_of(cx, s.engine.as_ref())?,
                line: name.referenced.line(),
            },
            subnet.map(|s| s.1),
            name.referenced,
            fwd_refs,
        ));
    }
    // overlapping subnets
    for (i, (a, a_at, _, _)) in segments.iter().enumerate() {
        for (b, _, _, _) in segments.iter().skip(i + 1) {
            if let (Some(x), Some(y)) = (a.subnet, b.subnet) {
                if x.contains(&y.network()) || y.contains(&x.network()) {
                    return Err(cx.err(
                        a_at.unwrap_or(Location::UNKNOWN),
                        format!("subnet {x} of `{}` overlaps {y} of `{}`", a.name, b.name),
                        hint("give every segment its own range, or leave `subnet` out to have one allocated"),
                    ));
                }
            }
        }
    }
    // IPv6 through routers: the uplink is a public segment with IPv6, or a LAN whose router
    // forwards IPv6 (a carrier's), itself checked the same way up to a public segment
    for (s, _, at, _) in &segments {
        let Some(n) = s.nat.as_ref().filter(|n| n.ipv6.is_some()) else {
            continue;
        };
        let uplink = segments.iter().find(|x| x.0.name == n.uplink);
        let carries_v6 = |u: &Segment| match &u.nat {
            None => u.family.v6(),
            Some(un) => un.ipv6.is_some(),
        };
        if !uplink.is_some_and(|u| carries_v6(&u.0)) {
            return Err(cx.err(
                *at,
                format!(
                    "segment `{}` has IPv6, and its uplink `{}` carries none",
                    s.name, n.uplink
                ),
                hint(
                    "give the uplink `family: dual` (and, on a LAN, an `ipv6:` policy for its router)",
                ),
            ));
        }
    }
    // uplink cycles
    for (s, _, at, _) in &segments {
        let mut seen = vec![s.name.clone()];
        let mut cur = s.nat.as_ref().map(|n| n.uplink.clone());
        while let Some(u) = cur {
            if seen.contains(&u) {
                seen.push(u);
                return Err(cx.err(
                    *at,
                    format!("uplink cycle: {}", seen.join(" → ")),
                    hint("every chain of uplinks must end at a public segment (one without `nat`)"),
                ));
            }
            seen.push(u.clone());
            cur = segments
                .iter()
                .find(|x| x.0.name == u)
                .and_then(|x| x.0.nat.as_ref().map(|n| n.uplink.clone()));
        }
    }

    // ---- nodes
    if raw.nodes.value.is_empty() {
        return Err(cx.err(
            raw.nodes.referenced,
            "nodes: at least one node is needed",
            None,
        ));
    }
    let mut nodes: Vec<Node> = Vec::new();
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // nodes with `start: false`, and where that is written
    let mut not_started: Vec<(String, Location)> = Vec::new();
    let mut families: Vec<(String, Role, Family, Location)> = Vec::new();
    let router_names: Vec<String> = segments.iter().filter_map(|s| s.0.router_name()).collect();
    for (name, n) in &raw.nodes.value {
        if !valid_name(&name.value) {
            return Err(cx.err(
                name.referenced,
                format!("node name `{}` is not valid", name.value),
                hint("lowercase letters, digits and '-', starting with a letter"),
            ));
        }
        if router_names.contains(&name.value) || name.value.ends_with("-vpn-exit") {
            return Err(cx.err(
                name.referenced,
                format!(
                    "node name `{}` is taken by a container the lab makes",
                    name.value
                ),
                hint("routers are called router-<segment> and VPN exits <node>-vpn-exit"),
            ));
        }
        let v = &n.value;
        let role = match v.role.value.as_str() {
            "monitor" => Role::Monitor,
            "listener" => Role::Listener,
            "dialer" => Role::Dialer,
            other => {
                return Err(cx.err(
                    v.role.referenced,
                    format!("role: unknown role `{other}`"),
                    hint("one of monitor, listener, dialer"),
                ))
            }
        };
        if !segments.iter().any(|s| s.0.name == v.segment.value) {
            return Err(cx.err(
                v.segment.referenced,
                format!("segment: no segment named `{}`", v.segment.value),
                known(segments.iter().map(|s| &s.0.name)),
            ));
        }
        let on_nat = segments
            .iter()
            .any(|s| s.0.name == v.segment.value && s.0.nat.is_some());
        if role == Role::Monitor && on_nat {
            return Err(cx.err(
                v.segment.referenced,
                format!(
                    "a monitor is a public bootstrap node; `{}` is behind a NAT",
                    v.segment.value
                ),
                hint("put monitors on a public segment"),
            ));
        }
        let transport = match &v.transport {
            Some(t) => transport(cx, t)?,
            None => default_transport,
        };
        if role != Role::Dialer {
            for (key, present) in [
                ("count", v.count.is_some()),
                ("interval", v.interval.is_some()),
                ("size", v.size.is_some()),
                ("deadline", v.deadline.is_some()),
            ] {
                if present {
                    return Err(cx.err(
                        name.referenced,
                        format!(
                            "node `{}`: `{key}` is a dialer setting and this is a {}",
                            name.value,
                            role.as_str()
                        ),
                        None,
                    ));
                }
            }
        }
        if let Some(r) = &v.relay {
            if !matches!(r.value.as_str(), "auto" | "always" | "never") {
                return Err(cx.err(
                    r.referenced,
                    format!("relay: `{}` is not auto, always or never", r.value),
                    None,
                ));
            }
        }
        let replicas = match &v.replicas {
            Some(r) if r.value == 0 || r.value > 200 => {
                return Err(cx.err(
                    r.referenced,
                    format!("replicas: {} is out of range", r.value),
                    hint("1 to 200"),
                ))
            }
            Some(r) => r.value,
            None => 1,
        };
        let interval_ms = v
            .interval
            .as_ref()
            .map(|d| duration(cx, d, "interval"))
            .transpose()?
            .map(|d| d.as_millis() as u64);
        let deadline_s = v
            .deadline
            .as_ref()
            .map(|d| duration(cx, d, "deadline"))
            .transpose()?
            .map(|d| d.as_secs().max(1));
        let names: Vec<String> = if replicas == 1 {
            vec![name.value.clone()]
        } else {
            (1..=replicas)
                .map(|i| format!("{}-{i}", name.value))
                .collect()
        };
        for inst in &names {
            if raw
                .nodes
                .value
                .keys()
                .any(|k| &k.value == inst && k.value != name.value)
            {
                return Err(cx.err(
                    name.referenced,
                    format!(
                        "replica `{inst}` of `{}` clashes with the node of that name",
                        name.value
                    ),
                    None,
                ));
            }
        }
        if let Some(st) = v.start.as_ref().filter(|s| !s.value) {
            not_started.extend(names.iter().map(|n| (n.clone(), st.referenced)));
        }
        let family = segments
            .iter()
            .find(|s| s.0.name == v.segment.value)
            .map_or(Family::Ipv4, |s| s.0.family);
        if v.vpn && !family.v4() {
            return Err(cx.err(
                name.referenced,
                format!(
                    "node `{}`: a VPN needs IPv4, and `{}` is IPv6-only",
                    name.value, v.segment.value
                ),
                None,
            ));
        }
        families.push((name.value.clone(), role, family, name.referenced));
        for (i, inst) in names.iter().enumerate() {
            nodes.push(Node {
                name: inst.clone(),
                declared: name.value.clone(),
                role,
                segment: v.segment.value.clone(),
                namespace: v.namespace.clone().unwrap_or_else(|| "p2plab".into()),
                transport,
                count: v.count,
                interval_ms,
                size: v.size,
                deadline_s,
                relay: v.relay.as_ref().map(|r| r.value.clone()),
                vpn: v.vpn,
                upnp: v.upnp,
                seed: v.seed.map(|s| s + i as u64),
                args: v.args.clone(),
                start_with_lab: v.start.as_ref().is_none_or(|s| s.value),
                engine: engine_of(cx, v.engine.as_ref())?,
                line: name.referenced.line(),
            });
        }
        groups.insert(name.value.clone(), names);
    }
    if !nodes.iter().any(|n| n.role == Role::Monitor) {
        return Err(cx.err(
            raw.nodes.referenced,
            "nodes: no monitor",
            hint("peers need a bootstrap node: add one with `role: monitor` on a public segment"),
        ));
    }
    // a peer bootstraps over the families it has: a monitor must share one
    for (name, role, family, at) in families.iter().filter(|f| f.1 != Role::Monitor) {
        let shares = |m: &&(String, Role, Family, _)| {
            m.1 == Role::Monitor && ((family.v4() && m.2.v4()) || (family.v6() && m.2.v6()))
        };
        if !families.iter().any(|m| shares(&m)) {
            return Err(cx.err(
                *at,
                format!(
                    "{} `{name}` has only {} and no monitor has it",
                    role.as_str(),
                    if family.v6() { "IPv6" } else { "IPv4" }
                ),
                hint("put a monitor on a `family: dual` segment"),
            ));
        }
    }
    // port forwards name nodes on their LAN
    for (s, _, _, fwd) in &segments {
        for (f, at) in fwd {
            match nodes.iter().find(|n| n.name == f.to) {
                None => {
                    return Err(cx.err(
                        *at,
                        format!("forward: no node named `{}`", f.to),
                        known(groups.keys()),
                    ))
                }
                Some(n) if n.segment != s.name => {
                    return Err(cx.err(
                        *at,
                        format!(
                            "forward: `{}` is on `{}`, not on this router's LAN `{}`",
                            f.to, n.segment, s.name
                        ),
                        None,
                    ))
                }
                _ => {}
            }
        }
    }

    let segs: Vec<Segment> = segments.into_iter().map(|s| s.0).collect();
    let mut topo = Topology {
        name: raw.name.value.clone(),
        description: raw.description.clone(),
        timeout,
        resources,
        segments: segs,
        nodes,
        faults: Vec::new(),
        expect: Vec::new(),
        groups,
    };

    // ---- expectations
    for e in &raw.expect {
        topo.expect.extend(expectation(cx, &topo, e)?);
        if let (Some(f), None) = (&e.value.flat, topo.resources) {
            return Err(cx.err(
                f.referenced,
                "flat: the nodes report no resources",
                hint("add `resources: 10s` at the top of the file (how often each node samples them)"),
            ));
        }
    }
    // ---- faults
    for f in &raw.faults {
        let fault = fault(cx, &topo, f)?;
        for at in repeats(cx, &topo, f, &fault)? {
            topo.faults.push(Fault {
                trigger: Trigger::At(at),
                ..fault.clone()
            });
        }
        if f.value.every.is_none() {
            topo.faults.push(fault);
        }
    }
    // a node not started with the lab needs a fault that starts it
    for (n, at) in &not_started {
        if !topo
            .faults
            .iter()
            .any(|f| matches!(&f.action, Action::Start { node, .. } if node == n))
        {
            return Err(cx.err(
                *at,
                format!("node `{n}` has `start: false` and no fault starts it"),
                hint(format!(
                    "add a fault such as `{{ at: 10s, start: {n} }}`, or drop `start: false`"
                )),
            ));
        }
    }
    Ok(topo)
}

fn known<'a>(names: impl Iterator<Item = &'a String>) -> Option<String> {
    let v: Vec<&str> = names.map(|s| s.as_str()).collect();
    Some(format!("known: {}", v.join(", ")))
}

fn transport(cx: &Ctx<'_>, t: &S<String>) -> Result<Transport, TopologyError> {
    match t.value.as_str() {
        "tcp" => Ok(Transport::Tcp),
        "quic" => Ok(Transport::Quic),
        "both" => Ok(Transport::Both),
        other => Err(cx.err(
            t.referenced,
            format!("transport: `{other}` is not tcp, quic or both"),
            None,
        )),
    }
}

/// A node reference: a declared name (all its replicas) or one replica's name.
fn instances(cx: &Ctx<'_>, topo: &Topology, r: &S<String>) -> Result<Vec<String>, TopologyError> {
    if let Some(g) = topo.groups.get(&r.value) {
        return Ok(g.clone());
    }
    if topo.nodes.iter().any(|n| n.name == r.value) {
        return Ok(vec![r.value.clone()]);
    }
    Err(cx.err(
        r.referenced,
        format!("no node named `{}`", r.value),
        known(topo.groups.keys()),
    ))
}

fn pair(
    cx: &Ctx<'_>,
    topo: &Topology,
    v: &S<Vec<S<String>>>,
    key: &str,
) -> Result<Vec<(String, String)>, TopologyError> {
    if v.value.len() != 2 {
        return Err(cx.err(
            v.referenced,
            format!("{key}: needs exactly two nodes, got {}", v.value.len()),
            hint(format!("e.g. `{key}: [bob, alice]`")),
        ));
    }
    let a = instances(cx, topo, &v.value[0])?;
    let b = instances(cx, topo, &v.value[1])?;
    let mut out = Vec::new();
    for x in &a {
        for y in &b {
            if x != y {
                out.push((x.clone(), y.clone()));
            }
        }
    }
    if out.is_empty() {
        return Err(cx.err(
            v.referenced,
            format!("{key}: a node paired with itself"),
            None,
        ));
    }
    Ok(out)
}

fn path_of(cx: &Ctx<'_>, s: &S<String>) -> Result<Path, TopologyError> {
    match s.value.as_str() {
        "direct" => Ok(Path::Direct),
        "relayed" => Ok(Path::Relayed),
        other => Err(cx.err(
            s.referenced,
            format!("`{other}` is not a path"),
            hint("direct or relayed"),
        )),
    }
}

const EVENT_KINDS: &[&str] = &[
    "started",
    "listening",
    "http_listening",
    "external_addr",
    "bootstrap_retry",
    "bootstrapped",
    "reachability",
    "reservation",
    "announced",
    "discovered",
    "connected",
    "disconnected",
    "connection_error",
    "hole_punch",
    "message_sent",
    "message_received",
    "message_acked",
    "message_failed",
    "error",
    "stopped",
    "upnp",
    "resources",
];

/// The checks one `expect` (or `after`) entry stands for, and its `within`.
fn checks(
    cx: &Ctx<'_>,
    topo: &Topology,
    e: &S<RawExpect>,
    ctx_key: &str,
) -> Result<(Vec<Check>, Option<Duration>), TopologyError> {
    let v = &e.value;
    let kinds = [
        v.started.is_some(),
        v.discovered.is_some(),
        v.reservation.is_some(),
        v.relayed.is_some(),
        v.direct.is_some(),
        v.hole_punch_fails.is_some(),
        v.delivered.is_some(),
        v.path.is_some(),
        v.event.is_some(),
        v.flat.is_some(),
    ];
    let n = kinds.iter().filter(|k| **k).count();
    if n != 1 {
        return Err(cx.err(
            e.referenced,
            format!("{ctx_key}: each entry takes exactly one of started, discovered, reservation, relayed, direct, hole_punch_fails, delivered, path, event, flat (found {n})"),
            hint("split it into several entries"),
        ));
    }
    let within = v
        .within
        .as_ref()
        .map(|d| duration(cx, d, "within"))
        .transpose()?;
    let mut out = Vec::new();
    if let Some(s) = &v.started {
        for node in instances(cx, topo, s)? {
            out.push(Check::Started { node });
        }
    }
    if let Some(p) = &v.discovered {
        for (by, peer) in pair(cx, topo, p, "discovered")? {
            out.push(Check::Discovered { by, peer });
        }
    }
    if let Some(s) = &v.reservation {
        for node in instances(cx, topo, s)? {
            out.push(Check::Reservation { node });
        }
    }
    for (p, path, key) in [
        (&v.relayed, Path::Relayed, "relayed"),
        (&v.direct, Path::Direct, "direct"),
    ] {
        if let Some(p) = p {
            for (a, b) in pair(cx, topo, p, key)? {
                out.push(Check::Connected { a, b, path });
            }
        }
    }
    if let Some(p) = &v.hole_punch_fails {
        for (a, b) in pair(cx, topo, p, "hole_punch_fails")? {
            out.push(Check::HolePunchFails { a, b });
        }
    }
    if let Some(d) = &v.delivered {
        let dv = &d.value;
        let froms = instances(cx, topo, &dv.from)?;
        for f in &froms {
            if topo.node(f).is_some_and(|n| n.role != Role::Dialer) {
                return Err(cx.err(
                    dv.from.referenced,
                    format!("delivered: `{f}` is not a dialer, it sends no messages"),
                    None,
                ));
            }
        }
        for from in froms {
            for to in instances(cx, topo, &dv.to)? {
                out.push(Check::Delivered {
                    from: from.clone(),
                    to,
                    count: dv.count,
                    lost: dv.lost.unwrap_or(0),
                    duplicates: dv.duplicates.unwrap_or(0),
                });
            }
        }
    }
    if let Some(p) = &v.path {
        let pv = &p.value;
        let (which, path) = match (&pv.all, &pv.last) {
            (Some(a), None) => ("all", path_of(cx, a)?),
            (None, Some(l)) => ("last", path_of(cx, l)?),
            _ => {
                return Err(cx.err(
                    p.referenced,
                    "path: give exactly one of `all` or `last`",
                    hint("e.g. `path: { from: bob, to: alice, all: relayed }`"),
                ))
            }
        };
        for from in instances(cx, topo, &pv.from)? {
            for to in instances(cx, topo, &pv.to)? {
                out.push(match which {
                    "all" => Check::PathAll {
                        from: from.clone(),
                        to,
                        path,
                    },
                    _ => Check::PathLast {
                        from: from.clone(),
                        to,
                        path,
                    },
                });
            }
        }
    }
    if let Some(ev) = &v.event {
        let evv = &ev.value;
        if !EVENT_KINDS.contains(&evv.kind.value.as_str()) {
            return Err(cx.err(
                evv.kind.referenced,
                format!(
                    "kind: `{}` is not an event of node/EVENTS.md",
                    evv.kind.value
                ),
                Some(format!("one of {}", EVENT_KINDS.join(", "))),
            ));
        }
        let min = evv.min.unwrap_or(if evv.max.is_some() { 0 } else { 1 });
        if evv.max.is_some_and(|m| m < min) {
            return Err(cx.err(ev.referenced, "event: max is below min", None));
        }
        let targets: Vec<Option<String>> = match &evv.node {
            Some(n) => instances(cx, topo, n)?.into_iter().map(Some).collect(),
            None => vec![None],
        };
        for node in targets {
            out.push(Check::Event {
                node,
                kind: evv.kind.value.clone(),
                fields: evv.where_.clone(),
                min,
                max: evv.max,
            });
        }
    }
    if let Some(fl) = &v.flat {
        let fv = &fl.value;
        let metric = Metric::ALL
            .into_iter()
            .find(|m| m.as_str() == fv.metric.value)
            .ok_or_else(|| {
                let all: Vec<&str> = Metric::ALL.iter().map(|m| m.as_str()).collect();
                cx.err(
                    fv.metric.referenced,
                    format!(
                        "metric: `{}` is not a figure of the `resources` event",
                        fv.metric.value
                    ),
                    Some(format!("one of {}", all.join(", "))),
                )
            })?;
        let after = duration(cx, &fv.after, "after")?;
        let t = fv.growth.value.trim();
        let growth_pct = match t.strip_suffix('%').map(|n| n.trim().parse::<f64>()) {
            Some(Ok(g)) if (0.0..=1000.0).contains(&g) => g,
            _ => {
                return Err(cx.err(
                    fv.growth.referenced,
                    format!("growth: `{t}` is not a percentage"),
                    hint("write e.g. 10% (0 to 1000)"),
                ))
            }
        };
        for node in instances(cx, topo, &fv.node)? {
            out.push(Check::Flat {
                node,
                metric,
                after,
                growth_pct,
            });
        }
    }
    Ok((out, within))
}

fn expectation(
    cx: &Ctx<'_>,
    topo: &Topology,
    e: &S<RawExpect>,
) -> Result<Vec<Expectation>, TopologyError> {
    let (cs, within) = checks(cx, topo, e, "expect")?;
    let many = cs.len() > 1;
    Ok(cs
        .into_iter()
        .map(|check| {
            let name = match (&e.value.name, many) {
                (Some(n), false) => n.clone(),
                (Some(n), true) => format!("{n}: {}", check.label()),
                (None, _) => check.label(),
            };
            Expectation {
                name,
                check,
                within,
                line: e.referenced.line(),
            }
        })
        .collect())
}

/// The times a fault with `every` fires: `at`, `at + every`, … up to `until` (or the last one
/// before the timeout). Empty for a fault without `every`.
fn repeats(
    cx: &Ctx<'_>,
    topo: &Topology,
    f: &S<RawFault>,
    fault: &Fault,
) -> Result<Vec<Duration>, TopologyError> {
    let v = &f.value;
    let every = match (&v.every, &v.until) {
        (None, None) => return Ok(Vec::new()),
        (None, Some(u)) => {
            return Err(cx.err(
                u.referenced,
                "until: only with `every`",
                hint("e.g. `{ at: 1m, every: 1m, until: 50m, restart: alice }`"),
            ))
        }
        (Some(e), _) => e,
    };
    let Trigger::At(first) = fault.trigger else {
        return Err(cx.err(
            every.referenced,
            "every: only with `at` (a condition holds once)",
            None,
        ));
    };
    let period = duration(cx, every, "every")?;
    if period < Duration::from_secs(1) {
        return Err(cx.err(every.referenced, "every: at least 1s", None));
    }
    if let Some(d) = fault.duration.filter(|d| *d >= period) {
        return Err(cx.err(
            every.referenced,
            format!(
                "every: the fault lasts {}s (`for`), as long as its period or longer",
                d.as_secs_f64()
            ),
            hint("a shorter `for`, or a longer `every`"),
        ));
    }
    let until = match &v.until {
        Some(u) => {
            let d = duration(cx, u, "until")?;
            if d >= topo.timeout {
                return Err(cx.err(
                    u.referenced,
                    format!(
                        "until: at or after the timeout ({}s)",
                        topo.timeout.as_secs()
                    ),
                    None,
                ));
            }
            d
        }
        None => topo.timeout.saturating_sub(Duration::from_millis(1)),
    };
    let mut out = Vec::new();
    let mut at = first;
    while at <= until {
        out.push(at);
        if out.len() > 10_000 {
            return Err(cx.err(
                every.referenced,
                "every: more than 10,000 repeats",
                hint("a longer `every`"),
            ));
        }
        at += period;
    }
    Ok(out)
}

fn fault(cx: &Ctx<'_>, topo: &Topology, f: &S<RawFault>) -> Result<Fault, TopologyError> {
    let v = &f.value;
    let trigger = match (&v.at, &v.after) {
        (Some(at), None) => {
            if let Some(d) = &v.delay {
                return Err(cx.err(d.referenced, "delay: only with `after` (with `at`, add it to the time)", None));
            }
            Trigger::At(duration(cx, at, "at")?)
        }
        (None, Some(after)) => {
            let (cs, within) = checks(cx, topo, after, "after")?;
            if within.is_some() {
                return Err(cx.err(after.referenced, "after: `within` has no meaning here", hint("use `delay` on the fault to wait after the condition")));
            }
            if cs.len() != 1 {
                return Err(cx.err(after.referenced, format!("after: the condition names {} node combinations (replicas); name one replica", cs.len()), None));
            }
            let delay = v.delay.as_ref().map(|d| duration(cx, d, "delay")).transpose()?.unwrap_or_default();
            Trigger::After { check: cs.into_iter().next().unwrap_or(Check::Started { node: String::new() }), delay }
        }
        _ => {
            return Err(cx.err(f.referenced, "faults: each fault needs exactly one of `at` or `after`", hint("e.g. `{ at: 30s, kill: boot }` or `{ after: { direct: [bob, alice] }, kill: boot }`")))
        }
    };
    let node = |s: &S<String>| -> Result<String, TopologyError> {
        if topo.nodes.iter().any(|n| n.name == s.value) {
            Ok(s.value.clone())
        } else if topo.groups.get(&s.value).is_some_and(|g| g.len() > 1) {
            Err(cx.err(
                s.referenced,
                format!("`{}` has replicas; a fault names one of them", s.value),
                Some(format!("e.g. {}-1", s.value)),
            ))
        } else {
            Err(cx.err(
                s.referenced,
                format!("no node named `{}`", s.value),
                known(topo.groups.keys()),
            ))
        }
    };
    let nat_segment = |s: &S<String>| -> Result<String, TopologyError> {
        match topo.segment(&s.value) {
            Some(seg) if seg.nat.is_some() => Ok(s.value.clone()),
            Some(_) => Err(cx.err(
                s.referenced,
                format!(
                    "`{}` is a public segment; this acts on a LAN's router",
                    s.value
                ),
                None,
            )),
            None => Err(cx.err(
                s.referenced,
                format!("no segment named `{}`", s.value),
                known(topo.segments.iter().map(|s| &s.name)),
            )),
        }
    };
    let mut actions = Vec::new();
    if let Some(s) = &v.kill {
        actions.push(Action::Kill(node(s)?));
    }
    if let Some(s) = &v.stop {
        actions.push(Action::Stop(node(s)?));
    }
    let new_identity = v.new_identity.as_ref().is_some_and(|b| b.value);
    if let Some(s) = &v.start {
        actions.push(Action::Start {
            node: node(s)?,
            new_identity,
        });
    }
    if let Some(s) = &v.restart {
        actions.push(Action::Restart {
            node: node(s)?,
            new_identity,
        });
    }
    if let Some(s) = &v.pause {
        actions.push(Action::Pause(node(s)?));
    }
    if let Some(s) = &v.unpause {
        actions.push(Action::Unpause(node(s)?));
    }
    if let Some(p) = &v.partition {
        match &p.value {
            RawPartition::One(t) => {
                let s = S {
                    value: t.clone(),
                    referenced: p.referenced,
                    defined: p.defined,
                };
                if topo.segment(t).is_some() {
                    actions.push(Action::Partition(Target::Segment(nat_segment(&s)?)));
                } else {
                    actions.push(Action::Partition(Target::Node(node(&s)?)));
                }
            }
            RawPartition::Groups(gs) => {
                if gs.len() < 2 {
                    return Err(cx.err(
                        p.referenced,
                        "partition: give at least two groups",
                        hint("e.g. `partition: [[a, b], [c]]`"),
                    ));
                }
                let mut out = Vec::new();
                for g in gs {
                    let mut names = Vec::new();
                    for n in g {
                        let s = S {
                            value: n.clone(),
                            referenced: p.referenced,
                            defined: p.defined,
                        };
                        names.extend(instances(cx, topo, &s)?);
                    }
                    out.push(names);
                }
                actions.push(Action::PartitionGroups(out));
            }
        }
    }
    if let Some(h) = &v.heal {
        if h.value == "all" {
            actions.push(Action::Heal(HealScope::All));
        } else if topo.segment(&h.value).is_some() {
            actions.push(Action::Heal(HealScope::One(Target::Segment(nat_segment(
                h,
            )?))));
        } else {
            actions.push(Action::Heal(HealScope::One(Target::Node(node(h)?))));
        }
    }
    if let Some(s) = &v.flush_nat {
        actions.push(Action::FlushNat(nat_segment(s)?));
    }
    if let Some(i) = &v.impair {
        let iv = &i.value;
        let segment = nat_segment(&iv.segment)?;
        actions.push(Action::Impair {
            segment,
            impair: impair_of(cx, &iv.delay, &iv.jitter, &iv.loss, &iv.rate)?,
        });
    }
    if let Some(x) = &v.exec {
        let xv = &x.value;
        if xv.cmd.value.is_empty() || xv.cmd.value[0].trim().is_empty() {
            return Err(cx.err(
                xv.cmd.referenced,
                "exec: `cmd` names no program",
                hint("e.g. `cmd: [bench, flood, --help]`"),
            ));
        }
        for a in &xv.cmd.value {
            let mut rest = a.as_str();
            while let Some(i) = rest.find("{addr:") {
                let tail = &rest[i + 6..];
                let Some(j) = tail.find('}') else { break };
                let name = &tail[..j];
                if !topo.nodes.iter().any(|n| n.name == name) {
                    return Err(cx.err(
                        xv.cmd.referenced,
                        format!("exec: `{{addr:{name}}}` names no node"),
                        known(topo.groups.keys()),
                    ));
                }
                rest = &tail[j..];
            }
        }
        actions.push(Action::Exec {
            node: node(&xv.node)?,
            cmd: xv.cmd.value.clone(),
        });
    }
    if actions.len() != 1 {
        return Err(cx.err(
            f.referenced,
            format!("faults: each fault does exactly one thing (found {})", actions.len()),
            hint("one of kill, stop, start, restart, pause, unpause, partition, heal, flush_nat, impair, exec"),
        ));
    }
    let action = actions.remove(0);
    if let Some(ni) = &v.new_identity {
        new_identity_of(cx, topo, ni, &action)?;
    }
    let duration_ = v
        .for_
        .as_ref()
        .map(|d| duration(cx, d, "for"))
        .transpose()?;
    if let (Some(d), None) = (&v.for_, action.undo()) {
        return Err(cx.err(
            d.referenced,
            format!("for: `{}` cannot be undone after a while", action.label()),
            hint("`for` works with kill, stop, pause, partition and impair"),
        ));
    }
    Ok(Fault {
        trigger,
        action,
        duration: duration_,
        line: f.referenced.line(),
    })
}

/// Checks `new_identity` on a fault: only `start` and `restart` bring a node back, and only a
/// node with a key file (a monitor without a `seed`) has an identity to renew.
fn new_identity_of(
    cx: &Ctx<'_>,
    topo: &Topology,
    ni: &S<bool>,
    action: &Action,
) -> Result<(), TopologyError> {
    let target = match action {
        Action::Start { node, .. } | Action::Restart { node, .. } => node,
        other => {
            return Err(cx.err(
                ni.referenced,
                format!(
                "new_identity: only `start` and `restart` bring a node back (this fault is `{}`)",
                other.label()
            ),
                hint("e.g. `{ at: 30s, restart: boot, new_identity: true }`"),
            ))
        }
    };
    if !ni.value {
        return Ok(());
    }
    let Some(n) = topo.node(target) else {
        return Ok(());
    };
    if n.seed.is_some() {
        return Err(cx.err(
            ni.referenced,
            format!("new_identity: `{target}` has a `seed`, which fixes its identity"),
            hint("drop `seed` from the node, or `new_identity` from the fault"),
        ));
    }
    if n.role != Role::Monitor {
        return Err(cx.err(
            ni.referenced,
            format!("new_identity: `{target}` is a {}: it has no key file and comes back with a new identity on every start already", n.role.as_str()),
            hint("only monitors keep their identity (a key file); a `seed` gives a peer a fixed one"),
        ));
    }
    if n.key_file().is_none() {
        return Err(cx.err(
            ni.referenced,
            format!("new_identity: `{target}` sets its identity itself in `args` (--seed or --key-file)"),
            hint("drop that flag from `args` to let the harness keep its key file"),
        ));
    }
    Ok(())
}

/// `engine:` of a node or a segment's router: numbered from 1, in the order of `--engines`.
fn engine_of(cx: &Ctx<'_>, e: Option<&S<u32>>) -> Result<Option<u32>, TopologyError> {
    match e {
        Some(e) if e.value == 0 => Err(cx.err(
            e.referenced,
            "engine: 0: engines are numbered from 1, in the order `--engines` gives them",
            None,
        )),
        Some(e) => Ok(Some(e.value)),
        None => Ok(None),
    }
}
