//! Pictures of a topology: Mermaid and Graphviz DOT text, and a self-contained SVG for the HTML
//! report. No Docker here.
//!
//! Segments are clusters (subgraphs) labelled with their subnet when it is known (from the
//! layout, else from the file); routers are nodes labelled with their NAT profile and
//! impairments, with an edge to their uplink segment (labelled with their WAN address when a
//! layout is given) and one from their LAN; nodes have a shape per role; a VPN node has a dashed
//! edge to its exit, which sits on the public segment its LAN finally reaches. Output follows
//! file order, so the same topology always gives the same text.

use std::{collections::BTreeMap, fmt::Write as _};

use crate::{
    model::{Impair, Node, Role, Segment, Topology},
    plan::layout::Layout,
};

// ----------------------------------------------------------------------------- shared facts ---

fn exit_name(node: &str) -> String {
    format!("{node}-vpn-exit")
}

/// The subnet to show for a segment: the layout's, else the file's.
fn subnet_of(layout: Option<&Layout>, seg: &Segment) -> Option<String> {
    layout
        .and_then(|l| l.subnets.get(&seg.name).copied())
        .or(seg.subnet)
        .map(|n| n.to_string())
}

fn ip_of(layout: Option<&Layout>, name: &str) -> Option<String> {
    layout.and_then(|l| l.get(name)).map(|c| c.ip().to_string())
}

/// `delay 20 ms ± 5 ms, loss 1%, rate 10mbit`, or nothing.
pub fn impair_text(i: &Impair) -> Option<String> {
    if i.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    match (i.delay_ms, i.jitter_ms) {
        (Some(d), Some(j)) => parts.push(format!("delay {d} ms ± {j} ms")),
        (Some(d), None) => parts.push(format!("delay {d} ms")),
        (None, Some(j)) => parts.push(format!("jitter {j} ms")),
        (None, None) => {}
    }
    if let Some(l) = i.loss_pct {
        parts.push(format!("loss {l}%"));
    }
    if let Some(r) = &i.rate {
        parts.push(format!("rate {r}"));
    }
    Some(parts.join(", "))
}

/// The lines of a node's label: name, role (and `vpn`), address.
fn node_lines(n: &Node, layout: Option<&Layout>) -> Vec<String> {
    let mut role = n.role.as_str().to_string();
    if n.vpn {
        role.push_str(" · vpn");
    }
    let mut out = vec![n.name.clone(), role];
    if let Some(ip) = ip_of(layout, &n.name) {
        out.push(ip);
    }
    out
}

fn router_lines(seg: &Segment) -> Vec<String> {
    let Some(nat) = &seg.nat else {
        return Vec::new();
    };
    let mut out = vec![
        seg.router_name().unwrap_or_default(),
        format!("NAT {}", nat.profile.as_str()),
    ];
    if let Some(t) = nat.mapping_timeout_s {
        out.push(format!("mapping timeout {t} s"));
    }
    if nat.hairpin {
        out.push("hairpin".into());
    }
    if !nat.tcp_ports.is_empty() {
        let p: Vec<String> = nat.tcp_ports.iter().map(u16::to_string).collect();
        out.push(format!("TCP out to {} only", p.join(", ")));
    }
    if !nat.forward.is_empty() {
        let f: Vec<String> = nat
            .forward
            .iter()
            .map(|f| format!("{}/{}→{}:{}", f.port, f.proto, f.to, f.to_port))
            .collect();
        out.push(format!("forward {}", f.join(" ")));
    }
    if let Some(i) = impair_text(&nat.impair) {
        out.push(i);
    }
    out
}

fn exit_lines(node: &str, layout: Option<&Layout>) -> Vec<String> {
    let name = exit_name(node);
    let mut out = vec![name.clone(), "vpn exit".to_string()];
    if let Some(ip) = ip_of(layout, &name) {
        out.push(ip);
    }
    out
}

fn segment_title(layout: Option<&Layout>, seg: &Segment) -> Vec<String> {
    let mut out = vec![seg.name.clone()];
    if let Some(s) = subnet_of(layout, seg) {
        out.push(s);
    }
    out
}

/// VPN nodes whose exit sits on `segment`.
fn exits_on<'a>(topo: &'a Topology, segment: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
    topo.nodes.iter().filter(move |n| {
        n.vpn
            && topo
                .public_of(&n.segment)
                .is_some_and(|p| p.name == segment)
    })
}

// ---------------------------------------------------------------------------------- mermaid ---

const MERMAID_KEYWORDS: &[&str] = &[
    "end",
    "subgraph",
    "graph",
    "flowchart",
    "style",
    "class",
    "classdef",
    "click",
    "linkstyle",
    "direction",
    "call",
    "href",
    "default",
];

/// A segment's id: its name with `-` as `_` (names never hold `_`, so ids with `__` never
/// collide with it), a keyword suffixed with `_`.
fn mermaid_seg_id(name: &str) -> String {
    let id = name.replace('-', "_");
    if MERMAID_KEYWORDS.contains(&id.to_ascii_lowercase().as_str()) {
        format!("{id}_")
    } else {
        id
    }
}

fn mermaid_id(prefix: &str, name: &str) -> String {
    format!("{prefix}__{}", name.replace('-', "_"))
}

/// Text for a quoted Mermaid label: entity codes for what Mermaid or HTML would read.
fn mermaid_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '#' => out.push_str("#35;"),
            '"' => out.push_str("#quot;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '&' => out.push_str("#amp;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn mermaid_label(lines: &[String]) -> String {
    let l: Vec<String> = lines.iter().map(|s| mermaid_escape(s)).collect();
    format!("\"{}\"", l.join("<br/>"))
}

fn mermaid_node(n: &Node, layout: Option<&Layout>) -> String {
    let id = mermaid_id("node", &n.name);
    let label = mermaid_label(&node_lines(n, layout));
    match n.role {
        Role::Monitor => format!("{id}([{label}])"),
        Role::Listener => format!("{id}[{label}]"),
        Role::Dialer => format!("{id}[/{label}/]"),
    }
}

/// The topology as a Mermaid flowchart (uplinks on top).
pub fn mermaid(topo: &Topology, layout: Option<&Layout>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "flowchart BT");
    let _ = writeln!(out, "  %% {}", mermaid_escape(&topo.name));
    for seg in &topo.segments {
        let id = mermaid_seg_id(&seg.name);
        let _ = writeln!(
            out,
            "  subgraph {id}[{}]",
            mermaid_label(&segment_title(layout, seg))
        );
        for n in topo.nodes.iter().filter(|n| n.segment == seg.name) {
            let _ = writeln!(out, "    {}", mermaid_node(n, layout));
        }
        for n in exits_on(topo, &seg.name) {
            let _ = writeln!(
                out,
                "    {}>{}]",
                mermaid_id("exit", &n.name),
                mermaid_label(&exit_lines(&n.name, layout))
            );
        }
        let _ = writeln!(out, "  end");
    }
    for seg in &topo.segments {
        let Some(nat) = &seg.nat else { continue };
        let rid = mermaid_id("router", &seg.name);
        let _ = writeln!(out, "  {rid}{{{{{}}}}}", mermaid_label(&router_lines(seg)));
        let wan = seg.router_name().and_then(|r| ip_of(layout, &r));
        match wan {
            Some(ip) => {
                let _ = writeln!(
                    out,
                    "  {rid} -->|{}| {}",
                    mermaid_label(&[format!("wan {ip}")]),
                    mermaid_seg_id(&nat.uplink)
                );
            }
            None => {
                let _ = writeln!(out, "  {rid} --> {}", mermaid_seg_id(&nat.uplink));
            }
        }
        let _ = writeln!(out, "  {} --- {rid}", mermaid_seg_id(&seg.name));
    }
    for n in topo.nodes.iter().filter(|n| n.vpn) {
        let _ = writeln!(
            out,
            "  {} -.->|vpn| {}",
            mermaid_id("node", &n.name),
            mermaid_id("exit", &n.name)
        );
    }
    out
}

// -------------------------------------------------------------------------------------- dot ---

/// A DOT quoted string (with the quotes).
fn dot_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn dot_label(lines: &[String]) -> String {
    dot_quote(&lines.join("\n"))
}

/// The topology as a Graphviz digraph (uplinks on top; `dot -Tsvg` renders it).
pub fn dot(topo: &Topology, layout: Option<&Layout>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", dot_quote(&topo.name));
    let _ = writeln!(
        out,
        "  graph [rankdir=BT, compound=true, fontname=\"Helvetica\", fontsize=11, labelloc=t, label={}];",
        dot_quote(&topo.name)
    );
    let _ = writeln!(
        out,
        "  node [fontname=\"Helvetica\", fontsize=10, style=filled, fillcolor=white];"
    );
    let _ = writeln!(out, "  edge [fontname=\"Helvetica\", fontsize=9];");
    for seg in &topo.segments {
        let fill = if seg.nat.is_none() {
            "#eef5ff"
        } else {
            "#f3f9ec"
        };
        let _ = writeln!(
            out,
            "  subgraph {} {{",
            dot_quote(&format!("cluster_{}", seg.name))
        );
        // with rankdir=BT, `b` puts a cluster's label on top
        let _ = writeln!(
            out,
            "    label={}; labelloc=b; style=\"rounded,filled\"; fillcolor=\"{fill}\";",
            dot_label(&segment_title(layout, seg))
        );
        let _ = writeln!(
            out,
            "    {} [shape=point, width=0.05, style=invis, label=\"\"];",
            dot_quote(&format!("seg:{}", seg.name))
        );
        for n in topo.nodes.iter().filter(|n| n.segment == seg.name) {
            let (shape, style, fill) = match n.role {
                Role::Monitor => ("box3d", "filled", "#ffe9c7"),
                Role::Listener => ("box", "filled", "#d9ecff"),
                Role::Dialer => ("box", "rounded,filled", "#e3f7dc"),
            };
            let _ = writeln!(
                out,
                "    {} [shape={shape}, style=\"{style}\", fillcolor=\"{fill}\", label={}];",
                dot_quote(&format!("node:{}", n.name)),
                dot_label(&node_lines(n, layout))
            );
        }
        for n in exits_on(topo, &seg.name) {
            let _ = writeln!(
                out,
                "    {} [shape=invhouse, style=\"dashed,filled\", fillcolor=\"#eeeeee\", label={}];",
                dot_quote(&format!("exit:{}", n.name)),
                dot_label(&exit_lines(&n.name, layout))
            );
        }
        let _ = writeln!(out, "  }}");
    }
    for seg in &topo.segments {
        let Some(nat) = &seg.nat else { continue };
        let rid = dot_quote(&format!("router:{}", seg.name));
        let _ = writeln!(
            out,
            "  {rid} [shape=hexagon, fillcolor=\"#f7d9d9\", label={}];",
            dot_label(&router_lines(seg))
        );
        let wan = seg
            .router_name()
            .and_then(|r| ip_of(layout, &r))
            .map(|ip| format!(", label={}", dot_quote(&format!("wan {ip}"))))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {rid} -> {} [lhead={}{wan}];",
            dot_quote(&format!("seg:{}", nat.uplink)),
            dot_quote(&format!("cluster_{}", nat.uplink))
        );
        let _ = writeln!(
            out,
            "  {} -> {rid} [ltail={}, dir=none];",
            dot_quote(&format!("seg:{}", seg.name)),
            dot_quote(&format!("cluster_{}", seg.name))
        );
    }
    for n in topo.nodes.iter().filter(|n| n.vpn) {
        let _ = writeln!(
            out,
            "  {} -> {} [style=dashed, label=\"vpn\", constraint=false];",
            dot_quote(&format!("node:{}", n.name)),
            dot_quote(&format!("exit:{}", n.name))
        );
    }
    out.push_str("}\n");
    out
}

// -------------------------------------------------------------------------------------- svg ---

/// Text for HTML and SVG: `& < > " '` as entities.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CHAR_W: f64 = 6.4;
const NODE_H: f64 = 46.0;
const GAP: f64 = 14.0;
const PAD: f64 = 12.0;
const TITLE_H: f64 = 30.0;
const ROW_GAP: f64 = 44.0;
/// At most this many node boxes side by side in a segment.
const PER_ROW: usize = 5;
const MARGIN: f64 = 16.0;
/// The widest a picture gets (segments wrap onto more lines beyond it).
const MAX_W: f64 = 1400.0;

/// Node boxes per row for `n` nodes: side by side up to 3, then about square.
fn columns(n: usize) -> usize {
    if n <= 3 {
        n.max(1)
    } else {
        ((n as f64).sqrt().ceil() as usize).clamp(1, PER_ROW)
    }
}

fn text_w(lines: &[String]) -> f64 {
    lines.iter().map(|l| l.chars().count()).max().unwrap_or(0) as f64 * CHAR_W + 16.0
}

#[derive(Debug, Clone)]
struct Item {
    /// `node:<name>` or `exit:<name>`.
    key: String,
    lines: Vec<String>,
    fill: &'static str,
    dashed: bool,
}

#[derive(Debug, Clone)]
struct SegBox {
    name: String,
    /// Node boxes per row.
    cols: usize,
    title: String,
    public: bool,
    items: Vec<Item>,
    w: f64,
    h: f64,
    x: f64,
    y: f64,
    router: Option<(Vec<String>, f64)>,
}

/// The topology as an inline SVG (no `xmlns`, for embedding in HTML): public segments on top,
/// each router under its uplink, its LAN under it, nodes as boxes inside their segment.
pub fn svg(topo: &Topology, layout: Option<&Layout>) -> String {
    let node_w = topo
        .nodes
        .iter()
        .map(|n| text_w(&node_lines(n, layout)))
        .chain(
            topo.nodes
                .iter()
                .filter(|n| n.vpn)
                .map(|n| text_w(&exit_lines(&n.name, layout))),
        )
        .fold(110.0_f64, f64::max)
        .min(300.0);

    // boxes, by depth (the number of routers between a segment and the public internet)
    let mut boxes: Vec<SegBox> = Vec::new();
    let mut depth_of: BTreeMap<String, usize> = BTreeMap::new();
    for seg in &topo.segments {
        let mut items: Vec<Item> = topo
            .nodes
            .iter()
            .filter(|n| n.segment == seg.name)
            .map(|n| Item {
                key: format!("node:{}", n.name),
                lines: node_lines(n, layout),
                fill: match n.role {
                    Role::Monitor => "#ffe9c7",
                    Role::Listener => "#d9ecff",
                    Role::Dialer => "#e3f7dc",
                },
                dashed: false,
            })
            .collect();
        items.extend(exits_on(topo, &seg.name).map(|n| Item {
            key: format!("exit:{}", n.name),
            lines: exit_lines(&n.name, layout),
            fill: "#eeeeee",
            dashed: true,
        }));
        let title = segment_title(layout, seg).join("  ");
        let router = seg.nat.as_ref().map(|_| {
            let lines = router_lines(seg);
            let w = text_w(&lines).max(120.0);
            (lines, w)
        });
        let cols_n = columns(items.len());
        let cols = cols_n as f64;
        let rows = items.len().div_ceil(cols_n) as f64;
        let w = (2.0 * PAD + cols * node_w + (cols - 1.0) * GAP)
            .max(title.chars().count() as f64 * CHAR_W + 2.0 * PAD)
            .max(router.as_ref().map_or(0.0, |r| r.1 + 2.0 * GAP))
            .max(160.0);
        let h = TITLE_H + rows * (NODE_H + GAP) + if rows > 0.0 { PAD - GAP + 4.0 } else { 8.0 };
        depth_of.insert(seg.name.clone(), topo.nat_chain(&seg.name).len());
        boxes.push(SegBox {
            name: seg.name.clone(),
            cols: cols_n,
            title,
            public: seg.nat.is_none(),
            items,
            w,
            h,
            x: 0.0,
            y: 0.0,
            router,
        });
    }
    let max_depth = depth_of.values().copied().max().unwrap_or(0);

    // rows: depth 0 in file order; deeper ones ordered under their uplink
    let mut rows: Vec<Vec<usize>> = Vec::new();
    let mut order: BTreeMap<String, usize> = BTreeMap::new();
    for d in 0..=max_depth {
        let mut row: Vec<usize> = (0..boxes.len())
            .filter(|i| depth_of.get(&boxes[*i].name) == Some(&d))
            .collect();
        if d > 0 {
            let up = |i: &usize| -> usize {
                topo.segment(&boxes[*i].name)
                    .and_then(|s| s.nat.as_ref())
                    .and_then(|n| order.get(&n.uplink).copied())
                    .unwrap_or(usize::MAX)
            };
            row.sort_by_key(up);
        }
        for (pos, i) in row.iter().enumerate() {
            order.insert(boxes[*i].name.clone(), pos);
        }
        rows.push(row);
    }
    let router_h = |b: &SegBox| {
        b.router
            .as_ref()
            .map_or(0.0, |r| r.0.len() as f64 * 13.0 + 14.0)
    };
    let row_w = |boxes: &[SegBox], row: &[usize]| {
        row.iter().map(|i| boxes[*i].w).sum::<f64>()
            + GAP * 2.0 * (row.len().saturating_sub(1)) as f64
    };
    // A depth with more segments than fit in MAX_W wraps onto more lines of even length (the NAT
    // matrix's 18 LANs: three lines of six), so the picture stays readable on a screen.
    let limit = MAX_W - 2.0 * MARGIN;
    let mut lines: Vec<(usize, Vec<usize>)> = Vec::new();
    for (d, row) in rows.iter().enumerate() {
        let mut per = row.len().max(1);
        for n in 1..=row.len().max(1) {
            per = row.len().div_ceil(n).max(1);
            if row
                .chunks(per)
                .all(|c| c.len() == 1 || row_w(&boxes, c) <= limit)
            {
                break;
            }
        }
        lines.extend(row.chunks(per).map(|c| (d, c.to_vec())));
    }
    let width = lines
        .iter()
        .map(|(_, l)| row_w(&boxes, l))
        .fold(300.0_f64, f64::max)
        + 2.0 * MARGIN;
    let mut y = MARGIN + 18.0;
    for (k, (d, line)) in lines.iter().enumerate() {
        if k > 0 {
            // room for the routers drawn above a line of LANs
            let rh = line
                .iter()
                .map(|i| router_h(&boxes[*i]))
                .fold(0.0_f64, f64::max);
            y += if *d > 0 {
                ROW_GAP + rh + ROW_GAP * 0.6
            } else {
                ROW_GAP * 0.6
            };
        }
        let mut x = (width - row_w(&boxes, line)) / 2.0;
        let mut h = 0.0_f64;
        for i in line {
            boxes[*i].x = x;
            boxes[*i].y = y;
            x += boxes[*i].w + 2.0 * GAP;
            h = h.max(boxes[*i].h);
        }
        y += h;
    }
    let height = y + MARGIN;

    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="topo" viewBox="0 0 {width:.0} {height:.0}" width="{width:.0}" height="{height:.0}" role="img" aria-label="{}" font-family="sans-serif" font-size="11">"#,
        html_escape(&format!("topology {}", topo.name))
    );
    let _ = write!(s, "<title>{}</title>", html_escape(&topo.name));
    let _ = write!(
        s,
        r#"<text x="{MARGIN}" y="{}" font-size="13" font-weight="bold">{}</text>"#,
        MARGIN + 4.0,
        html_escape(&topo.name)
    );
    // node boxes by key: (x, y) of their top-left corner
    let mut corners: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let mut lines_svg = String::new();
    // the uplinks under the boxes: a line that crosses a segment passes behind it
    let mut under_svg = String::new();
    let mut boxes_svg = String::new();
    let find = |name: &str| boxes.iter().find(|b| b.name == name);
    for b in &boxes {
        let fill = if b.public { "#eef5ff" } else { "#f3f9ec" };
        let _ = write!(
            boxes_svg,
            r##"<g class="seg"><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="10" fill="{fill}" stroke="#7a8ca8"/><text x="{:.1}" y="{:.1}" font-weight="bold">{}</text>"##,
            b.x,
            b.y,
            b.w,
            b.h,
            b.x + PAD,
            b.y + 19.0,
            html_escape(&b.title)
        );
        for (k, it) in b.items.iter().enumerate() {
            let col = (k % b.cols) as f64;
            let row = (k / b.cols) as f64;
            let nx = b.x + PAD + col * (node_w + GAP);
            let ny = b.y + TITLE_H + row * (NODE_H + GAP);
            corners.insert(it.key.clone(), (nx, ny));
            let dash = if it.dashed {
                r#" stroke-dasharray="4 3""#
            } else {
                ""
            };
            let _ = write!(
                boxes_svg,
                r##"<rect x="{nx:.1}" y="{ny:.1}" width="{node_w:.1}" height="{NODE_H:.1}" rx="4" fill="{}" stroke="#555"{dash}/>"##,
                it.fill
            );
            for (li, line) in it.lines.iter().enumerate() {
                let weight = if li == 0 {
                    r#" font-weight="bold""#
                } else {
                    ""
                };
                let _ = write!(
                    boxes_svg,
                    r#"<text x="{:.1}" y="{:.1}"{weight}>{}</text>"#,
                    nx + 7.0,
                    ny + 14.0 + li as f64 * 13.0,
                    html_escape(line)
                );
            }
        }
        boxes_svg.push_str("</g>");
        // the router above its LAN, linked up to its uplink
        if let (Some((rl, rw)), Some(nat)) = (
            &b.router,
            topo.segment(&b.name).and_then(|s| s.nat.as_ref()),
        ) {
            let rh = rl.len() as f64 * 13.0 + 14.0;
            let cx = b.x + b.w / 2.0;
            let ry = b.y - ROW_GAP * 0.6 - rh;
            let rx = cx - rw / 2.0;
            if let Some(up) = find(&nat.uplink) {
                let ux = cx.clamp(up.x + 12.0, up.x + up.w - 12.0);
                let _ = write!(
                    under_svg,
                    r##"<path d="M{cx:.1},{ry:.1} C{cx:.1},{:.1} {ux:.1},{:.1} {ux:.1},{:.1}" fill="none" stroke="#a33" stroke-width="1.5"/>"##,
                    ry - 20.0,
                    up.y + up.h + 20.0,
                    up.y + up.h
                );
            }
            let _ = write!(
                under_svg,
                r##"<line x1="{cx:.1}" y1="{:.1}" x2="{cx:.1}" y2="{:.1}" stroke="#a33" stroke-width="1.5"/>"##,
                ry + rh,
                b.y
            );
            let k = 8.0;
            let _ = write!(
                boxes_svg,
                r##"<g class="router"><polygon points="{:.1},{ry:.1} {:.1},{ry:.1} {:.1},{:.1} {:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="#f7d9d9" stroke="#a33"/>"##,
                rx + k,
                rx + rw - k,
                rx + rw,
                ry + rh / 2.0,
                rx + rw - k,
                ry + rh,
                rx + k,
                ry + rh,
                rx,
                ry + rh / 2.0
            );
            for (li, line) in rl.iter().enumerate() {
                let weight = if li == 0 {
                    r#" font-weight="bold""#
                } else {
                    ""
                };
                let _ = write!(
                    boxes_svg,
                    r#"<text x="{cx:.1}" y="{:.1}" text-anchor="middle"{weight}>{}</text>"#,
                    ry + 16.0 + li as f64 * 13.0,
                    html_escape(line)
                );
            }
            boxes_svg.push_str("</g>");
        }
    }
    for n in topo.nodes.iter().filter(|n| n.vpn) {
        if let (Some(a), Some(b)) = (
            corners.get(&format!("node:{}", n.name)),
            corners.get(&format!("exit:{}", n.name)),
        ) {
            // from the node box's top (or bottom) edge to the exit box's facing edge
            let (ax, bx) = (a.0 + node_w * 0.75, b.0 + node_w * 0.75);
            let (ay, by) = if a.1 > b.1 {
                (a.1, b.1 + NODE_H)
            } else {
                (a.1 + NODE_H, b.1)
            };
            let bend = (ay - by) / 2.0;
            let _ = write!(
                lines_svg,
                r##"<path class="vpn" d="M{ax:.1},{ay:.1} C{ax:.1},{:.1} {bx:.1},{:.1} {bx:.1},{by:.1}" fill="none" stroke="#666" stroke-width="1.5" stroke-dasharray="6 4"/>"##,
                ay - bend,
                by + bend
            );
        }
    }
    s.push_str(&under_svg);
    s.push_str(&boxes_svg);
    // the VPN tunnels over the boxes, so they stay visible
    s.push_str(&lines_svg);
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::{model::parse, plan::layout::layout};

    const T: &str = r#"
name: g
segments:
  internet: {}
  carrier: { nat: home }
  lan-a: { nat: home, uplink: carrier, impair: { delay: 20ms, loss: 1% } }
  lan-b: { nat: strict }
  end: { nat: open }
nodes:
  boot: { role: monitor, segment: internet }
  alice: { role: listener, segment: lan-a }
  bob: { role: dialer, segment: lan-b, count: 5 }
  d: { role: dialer, segment: lan-b, count: 5, vpn: true }
"#;

    fn topo() -> Topology {
        parse("t.yaml", T).unwrap()
    }

    fn lay(t: &Topology) -> Layout {
        let subnets = [
            ("internet", "198.18.0.0/24"),
            ("carrier", "100.64.0.0/24"),
            ("lan-a", "10.1.0.0/24"),
            ("lan-b", "10.2.0.0/24"),
            ("end", "10.3.0.0/24"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect();
        layout(t, &subnets).unwrap()
    }

    #[test]
    fn mermaid_has_subgraphs_routers_and_edges() {
        let t = topo();
        let l = lay(&t);
        let m = mermaid(&t, Some(&l));
        assert!(m.starts_with("flowchart BT\n"), "{m}");
        assert!(
            m.contains("subgraph internet[\"internet<br/>198.18.0.0/24\"]"),
            "{m}"
        );
        assert!(m.contains("subgraph lan_a["), "{m}");
        assert!(m.contains("subgraph end_["), "a keyword is not an id: {m}");
        assert!(
            m.contains("router__lan_a{{\"router-lan-a<br/>NAT home<br/>delay 20 ms, loss 1%\"}}"),
            "{m}"
        );
        let wan = l.get("router-lan-a").unwrap().ip();
        assert!(
            m.contains(&format!("router__lan_a -->|\"wan {wan}\"| carrier")),
            "{m}"
        );
        assert!(m.contains("lan_a --- router__lan_a"), "{m}");
        assert!(m.contains("node__boot([\"boot<br/>monitor<br/>"), "{m}");
        assert!(m.contains("node__bob[/\"bob<br/>dialer"), "{m}");
        assert!(m.contains("node__d -.->|vpn| exit__d"), "{m}");
        // the exit is drawn on the public segment
        let internet = &m[m.find("subgraph internet").unwrap()..];
        let internet = &internet[..internet.find("\n  end").unwrap()];
        assert!(internet.contains("exit__d>"), "{internet}");
        assert_eq!(m.matches("subgraph ").count(), 5);
        assert_eq!(m.matches("\n  end\n").count(), 5);
    }

    #[test]
    fn output_is_deterministic_and_works_without_a_layout() {
        let t = topo();
        assert_eq!(mermaid(&t, None), mermaid(&t, None));
        assert_eq!(dot(&t, None), dot(&t, None));
        let m = mermaid(&t, None);
        assert!(m.contains("subgraph internet[\"internet\"]"), "{m}");
        assert!(m.contains("router__lan_a --> carrier"), "{m}");
        // file order
        assert!(m.find("subgraph lan_a").unwrap() < m.find("subgraph lan_b").unwrap());
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(mermaid_escape(r#"a"b<c>&#"#), "a#quot;b#lt;c#gt;#amp;#35;");
        assert_eq!(dot_quote("a\"b\\c\nd"), r#""a\"b\\c\nd""#);
        assert_eq!(
            html_escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let mut t = topo();
        t.name = "we \"quote\" <and> \\slash".into();
        let d = dot(&t, None);
        assert!(
            d.starts_with(r#"digraph "we \"quote\" <and> \\slash" {"#),
            "{d}"
        );
        let s = svg(&t, None);
        assert!(s.contains("we &quot;quote&quot; &lt;and&gt;"), "{s}");
        assert!(!s.contains("<and>"));
    }

    #[test]
    fn dot_has_clusters_and_edges() {
        let t = topo();
        let l = lay(&t);
        let d = dot(&t, Some(&l));
        assert!(d.contains("subgraph \"cluster_lan-a\" {"), "{d}");
        assert!(d.contains("label=\"internet\\n198.18.0.0/24\""), "{d}");
        assert!(
            d.contains(
                "\"router:lan-a\" -> \"seg:carrier\" [lhead=\"cluster_carrier\", label=\"wan "
            ),
            "{d}"
        );
        assert!(
            d.contains("\"seg:lan-a\" -> \"router:lan-a\" [ltail=\"cluster_lan-a\", dir=none];"),
            "{d}"
        );
        assert!(d.contains("\"node:d\" -> \"exit:d\" [style=dashed"), "{d}");
        assert!(
            d.contains("\"node:alice\" [shape=box, style=\"filled\","),
            "{d}"
        );
        assert!(
            d.contains("\"node:bob\" [shape=box, style=\"rounded,filled\","),
            "{d}"
        );
        assert!(d.trim_end().ends_with('}'));
        assert_eq!(d.matches('{').count(), d.matches('}').count());
    }

    #[test]
    fn dot_renders_with_graphviz_when_installed() {
        use std::io::Write;
        let t = topo();
        let l = lay(&t);
        let d = dot(&t, Some(&l));
        let child = std::process::Command::new("dot")
            .arg("-Tsvg")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            eprintln!("graphviz `dot` not installed: skipping the render check");
            return;
        };
        child.stdin.take().unwrap().write_all(d.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "dot refused:\n{}\n{d}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("<svg"));
    }

    #[test]
    fn svg_is_layered() {
        let t = topo();
        let l = lay(&t);
        let s = svg(&t, Some(&l));
        assert!(s.starts_with("<svg ") && s.ends_with("</svg>"));
        assert!(!s.contains("http://") && !s.contains("https://"));
        assert_eq!(s.matches("<g class=\"seg\">").count(), 5);
        assert_eq!(s.matches("<g class=\"router\">").count(), 4);
        assert_eq!(s.matches("class=\"vpn\"").count(), 1);
        // public on top, carrier's LAN below the carrier
        let y_of = |needle: &str| -> f64 {
            let i = s.find(&format!(">{needle}")).unwrap();
            let pre = &s[..i];
            let y = pre.rfind(" y=\"").unwrap();
            pre[y + 4..].split('"').next().unwrap().parse().unwrap()
        };
        assert!(y_of("internet") < y_of("carrier"));
        assert!(y_of("carrier") < y_of("lan-a"));
        assert!(y_of("router-carrier") < y_of("carrier  "));
        assert!(s.contains(">10.1.0.2<") || s.contains(&l.get("alice").unwrap().ip().to_string()));
    }

    #[test]
    fn the_nat_matrix_stays_readable() {
        let topo = crate::model::load(
            &crate::engine::image::repo_root().join("topologies/nat-matrix.yaml"),
        )
        .unwrap();
        let svg = svg(&topo, None);
        let width: f64 = svg
            .split("width=\"")
            .nth(1)
            .and_then(|w| w.split('"').next())
            .and_then(|w| w.parse().ok())
            .unwrap();
        assert!(width <= MAX_W, "{width}");
        // every segment and node is still drawn
        assert_eq!(
            svg.matches(r#"<g class="seg">"#).count(),
            topo.segments.len()
        );
        for n in &topo.nodes {
            assert!(svg.contains(&n.name), "{}", n.name);
        }
    }
}
