//! A graph as a picture (`qatc graph --emit svg`, and report.html): laid out by the layout-rs crate
//! (a Graphviz-style layered layout in pure Rust) as SVG, with the nodes of each
//! block call framed and labelled by the call's binding, nested as the calls are.
//!
//! layout-rs has no clusters, so the frames are drawn here: the layout is rendered
//! into a recording backend, the frames are computed from where each node landed,
//! and the frames are drawn first so that nodes and edges stay on top.

use std::collections::BTreeMap;

use layout::backends::svg::SVGWriter;
use layout::core::base::Orientation;
use layout::core::color::Color;
use layout::core::format::{ClipHandle, RenderBackend};
use layout::core::geometry::Point;
use layout::core::style::StyleAttr;
use layout::std_shapes::shapes::{Arrow, Element, ShapeKind};
use layout::topo::layout::VisualGraph;

use super::dump::{annotation, block_members, call_label, calls_in};
use super::ops::format_shape;
use super::{BlockCallId, Graph, NodeId, Op};

const FONT_SIZE: usize = 12;
/// Longest line of a node's arguments before it wraps.
const WRAP_COLUMNS: usize = 36;
/// Fill of fake quantizations, as in `qatc graph --emit dot`.
const FAKE_QUANT_FILL: u32 = 0xffe6a8ff;
const FLOAT_FILL: u32 = 0xe8e8e8ff;
/// Frame colours by nesting depth (RGBA; translucent so nested frames stay visible).
const FRAME_FILLS: [u32; 3] = [0x1f77b418, 0x2ca02c18, 0x9467bd18];
const FRAME_LINES: [u32; 3] = [0x1f77b4ff, 0x2ca02cff, 0x9467bdff];
/// Space between a frame and what it holds, per nesting level inside it.
const FRAME_PAD: f64 = 8.0;

/// The SVG picture of `graph` (no XML declaration issues: callers inline it).
pub fn svg(graph: &Graph) -> String {
    let mut visual = VisualGraph::new(Orientation::TopToBottom);
    let mut handles = Vec::with_capacity(graph.nodes.len());
    for id in graph.ids() {
        let node = graph.node(id);
        let op = node.op.to_string();
        // `conv2d+relu(filters=8, ...)`: the op on one line, its arguments on the next.
        let (name, args) = match op.split_once('(') {
            Some((name, rest)) => (name, rest.strip_suffix(')').unwrap_or(rest)),
            None => (op.as_str(), ""),
        };
        let mut label = format!("{}\n{name}", node.name);
        for line in wrap(args, WRAP_COLUMNS) {
            label.push('\n');
            label.push_str(&line);
        }
        label.push('\n');
        label.push_str(&format_shape(&node.shape));
        if let Some(annotation) = annotation(node) {
            label.push('\n');
            label.push_str(&annotation);
        }
        let fill = match node.op {
            Op::FakeQuant { .. } => FAKE_QUANT_FILL,
            _ if node.quant.float => FLOAT_FILL,
            _ => 0xffffffff,
        };
        let look = StyleAttr::new(
            Color::fast("black"),
            1,
            Some(Color::new(fill)),
            4,
            FONT_SIZE,
        );
        let size = text_size(&label);
        let shape = match node.op {
            Op::Input => ShapeKind::Circle(label),
            _ => ShapeKind::Box(label),
        };
        // The properties become attributes of the node's <g>: what the frames and a
        // reader of the DOM find the node by.
        let properties = format!(
            "class=\"node\" data-id=\"{}\" data-node=\"{}\" data-block=\"{}\"",
            id.0,
            attribute(&node.name),
            node.block.map_or(String::new(), |b| b.0.to_string())
        );
        let element = Element::create_with_properties(
            shape,
            look,
            Orientation::TopToBottom,
            size,
            properties,
        );
        handles.push(visual.add_node(element));
    }
    for id in graph.ids() {
        for input in &graph.node(id).inputs {
            visual.add_edge(
                Arrow::simple(""),
                handles[input.index()],
                handles[id.index()],
            );
        }
    }
    let mut recorder = Recorder::default();
    visual.do_it(false, false, false, &mut recorder);

    let mut writer = SVGWriter::new();
    let members = block_members(graph);
    let mut frames = Vec::new();
    frame_boxes(graph, None, &members, &recorder.boxes, 0, &mut frames);
    // Outer frames first, so inner ones are drawn over them.
    frames.sort_by_key(|f| f.depth);
    for frame in &frames {
        let style = StyleAttr::new(
            Color::new(FRAME_LINES[frame.depth % FRAME_LINES.len()]),
            1,
            Some(Color::new(FRAME_FILLS[frame.depth % FRAME_FILLS.len()])),
            8,
            FONT_SIZE,
        );
        writer.draw_rect(
            frame.min,
            frame.max.sub(frame.min),
            &style,
            Some(format!("class=\"block\" data-block=\"{}\"", frame.call.0)),
            None,
        );
        // Top left, clear of the edge that usually enters at the top centre.
        let label = call_label(graph, frame.call);
        let label_at = Point::new(
            frame.min.x + 6.0 + text_size(&label).x / 2.0,
            frame.min.y + FONT_SIZE as f64,
        );
        writer.draw_text(label_at, &label, &style);
    }
    recorder.replay(&mut writer);
    writer.finalize()
}

/// One block call's frame: the box around its nodes and its callees' frames.
struct Frame {
    call: BlockCallId,
    depth: usize,
    min: Point,
    max: Point,
}

/// The frame of block call `caller` (none for the model itself, depth 0), after those
/// of the calls it makes; returns its extent, or None when it holds nothing drawn.
fn frame_boxes(
    graph: &Graph,
    caller: Option<BlockCallId>,
    members: &BTreeMap<Option<BlockCallId>, Vec<NodeId>>,
    boxes: &BTreeMap<NodeId, (Point, Point)>,
    depth: usize,
    frames: &mut Vec<Frame>,
) -> Option<(Point, Point)> {
    let mut extent: Option<(Point, Point)> = None;
    let mut grow = |(lo, hi): (Point, Point)| {
        extent = Some(match extent {
            None => (lo, hi),
            Some((a, b)) => (
                Point::new(a.x.min(lo.x), a.y.min(lo.y)),
                Point::new(b.x.max(hi.x), b.y.max(hi.y)),
            ),
        });
    };
    for id in members.get(&caller).into_iter().flatten() {
        if let Some(&b) = boxes.get(id) {
            grow(b);
        }
    }
    for call in calls_in(graph, caller) {
        if let Some(b) = frame_boxes(graph, Some(call), members, boxes, depth + 1, frames) {
            grow(b);
        }
    }
    let (lo, hi) = extent?;
    let Some(call) = caller else {
        return Some((lo, hi));
    };
    // Room above for the label.
    let framed = (
        Point::new(lo.x - FRAME_PAD, lo.y - FRAME_PAD - FONT_SIZE as f64 - 4.0),
        Point::new(hi.x + FRAME_PAD, hi.y + FRAME_PAD),
    );
    frames.push(Frame {
        call,
        depth: depth - 1,
        min: framed.0,
        max: framed.1,
    });
    Some(framed)
}

/// The box a label needs in the SVG backend's serif font: about 0.55 em per character
/// (layout-rs's own estimate, a full em, makes boxes twice as wide as their text).
fn text_size(label: &str) -> Point {
    let columns = label.lines().map(|l| l.chars().count()).max().unwrap_or(1);
    let lines = label.lines().count().max(1);
    let em = FONT_SIZE as f64;
    Point::new(
        columns as f64 * em * 0.55 + em,
        lines as f64 * em * 1.2 + em,
    )
}

/// Splits `a=1, b=2, ...` after commas into lines of at most `columns` characters
/// (longer single arguments stay whole).
fn wrap(args: &str, columns: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for part in args.split_inclusive(", ") {
        match lines.last_mut() {
            Some(line) if line.len() + part.trim_end().len() <= columns => line.push_str(part),
            _ => lines.push(part.to_string()),
        }
    }
    lines.iter().map(|l| l.trim_end().to_string()).collect()
}

/// Escapes a value for an XML attribute in double quotes.
fn attribute(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('"', "&quot;")
}

/// One drawing call, kept until the frames that go beneath it are drawn.
enum Call {
    Rect(Point, Point, StyleAttr, Option<String>, Option<ClipHandle>),
    Line(Point, Point, StyleAttr, Option<String>),
    Circle(Point, Point, StyleAttr, Option<String>),
    Text(Point, String, StyleAttr),
    Arrow(
        Vec<(Point, Point)>,
        bool,
        (bool, bool),
        StyleAttr,
        Option<String>,
        String,
    ),
}

/// A backend that records the layout's drawing and where each node's shape went.
#[derive(Default)]
struct Recorder {
    calls: Vec<Call>,
    /// Node → (top left, bottom right) of its shape.
    boxes: BTreeMap<NodeId, (Point, Point)>,
    clips: usize,
    clip_regions: Vec<(Point, Point, usize)>,
}

impl Recorder {
    fn note(&mut self, properties: &Option<String>, lo: Point, hi: Point) {
        const KEY: &str = "data-id=\"";
        let Some(start) = properties
            .as_deref()
            .and_then(|p| p.find(KEY).map(|at| &p[at + KEY.len()..]))
        else {
            return;
        };
        if let Some(id) = start.split('"').next().and_then(|n| n.parse().ok()) {
            self.boxes.insert(NodeId(id), (lo, hi));
        }
    }

    fn replay(self, writer: &mut SVGWriter) {
        // Clip handles are numbered in creation order: recreate them in that order.
        for (xy, size, rounded) in self.clip_regions {
            writer.create_clip(xy, size, rounded);
        }
        for call in self.calls {
            match call {
                Call::Rect(xy, size, look, properties, clip) => {
                    writer.draw_rect(xy, size, &look, properties, clip)
                }
                Call::Line(start, stop, look, properties) => {
                    writer.draw_line(start, stop, &look, properties)
                }
                Call::Circle(xy, size, look, properties) => {
                    writer.draw_circle(xy, size, &look, properties)
                }
                Call::Text(xy, text, look) => writer.draw_text(xy, &text, &look),
                Call::Arrow(path, dashed, head, look, properties, text) => {
                    writer.draw_arrow(&path, dashed, head, &look, properties, &text)
                }
            }
        }
    }
}

impl RenderBackend for Recorder {
    fn draw_rect(
        &mut self,
        xy: Point,
        size: Point,
        look: &StyleAttr,
        properties: Option<String>,
        clip: Option<ClipHandle>,
    ) {
        self.note(&properties, xy, xy.add(size));
        self.calls
            .push(Call::Rect(xy, size, look.clone(), properties, clip));
    }

    fn draw_line(
        &mut self,
        start: Point,
        stop: Point,
        look: &StyleAttr,
        properties: Option<String>,
    ) {
        self.calls
            .push(Call::Line(start, stop, look.clone(), properties));
    }

    fn draw_circle(
        &mut self,
        xy: Point,
        size: Point,
        look: &StyleAttr,
        properties: Option<String>,
    ) {
        // `xy` is the centre of the ellipse.
        let half = size.scale(0.5);
        self.note(&properties, xy.sub(half), xy.add(half));
        self.calls
            .push(Call::Circle(xy, size, look.clone(), properties));
    }

    fn draw_text(&mut self, xy: Point, text: &str, look: &StyleAttr) {
        self.calls
            .push(Call::Text(xy, text.to_string(), look.clone()));
    }

    fn draw_arrow(
        &mut self,
        path: &[(Point, Point)],
        dashed: bool,
        head: (bool, bool),
        look: &StyleAttr,
        properties: Option<String>,
        text: &str,
    ) {
        self.calls.push(Call::Arrow(
            path.to_vec(),
            dashed,
            head,
            look.clone(),
            properties,
            text.to_string(),
        ));
    }

    fn create_clip(&mut self, xy: Point, size: Point, rounded_px: usize) -> ClipHandle {
        self.clip_regions.push((xy, size, rounded_px));
        self.clips += 1;
        self.clips - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(source: &str) -> Graph {
        let file = crate::diagnostics::SourceFile::new("t.qat", source);
        let checked = crate::check_source(&file);
        assert!(!checked.has_errors(), "{:?}", checked.diagnostics);
        let graph = checked.graphs.into_iter().next().unwrap();
        crate::passes::run(graph, crate::passes::Stage::Quantized)
    }

    /// (data-block, x, y, width, height) of every frame in the picture.
    fn frames(svg: &str) -> Vec<(String, f64, f64, f64, f64)> {
        svg.split("class=\"block\" data-block=\"")
            .skip(1)
            .map(|rest| {
                let name = rest[..rest.find('"').unwrap()].to_string();
                let num = |key: &str| -> f64 {
                    let at = rest.find(&format!(" {key}=\"")).unwrap() + key.len() + 3;
                    rest[at..at + rest[at..].find('"').unwrap()]
                        .parse()
                        .unwrap()
                };
                (name, num("x"), num("y"), num("width"), num("height"))
            })
            .collect()
    }

    /// Every node is drawn once, every block call has one frame (also calls bound to a
    /// name used before, as in se.qat), and each frame encloses the nodes of its call
    /// and of the calls made inside it.
    #[test]
    fn frames_enclose_the_nodes_of_their_block_calls() {
        for source in [
            include_str!("../../examples/fashion/resnet.qat"),
            include_str!("../../examples/fashion/se.qat"),
        ] {
            let g = graph(source);
            let svg = svg(&g);
            for node in &g.nodes {
                let needle = format!("data-node=\"{}\"", node.name);
                assert_eq!(svg.matches(&needle).count(), 1, "{}", node.name);
            }
            let frames = frames(&svg);
            assert!(g.blocks.len() >= 4);
            assert_eq!(frames.len(), g.blocks.len());
            for node_svg in svg.split("class=\"node\" data-id=\"").skip(1) {
                let id: usize = node_svg[..node_svg.find('"').unwrap()].parse().unwrap();
                // The node's own <g> only (the input is an ellipse, not a rectangle).
                let own = &node_svg[..node_svg.find("</g>").unwrap()];
                let Some(rect) = own.find("<rect x=\"") else {
                    continue;
                };
                let nums: Vec<f64> = own[rect..]
                    .split('"')
                    .skip(1)
                    .step_by(2)
                    .take(4)
                    .map(|v| v.parse().unwrap())
                    .collect();
                let (x, y, w, h) = (nums[0], nums[1], nums[2], nums[3]);
                let mut call = g.nodes[id].block;
                while let Some(c) = call {
                    let (_, fx, fy, fw, fh) =
                        frames.iter().find(|f| f.0 == c.0.to_string()).unwrap();
                    assert!(
                        x >= *fx && y >= *fy && x + w <= fx + fw && y + h <= fy + fh,
                        "{} outside the frame of {}",
                        g.nodes[id].name,
                        call_label(&g, c)
                    );
                    call = g.blocks[c.index()].parent;
                }
            }
        }
    }
}
