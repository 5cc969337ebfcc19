//! The lineage graph: a layered (Sugiyama-style) layout of the artifact DAG, drawn as inline SVG.
//!
//! Edges point parent → child and parents sit above children, so base models are on top.
//! [`layout`] works in these steps:
//!
//! 0. **Clean-up.** Edges with an out-of-range end or from a node to itself are ignored. Cycles
//!    (which a lineage should not have) are broken: a depth-first search marks every edge that
//!    leads back to a node still on its stack, and such edges are laid out reversed (they are
//!    still drawn parent → child, just pointing upwards). Reversing exactly the back edges of a
//!    DFS always leaves a DAG.
//! 1. **Layering.** Each node's layer is the length of the longest path reaching it from a root
//!    (a node without parents), computed in topological order (Kahn's algorithm).
//! 2. **Dummies.** An edge spanning more than one layer is split by one dummy slot per layer it
//!    crosses, so that from here on every edge joins adjacent layers; its path is later drawn
//!    through the dummies.
//! 3. **Crossing reduction.** Each connected component is ordered on its own, starting from the
//!    order in which a depth-first walk from its roots meets the slots. Then come 8 rounds of
//!    barycenter sweeps — downwards, every layer is sorted by the mean position of each slot's
//!    neighbours in the layer above, then upwards likewise with the layer below — and the ordering
//!    with the fewest crossings seen is kept (crossings are counted exactly, as inversions, in
//!    O(E log V) per layer pair). Each sweep is O(V log V + E).
//! 4. **Coordinates.** Layers are stacked at a fixed pitch. Within a layer, slots keep the order
//!    from step 3 and at least a fixed gap apart (nodes are 168 × 40 px; dummies are thin). A few
//!    alternating down/up passes then straighten the drawing: each slot wants to sit at the mean x
//!    of its neighbours in both adjacent layers, and the closest positions (in least squares) that
//!    keep the order and the gaps are found exactly with the pool-adjacent-violators algorithm, in
//!    linear time per layer. Long edges hence run nearly straight, and a merge sits between its
//!    parents.
//! 5. **Components** are placed side by side, left to right by their smallest node index.
//!
//! [`render`] draws the result at its natural size (the page scrolls it): nodes as links, filled
//! by kind; edges as curves through their dummies with an arrowhead at the child, coloured *and*
//! dashed by relation; and a legend on top. Where several edges meet one side of a node they get
//! separate ports along it, ordered by the x of their other ends, so arrowheads do not pile up.

use clreg_types::{ArtifactKind, Relation};
use maud::{Markup, html};

use crate::charts::{INK, OKABE_ITO, Rgb, hex, placeholder, px, svg, text_on, truncate};

/// An artifact to draw.
pub struct Node {
    pub label: String,
    /// A second, smaller line, e.g. "adapter · v1".
    pub detail: String,
    pub kind: ArtifactKind,
    pub href: String,
    /// Draw with a thick outline (the artifact the page is about).
    pub focus: bool,
}

/// A lineage edge between two indexes into the node slice.
pub struct Edge {
    pub parent: usize,
    pub child: usize,
    pub relation: Relation,
    /// The method (e.g. "ties", "lora"), drawn mid-edge.
    pub label: Option<String>,
}

/// Positions computed by `layout`; exposed for tests.
pub struct Layout {
    /// Each layer's slots, left to right.
    pub layers: Vec<Vec<Slot>>,
    pub width: f64,
    pub height: f64,
    /// Node centres, indexed like the input nodes.
    pub centres: Vec<(f64, f64)>,
    /// Edge crossings between adjacent layers in the chosen ordering.
    pub crossings: usize,
}

/// What occupies a position in a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    Node(usize),
    /// Where the long edge `edge` (an index into the input edges) crosses this layer.
    Dummy {
        edge: usize,
    },
}

const NODE_W: f64 = 168.0;
const NODE_H: f64 = 40.0;
const DUMMY_W: f64 = 12.0;
/// Minimum horizontal space between neighbouring slots.
const SLOT_GAP: f64 = 24.0;
/// Vertical space between layers (edge labels sit in it).
const LAYER_GAP: f64 = 64.0;
const COMPONENT_GAP: f64 = 48.0;
/// Edges meeting a node side by side are this far apart, and keep this far from its corners.
const PORT_SPACING: f64 = 20.0;
const PORT_INSET: f64 = 20.0;
const MARGIN: f64 = 16.0;
/// Rounds of barycenter sweeps (each one down and one up).
const SWEEPS: usize = 8;
/// Alternating down/up passes of the coordinate straightening.
const STRAIGHTEN_PASSES: usize = 8;
const LABEL_CHARS: usize = 20;
const DETAIL_CHARS: usize = 26;
const EDGE_LABEL_CHARS: usize = 20;
/// How far above the child an edge's label sits.
const EDGE_LABEL_RISE: f64 = 12.0;
/// Height of the legend band above the graph; its items' width and the room for the row titles.
const LEGEND_H: f64 = 60.0;
const LEGEND_ITEM_W: f64 = 104.0;
const LEGEND_LEFT: f64 = 72.0;

/// An edge as the layout sees it: pointing down from `upper` to `lower`, which is the reverse of
/// the input edge when that was needed to break a cycle.
struct Link {
    edge: usize,
    upper: usize,
    lower: usize,
    reversed: bool,
}

/// The layered graph after steps 0–2. Vertices `0..n` are the nodes, the rest are dummies.
struct Graph {
    slot: Vec<Slot>,
    layer: Vec<usize>,
    /// Neighbours in the layer above / below.
    up: Vec<Vec<usize>>,
    down: Vec<Vec<usize>>,
    /// Per input edge, `None` if ignored.
    chains: Vec<Option<Chain>>,
}

/// An input edge in the layered graph: its vertices from the upper end to the lower end.
struct Chain {
    vertices: Vec<usize>,
    reversed: bool,
}

/// Step 0: the usable edges, with DFS back edges reversed so that the result is acyclic.
fn links(n: usize, edges: &[Edge]) -> Vec<Link> {
    let valid: Vec<usize> = (0..edges.len())
        .filter(|&e| edges[e].parent < n && edges[e].child < n && edges[e].parent != edges[e].child)
        .collect();
    let mut out = vec![Vec::new(); n];
    for &e in &valid {
        out[edges[e].parent].push(e);
    }
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Unseen,
        OnStack,
        Done,
    }
    let mut state = vec![State::Unseen; n];
    let mut reversed = vec![false; edges.len()];
    // Iterative DFS (a long chain must not overflow the call stack): (node, next out-edge to try).
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for root in 0..n {
        if state[root] != State::Unseen {
            continue;
        }
        state[root] = State::OnStack;
        stack.push((root, 0));
        while let Some(&(v, next)) = stack.last() {
            match out[v].get(next) {
                Some(&e) => {
                    let top = stack.len() - 1;
                    stack[top].1 += 1;
                    let w = edges[e].child;
                    match state[w] {
                        State::Unseen => {
                            state[w] = State::OnStack;
                            stack.push((w, 0));
                        }
                        State::OnStack => reversed[e] = true,
                        State::Done => {}
                    }
                }
                None => {
                    state[v] = State::Done;
                    stack.pop();
                }
            }
        }
    }
    valid
        .into_iter()
        .map(|e| {
            let (parent, child) = (edges[e].parent, edges[e].child);
            if reversed[e] {
                Link {
                    edge: e,
                    upper: child,
                    lower: parent,
                    reversed: true,
                }
            } else {
                Link {
                    edge: e,
                    upper: parent,
                    lower: child,
                    reversed: false,
                }
            }
        })
        .collect()
}

/// Step 1: longest-path layering (every root on layer 0) over an acyclic set of links.
fn longest_path_layers(n: usize, links: &[Link]) -> Vec<usize> {
    let mut parents_left = vec![0usize; n];
    let mut children = vec![Vec::new(); n];
    for link in links {
        parents_left[link.lower] += 1;
        children[link.upper].push(link.lower);
    }
    let mut layer = vec![0; n];
    let mut ready: Vec<usize> = (0..n).filter(|&v| parents_left[v] == 0).collect();
    while let Some(v) = ready.pop() {
        for &w in &children[v] {
            layer[w] = layer[w].max(layer[v] + 1);
            parents_left[w] -= 1;
            if parents_left[w] == 0 {
                ready.push(w);
            }
        }
    }
    layer
}

/// Steps 0–2: the layered graph with dummies on long edges.
fn layered_graph(n: usize, edges: &[Edge]) -> Graph {
    let links = links(n, edges);
    let layer = longest_path_layers(n, &links);
    let mut g = Graph {
        slot: (0..n).map(Slot::Node).collect(),
        layer,
        up: vec![Vec::new(); n],
        down: vec![Vec::new(); n],
        chains: (0..edges.len()).map(|_| None).collect(),
    };
    for link in links {
        let mut chain = vec![link.upper];
        for l in g.layer[link.upper] + 1..g.layer[link.lower] {
            chain.push(g.slot.len());
            g.slot.push(Slot::Dummy { edge: link.edge });
            g.layer.push(l);
            g.up.push(Vec::new());
            g.down.push(Vec::new());
        }
        chain.push(link.lower);
        for pair in chain.windows(2) {
            g.down[pair[0]].push(pair[1]);
            g.up[pair[1]].push(pair[0]);
        }
        g.chains[link.edge] = Some(Chain {
            vertices: chain,
            reversed: link.reversed,
        });
    }
    g
}

/// The connected components' vertices, in order of each component's smallest node index.
fn components(g: &Graph) -> Vec<Vec<usize>> {
    let mut component = vec![usize::MAX; g.slot.len()];
    let mut result: Vec<Vec<usize>> = Vec::new();
    for start in 0..g.slot.len() {
        if component[start] != usize::MAX {
            continue;
        }
        let id = result.len();
        let mut members = vec![start];
        component[start] = id;
        let mut i = 0;
        while let Some(&v) = members.get(i) {
            for &w in g.up[v].iter().chain(&g.down[v]) {
                if component[w] == usize::MAX {
                    component[w] = id;
                    members.push(w);
                }
            }
            i += 1;
        }
        result.push(members);
    }
    result
}

/// The first ordering of one component: slots in the order a depth-first walk from the roots
/// (in index order, children in edge order) first reaches them.
fn initial_order(members: &[usize], g: &Graph, visited: &mut [bool]) -> Vec<Vec<usize>> {
    let layers = members.iter().map(|&v| g.layer[v] + 1).max().unwrap_or(0);
    let mut order = vec![Vec::new(); layers];
    let mut roots: Vec<usize> = members
        .iter()
        .copied()
        .filter(|&v| g.up[v].is_empty())
        .collect();
    roots.sort_unstable();
    let mut stack = Vec::new();
    for root in roots {
        stack.push(root);
        while let Some(v) = stack.pop() {
            if visited[v] {
                continue;
            }
            visited[v] = true;
            order[g.layer[v]].push(v);
            stack.extend(g.down[v].iter().rev().filter(|&&w| !visited[w]));
        }
    }
    order
}

/// Crossings between two adjacent layers, given each edge as (position above, position below):
/// two edges cross when their order above and below strictly disagree. After sorting by (above,
/// below) that is the number of inversions among the "below" positions, counted with a Fenwick
/// tree over the `lower_len` positions of the lower layer.
fn layer_crossings(segments: &mut [(usize, usize)], lower_len: usize) -> usize {
    segments.sort_unstable();
    let mut tree = vec![0usize; lower_len + 1];
    let mut crossings = 0;
    for (seen, &(_, below)) in segments.iter().enumerate() {
        // Earlier edges ending at or left of `below`; the others cross this one.
        let mut at_or_left = 0;
        let mut i = below + 1;
        while i > 0 {
            at_or_left += tree[i];
            i &= i - 1;
        }
        crossings += seen - at_or_left;
        let mut i = below + 1;
        while i <= lower_len {
            tree[i] += 1;
            i += i & i.wrapping_neg();
        }
    }
    crossings
}

/// All crossings of an ordering; `pos[v]` is vertex `v`'s index within its layer.
fn count_crossings(order: &[Vec<usize>], down: &[Vec<usize>], pos: &[usize]) -> usize {
    order
        .windows(2)
        .map(|pair| {
            let mut segments: Vec<(usize, usize)> = pair[0]
                .iter()
                .flat_map(|&u| down[u].iter().map(move |&w| (pos[u], pos[w])))
                .collect();
            layer_crossings(&mut segments, pair[1].len())
        })
        .sum()
}

fn set_positions(order: &[Vec<usize>], pos: &mut [usize]) {
    for layer in order {
        for (i, &v) in layer.iter().enumerate() {
            pos[v] = i;
        }
    }
}

/// Sorts one layer by the barycenter (mean position) of each vertex's `neighbours` in the adjacent
/// layer; a vertex without any keeps its own position as its key. The sort is stable, so ties keep
/// their current order.
fn barycenter_sort(layer: &mut [usize], pos: &mut [usize], neighbours: &[Vec<usize>]) {
    let mut keyed: Vec<(f64, usize)> = layer
        .iter()
        .map(|&v| {
            let ns = &neighbours[v];
            let key = if ns.is_empty() {
                pos[v] as f64
            } else {
                ns.iter().map(|&w| pos[w] as f64).sum::<f64>() / ns.len() as f64
            };
            (key, v)
        })
        .collect();
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (i, (slot, (_, v))) in layer.iter_mut().zip(keyed).enumerate() {
        *slot = v;
        pos[v] = i;
    }
}

/// Step 3: barycenter sweeps down and up, keeping the ordering with the fewest crossings.
/// Leaves `order` and `pos` at that ordering and returns its crossing count.
fn reduce_crossings(
    order: &mut Vec<Vec<usize>>,
    pos: &mut [usize],
    up: &[Vec<usize>],
    down: &[Vec<usize>],
) -> usize {
    set_positions(order, pos);
    let mut best = count_crossings(order, down, pos);
    let mut best_order = order.clone();
    for _ in 0..SWEEPS {
        if best == 0 {
            break;
        }
        for downwards in [true, false] {
            if downwards {
                for layer in order.iter_mut().skip(1) {
                    barycenter_sort(layer, pos, up);
                }
            } else {
                for layer in order.iter_mut().rev().skip(1) {
                    barycenter_sort(layer, pos, down);
                }
            }
            let crossings = count_crossings(order, down, pos);
            if crossings < best {
                best = crossings;
                best_order.clone_from(order);
            }
        }
    }
    *order = best_order;
    set_positions(order, pos);
    best
}

fn slot_width(slot: Slot) -> f64 {
    match slot {
        Slot::Node(_) => NODE_W,
        Slot::Dummy { .. } => DUMMY_W,
    }
}

/// The least-squares non-decreasing fit to `targets` (pool adjacent violators): scanning left to
/// right, a value below the block before it is merged into that block, and a block's value is the
/// mean of its targets.
fn isotonic(targets: &[f64]) -> Vec<f64> {
    // Blocks as (sum of targets, count).
    let mut blocks: Vec<(f64, usize)> = Vec::new();
    for &t in targets {
        let mut block = (t, 1);
        while let Some(&(sum, count)) = blocks.last() {
            if sum / count as f64 <= block.0 / block.1 as f64 {
                break;
            }
            blocks.pop();
            block = (sum + block.0, count + block.1);
        }
        blocks.push(block);
    }
    blocks
        .into_iter()
        .flat_map(|(sum, count)| std::iter::repeat_n(sum / count as f64, count))
        .collect()
}

/// Moves one layer's slots as close as possible to their desired centres (the mean x of their
/// neighbours, or where they are if they have none) while keeping their order and gaps.
/// With offsetᵢ the minimum distance from the first slot to slot i, writing xᵢ = yᵢ + offsetᵢ turns
/// the spacing constraints into y being non-decreasing: an isotonic regression.
fn place_layer(layer: &[usize], g: &Graph, x: &mut [f64]) {
    let mut offsets = Vec::with_capacity(layer.len());
    let mut targets = Vec::with_capacity(layer.len());
    let mut offset = 0.0;
    for (i, &v) in layer.iter().enumerate() {
        if i > 0 {
            let prev = g.slot[layer[i - 1]];
            offset += (slot_width(prev) + slot_width(g.slot[v])) / 2.0 + SLOT_GAP;
        }
        let neighbours = g.up[v].iter().chain(&g.down[v]);
        let count = g.up[v].len() + g.down[v].len();
        let desired = if count == 0 {
            x[v]
        } else {
            neighbours.map(|&w| x[w]).sum::<f64>() / count as f64
        };
        offsets.push(offset);
        targets.push(desired - offset);
    }
    for ((&v, y), offset) in layer.iter().zip(isotonic(&targets)).zip(offsets) {
        x[v] = y + offset;
    }
}

/// Step 4 for one component: x centres, starting left-packed, then straightened.
fn assign_x(order: &[Vec<usize>], g: &Graph, x: &mut [f64]) {
    for layer in order {
        let mut cursor = 0.0;
        for (i, &v) in layer.iter().enumerate() {
            if i > 0 {
                cursor +=
                    (slot_width(g.slot[layer[i - 1]]) + slot_width(g.slot[v])) / 2.0 + SLOT_GAP;
            }
            x[v] = cursor;
        }
    }
    for pass in 0..STRAIGHTEN_PASSES {
        if pass.is_multiple_of(2) {
            order.iter().for_each(|layer| place_layer(layer, g, x));
        } else {
            order
                .iter()
                .rev()
                .for_each(|layer| place_layer(layer, g, x));
        }
    }
}

fn layer_y(layer: usize) -> f64 {
    MARGIN + layer as f64 * (NODE_H + LAYER_GAP) + NODE_H / 2.0
}

/// How an input edge is drawn: the centres of its vertices from the upper end to the lower end,
/// the two end ones shifted sideways to the edge's port on the node.
struct Route {
    centres: Vec<(f64, f64)>,
    reversed: bool,
}

/// The layout plus, per input edge, its route (`None` for ignored edges).
fn compute(nodes: &[Node], edges: &[Edge]) -> (Layout, Vec<Option<Route>>) {
    let n = nodes.len();
    let g = layered_graph(n, edges);
    let vertices = g.slot.len();
    let layer_count = g.layer.iter().map(|&l| l + 1).max().unwrap_or(0);
    let mut pos = vec![0; vertices];
    let mut x = vec![0.0; vertices];
    let mut visited = vec![false; vertices];
    let mut layers = vec![Vec::new(); layer_count];
    let mut crossings = 0;
    let mut cursor = MARGIN;
    for members in components(&g) {
        let mut order = initial_order(&members, &g, &mut visited);
        crossings += reduce_crossings(&mut order, &mut pos, &g.up, &g.down);
        assign_x(&order, &g, &mut x);
        // Step 5: shift the component to the right of the previous one.
        let left = members
            .iter()
            .map(|&v| x[v] - slot_width(g.slot[v]) / 2.0)
            .fold(f64::INFINITY, f64::min);
        let right = members
            .iter()
            .map(|&v| x[v] + slot_width(g.slot[v]) / 2.0)
            .fold(f64::NEG_INFINITY, f64::max);
        for &v in &members {
            x[v] += cursor - left;
        }
        cursor += right - left + COMPONENT_GAP;
        for (l, layer) in order.iter().enumerate() {
            layers[l].extend(layer.iter().map(|&v| g.slot[v]));
        }
    }
    let centre = |v: usize| (x[v], layer_y(g.layer[v]));
    // Where an edge meets a node, offset from its centre: the edges leaving a node's bottom (or
    // entering its top) are spread out in the order of their other ends, so they stay apart.
    let port = |v: usize, other: usize, neighbours: &[usize]| {
        let count = neighbours.len();
        if v >= n || count < 2 {
            return 0.0;
        }
        let rank = neighbours
            .iter()
            .filter(|&&w| (x[w], w) < (x[other], other))
            .count();
        let spacing = PORT_SPACING.min((NODE_W - 2.0 * PORT_INSET) / (count - 1) as f64);
        (rank as f64 - (count - 1) as f64 / 2.0) * spacing
    };
    let routes = g
        .chains
        .iter()
        .map(|chain| {
            chain.as_ref().map(|chain| {
                let v = &chain.vertices;
                let (first, last) = (v[0], v[v.len() - 1]);
                let mut centres: Vec<(f64, f64)> = v.iter().map(|&w| centre(w)).collect();
                centres[0].0 += port(first, v[1], &g.down[first]);
                centres[v.len() - 1].0 += port(last, v[v.len() - 2], &g.up[last]);
                Route {
                    centres,
                    reversed: chain.reversed,
                }
            })
        })
        .collect();
    let layout = Layout {
        layers,
        width: if n == 0 {
            2.0 * MARGIN
        } else {
            cursor - COMPONENT_GAP + MARGIN
        },
        height: 2.0 * MARGIN
            + layer_count as f64 * NODE_H
            + layer_count.saturating_sub(1) as f64 * LAYER_GAP,
        centres: (0..n).map(centre).collect(),
        crossings,
    };
    (layout, routes)
}

/// Lays out the lineage graph (see the module documentation for the steps).
pub fn layout(nodes: &[Node], edges: &[Edge]) -> Layout {
    compute(nodes, edges).0
}

/// A distinct Okabe–Ito fill per artifact kind.
fn kind_colour(kind: ArtifactKind) -> Rgb {
    match kind {
        ArtifactKind::Base => OKABE_ITO[4],
        ArtifactKind::Checkpoint => OKABE_ITO[1],
        ArtifactKind::Adapter => OKABE_ITO[0],
        ArtifactKind::Merge => OKABE_ITO[2],
        ArtifactKind::Mixture => OKABE_ITO[6],
    }
}

/// A distinct colour and dash pattern per relation, so relations differ without colour too.
fn relation_style(relation: Relation) -> (Rgb, Option<&'static str>) {
    match relation {
        Relation::Finetune => (OKABE_ITO[7], None),
        Relation::Adapter => (OKABE_ITO[5], Some("7 4")),
        Relation::Merge => (OKABE_ITO[4], Some("2 3")),
        Relation::Mix => (OKABE_ITO[6], Some("9 3 2 3")),
        Relation::Import => (OKABE_ITO[2], Some("14 5")),
    }
}

fn arrow_id(id_prefix: &str, relation: Relation) -> String {
    format!("{id_prefix}-arrow-{}", relation.as_str())
}

/// An edge's SVG path and the point for its label (just above where it enters the child, so the
/// one label of a child's edges that share a method sits by that child). The path leaves the
/// upper box at its bottom,
/// runs straight down through each dummy's layer and enters the lower box at its top; between
/// layers it is an S-curve with vertical ends. It is written from parent to child, so the
/// arrowhead (`marker-end`) is always at the child, even on an edge reversed to break a cycle.
fn edge_path(route: &Route) -> (String, (f64, f64)) {
    let half = NODE_H / 2.0;
    let c = &route.centres;
    let mut points = vec![(c[0].0, c[0].1 + half)];
    for &(x, y) in &c[1..c.len() - 1] {
        points.push((x, y - half));
        points.push((x, y + half));
    }
    points.push((c[c.len() - 1].0, c[c.len() - 1].1 - half));
    if route.reversed {
        points.reverse();
    }
    let mut d = format!("M{} {}", px(points[0].0), px(points[0].1));
    // Segment i joins points i and i+1: even segments cross the gap between two layers, odd ones
    // pass through a dummy's layer. This holds in either direction.
    for (i, pair) in points.windows(2).enumerate() {
        let ((ax, ay), (bx, by)) = (pair[0], pair[1]);
        if i.is_multiple_of(2) {
            let my = (ay + by) / 2.0;
            d += &format!(
                " C{} {} {} {} {} {}",
                px(ax),
                px(my),
                px(bx),
                px(my),
                px(bx),
                px(by)
            );
        } else {
            d += &format!(" L{} {}", px(bx), px(by));
        }
    }
    // The path ends at the child, whichever way it was laid out.
    let end = points[points.len() - 1];
    (d, (end.0, end.1 - EDGE_LABEL_RISE))
}

fn legend(id_prefix: &str) -> Markup {
    html! {
        g class="legend" fill=(INK) transform=(format!("translate({MARGIN} 10)")) {
            text x="0" y="9" dominant-baseline="central" font-weight="600" { "Kind" }
            @for (i, &kind) in ArtifactKind::ALL.iter().enumerate() {
                @let x = LEGEND_LEFT + i as f64 * LEGEND_ITEM_W;
                rect class=(format!("node node-{}", kind.as_str())) x=(px(x)) y="2" width="14" height="14" rx="3"
                    fill=(hex(kind_colour(kind))) stroke="#333333" stroke-width="1" {}
                text x=(px(x + 20.0)) y="9" dominant-baseline="central" { (kind.as_str()) }
            }
            text x="0" y="33" dominant-baseline="central" font-weight="600" { "Relation" }
            @for (i, &relation) in Relation::ALL.iter().enumerate() {
                @let x = LEGEND_LEFT + i as f64 * LEGEND_ITEM_W;
                @let (colour, dash) = relation_style(relation);
                path class=(format!("edge edge-{}", relation.as_str())) d=(format!("M{} 33 H{}", px(x), px(x + 22.0)))
                    fill="none" stroke=(hex(colour)) stroke-width="1.6" stroke-dasharray=[dash]
                    marker-end=(format!("url(#{})", arrow_id(id_prefix, relation))) {}
                text x=(px(x + 30.0)) y="33" dominant-baseline="central" { (relation.as_str()) }
            }
        }
    }
}

/// The lineage graph as an accessible SVG: a legend, then the layout of `nodes` and `edges`.
/// Each node links to its `href`; an empty graph renders a small "no artifacts yet" SVG.
pub fn render(nodes: &[Node], edges: &[Edge], id_prefix: &str, title: &str, desc: &str) -> Markup {
    if nodes.is_empty() {
        return placeholder("lineage", id_prefix, title, desc, "no artifacts yet");
    }
    let (lay, routes) = compute(nodes, edges);
    // One label per child and method: a merge of five parents says `ties` once, not five times.
    let mut labelled = std::collections::HashSet::new();
    let show_label: Vec<bool> = edges
        .iter()
        .map(|e| {
            e.label
                .as_ref()
                .is_some_and(|l| labelled.insert((e.child, l.clone())))
        })
        .collect();
    let legend_w = 2.0 * MARGIN
        + LEGEND_LEFT
        + ArtifactKind::ALL.len().max(Relation::ALL.len()) as f64 * LEGEND_ITEM_W;
    let size = (lay.width.max(legend_w), lay.height + LEGEND_H);
    let body = html! {
        defs {
            @for &relation in Relation::ALL {
                marker id=(arrow_id(id_prefix, relation)) viewBox="0 0 10 10" refX="9" refY="5"
                    markerWidth="9" markerHeight="9" markerUnits="userSpaceOnUse" orient="auto" {
                    path d="M0 0 L10 5 L0 10 z" fill=(hex(relation_style(relation).0)) {}
                }
            }
        }
        (legend(id_prefix))
        g class="graph" transform=(format!("translate(0 {LEGEND_H})")) {
            g class="edges" {
                @for ((edge, route), &show) in edges.iter().zip(&routes).zip(&show_label) {
                    @if let Some(route) = route {
                        @let (d, (lx, ly)) = edge_path(route);
                        @let (colour, dash) = relation_style(edge.relation);
                        g class=(format!("edge edge-{}", edge.relation.as_str())) {
                            path d=(d) fill="none" stroke=(hex(colour)) stroke-width="1.6" stroke-dasharray=[dash]
                                marker-end=(format!("url(#{})", arrow_id(id_prefix, edge.relation))) {
                                title {
                                    (nodes[edge.parent].label) " → " (nodes[edge.child].label) ": "
                                    (edge.relation.as_str())
                                    @if let Some(label) = &edge.label { " (" (label) ")" }
                                }
                            }
                            @if let (true, Some(label)) = (show, &edge.label) {
                                text class="edge-label" x=(px(lx)) y=(px(ly)) text-anchor="middle"
                                    dominant-baseline="central" font-size="11" fill=(INK) stroke="#ffffff"
                                    stroke-width="3" paint-order="stroke" { (truncate(label, EDGE_LABEL_CHARS)) }
                            }
                        }
                    }
                }
            }
            g class="nodes" {
                @for (node, &(cx, cy)) in nodes.iter().zip(&lay.centres) {
                    @let fill = kind_colour(node.kind);
                    @let ink = text_on(fill);
                    @let label_y = if node.detail.is_empty() { cy } else { cy - 7.0 };
                    a href=(node.href) class="node-link" aria-current=[node.focus.then_some("true")] {
                        title {
                            (node.label)
                            @if !node.detail.is_empty() { " — " (node.detail) }
                        }
                        g class=(format!("node node-{}{}", node.kind.as_str(), if node.focus { " node-focus" } else { "" })) {
                            rect x=(px(cx - NODE_W / 2.0)) y=(px(cy - NODE_H / 2.0)) width=(px(NODE_W))
                                height=(px(NODE_H)) rx="6" fill=(hex(fill))
                                stroke=(if node.focus { "#000000" } else { "#333333" })
                                stroke-width=(if node.focus { "4" } else { "1" }) {}
                            text class="node-label" x=(px(cx)) y=(px(label_y)) text-anchor="middle"
                                dominant-baseline="central" font-size="12" font-weight="600" fill=(ink) {
                                (truncate(&node.label, LABEL_CHARS))
                            }
                            @if !node.detail.is_empty() {
                                text class="node-detail" x=(px(cx)) y=(px(cy + 10.0)) text-anchor="middle"
                                    dominant-baseline="central" font-size="11" fill=(ink) {
                                    (truncate(&node.detail, DETAIL_CHARS))
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    svg("lineage", id_prefix, size, title, desc, body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use super::*;

    /// A tiny deterministic generator (Knuth's MMIX LCG), enough for test graphs.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 33) % n as u64) as usize
        }
    }

    fn node(i: usize) -> Node {
        Node {
            label: format!("model-{i}"),
            detail: "checkpoint · v1".to_owned(),
            kind: ArtifactKind::ALL[i % ArtifactKind::ALL.len()],
            href: format!("/a/{i}"),
            focus: i == 0,
        }
    }

    fn nodes(n: usize) -> Vec<Node> {
        (0..n).map(node).collect()
    }

    fn edge(parent: usize, child: usize) -> Edge {
        Edge {
            parent,
            child,
            relation: Relation::Finetune,
            label: None,
        }
    }

    /// A random DAG: every node but the first few gets one to three parents among the `window`
    /// nodes before it.
    fn random_dag(rng: &mut Lcg, n: usize, window: usize) -> Vec<Edge> {
        let mut edges = Vec::new();
        for child in 3.min(n)..n {
            let parents = 1 + rng.below(3);
            let mut chosen = Vec::new();
            for _ in 0..parents {
                let parent = child - 1 - rng.below(window.min(child));
                if !chosen.contains(&parent) {
                    chosen.push(parent);
                    edges.push(edge(parent, child));
                }
            }
        }
        edges
    }

    /// (layer, position) of every slot.
    fn positions(lay: &Layout) -> HashMap<(usize, Slot), usize> {
        let mut at = HashMap::new();
        for (l, layer) in lay.layers.iter().enumerate() {
            for (p, &slot) in layer.iter().enumerate() {
                at.insert((l, slot), p);
            }
        }
        at
    }

    fn layer_of(lay: &Layout, node: usize) -> usize {
        lay.layers
            .iter()
            .position(|layer| layer.contains(&Slot::Node(node)))
            .unwrap()
    }

    /// Crossings of a laid-out DAG counted pair by pair from `layers` alone: each edge is followed
    /// from its parent through one dummy per crossed layer (which must exist) to its child.
    fn brute_force_crossings(lay: &Layout, edges: &[Edge]) -> usize {
        let at = positions(lay);
        let mut segments = Vec::new();
        for (e, edge) in edges.iter().enumerate() {
            let (top, bottom) = (layer_of(lay, edge.parent), layer_of(lay, edge.child));
            assert!(bottom > top);
            let mut prev = at[&(top, Slot::Node(edge.parent))];
            for l in top + 1..bottom {
                let here = at[&(l, Slot::Dummy { edge: e })];
                segments.push((l - 1, prev, here));
                prev = here;
            }
            segments.push((bottom - 1, prev, at[&(bottom, Slot::Node(edge.child))]));
        }
        let mut crossings = 0;
        for (i, a) in segments.iter().enumerate() {
            for b in &segments[i + 1..] {
                if a.0 == b.0 && ((a.1 < b.1 && a.2 > b.2) || (a.1 > b.1 && a.2 < b.2)) {
                    crossings += 1;
                }
            }
        }
        crossings
    }

    #[test]
    fn chain_of_three_gets_three_layers() {
        let lay = layout(&nodes(3), &[edge(0, 1), edge(1, 2)]);
        assert_eq!(lay.layers.len(), 3);
        for (l, layer) in lay.layers.iter().enumerate() {
            assert_eq!(layer, &vec![Slot::Node(l)]);
        }
        assert!(lay.centres[1].1 > lay.centres[0].1);
        assert!(lay.centres[2].1 > lay.centres[1].1);
        assert_eq!(lay.crossings, 0);
    }

    #[test]
    fn merge_child_sits_below_and_between_its_parents() {
        let lay = layout(&nodes(3), &[edge(0, 2), edge(1, 2)]);
        let [a, b, child] = [lay.centres[0], lay.centres[1], lay.centres[2]];
        assert!(child.1 > a.1 && child.1 > b.1);
        let (lo, hi) = (a.0.min(b.0), a.0.max(b.0));
        assert!(lo < child.0 && child.0 < hi, "{a:?} {b:?} {child:?}");
    }

    #[test]
    fn long_edge_gets_one_dummy_per_crossed_layer() {
        let edges = [edge(0, 1), edge(1, 2), edge(2, 3), edge(0, 3)];
        let lay = layout(&nodes(4), &edges);
        assert_eq!(lay.layers.len(), 4);
        let dummies: Vec<usize> = lay
            .layers
            .iter()
            .enumerate()
            .flat_map(|(l, layer)| {
                layer
                    .iter()
                    .filter(|s| **s == Slot::Dummy { edge: 3 })
                    .map(move |_| l)
            })
            .collect();
        assert_eq!(dummies, vec![1, 2]);
        let other_dummies = lay
            .layers
            .iter()
            .flatten()
            .filter(|s| matches!(s, Slot::Dummy { edge } if *edge != 3));
        assert_eq!(other_dummies.count(), 0);
    }

    #[test]
    fn sweeps_untangle_a_badly_ordered_graph() {
        // Layer 0: 0 1 2, layer 1: 3 4 5, layer 2: 6 7 8; edges reverse the order twice.
        let mut up = vec![Vec::new(); 9];
        let mut down = vec![Vec::new(); 9];
        for (u, w) in [(0, 5), (1, 4), (2, 3), (3, 8), (4, 7), (5, 6)] {
            down[u].push(w);
            up[w].push(u);
        }
        let mut order = vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7, 8]];
        let mut pos = vec![0; 9];
        set_positions(&order, &mut pos);
        assert_eq!(count_crossings(&order, &down, &pos), 6);
        assert_eq!(reduce_crossings(&mut order, &mut pos, &up, &down), 0);
        assert_eq!(count_crossings(&order, &down, &pos), 0);

        // K2,2 plus a crossed pair: only the K2,2's one crossing is unavoidable.
        let mut up = vec![Vec::new(); 8];
        let mut down = vec![Vec::new(); 8];
        for (u, w) in [(0, 4), (0, 5), (1, 4), (1, 5), (2, 7), (3, 6)] {
            down[u].push(w);
            up[w].push(u);
        }
        let mut order = vec![vec![0, 2, 1, 3], vec![4, 6, 5, 7]];
        assert_eq!(reduce_crossings(&mut order, &mut pos, &up, &down), 1);

        // Through the public layout, too.
        let edges = [edge(0, 5), edge(1, 4), edge(2, 3), edge(1, 3)];
        let lay = layout(&nodes(6), &edges);
        assert_eq!(lay.crossings, 0);
        assert_eq!(brute_force_crossings(&lay, &edges), 0);
    }

    #[test]
    fn crossing_count_matches_brute_force() {
        let mut rng = Lcg(7);
        for _ in 0..200 {
            let (upper, lower) = (1 + rng.below(6), 1 + rng.below(6));
            let mut segments: Vec<(usize, usize)> = (0..rng.below(12))
                .map(|_| (rng.below(upper), rng.below(lower)))
                .collect();
            let mut brute = 0;
            for (i, a) in segments.iter().enumerate() {
                for b in &segments[i + 1..] {
                    if (a.0 < b.0 && a.1 > b.1) || (a.0 > b.0 && a.1 < b.1) {
                        brute += 1;
                    }
                }
            }
            assert_eq!(layer_crossings(&mut segments, lower), brute);
        }
    }

    #[test]
    fn layout_crossings_match_brute_force_on_random_dags() {
        let mut rng = Lcg(42);
        for size in [5, 8, 12, 20, 30] {
            let edges = random_dag(&mut rng, size, 6);
            let lay = layout(&nodes(size), &edges);
            assert_eq!(
                lay.crossings,
                brute_force_crossings(&lay, &edges),
                "size {size}"
            );
        }
    }

    #[test]
    fn cycles_and_bad_edges_are_survived() {
        let mut edges = vec![
            edge(0, 1),
            edge(1, 2),
            edge(2, 0),
            edge(1, 1),
            edge(0, 9),
            edge(7, 2),
        ];
        edges.push(edge(2, 1));
        let lay = layout(&nodes(3), &edges);
        assert_eq!(
            lay.layers
                .iter()
                .flatten()
                .filter(|s| matches!(s, Slot::Node(_)))
                .count(),
            3
        );
        assert_eq!(lay.centres.len(), 3);
        let html = render(&nodes(3), &edges, "cyc", "t", "d").into_string();
        // The self loop and the out-of-range edges are not drawn.
        assert_eq!(html.matches("<g class=\"edge edge-finetune\">").count(), 4);
    }

    #[test]
    fn random_dag_of_200_nodes_has_no_overlapping_boxes() {
        let mut rng = Lcg(2024);
        let n = 200;
        let edges = random_dag(&mut rng, n, 40);
        let started = std::time::Instant::now();
        let lay = layout(&nodes(n), &edges);
        eprintln!(
            "200 nodes, {} edges: {:?}, {} crossings",
            edges.len(),
            started.elapsed(),
            lay.crossings
        );
        for layer in &lay.layers {
            let mut xs: Vec<f64> = layer
                .iter()
                .filter_map(|s| match s {
                    Slot::Node(v) => Some(lay.centres[*v].0),
                    Slot::Dummy { .. } => None,
                })
                .collect();
            let increasing = xs.windows(2).all(|w| w[0] < w[1]);
            assert!(increasing, "nodes are drawn in layer order");
            xs.sort_by(f64::total_cmp);
            for pair in xs.windows(2) {
                assert!(pair[1] - pair[0] >= NODE_W + SLOT_GAP - 1e-6, "{pair:?}");
            }
        }
        for &(x, y) in &lay.centres {
            assert!(x - NODE_W / 2.0 >= 0.0 && x + NODE_W / 2.0 <= lay.width + 1e-6);
            assert!(y - NODE_H / 2.0 >= 0.0 && y + NODE_H / 2.0 <= lay.height + 1e-6);
        }
        for e in &edges {
            assert!(lay.centres[e.child].1 > lay.centres[e.parent].1);
        }
        assert_eq!(lay.crossings, brute_force_crossings(&lay, &edges));
    }

    #[test]
    fn two_thousand_nodes_are_all_placed_below_their_parents() {
        // Its speed is measured, not asserted: `cargo test -p clreg-web two_thousand -- --nocapture`.
        let mut rng = Lcg(99);
        let n = 2000;
        let edges = random_dag(&mut rng, n, 60);
        let started = std::time::Instant::now();
        let lay = layout(&nodes(n), &edges);
        eprintln!("2000 nodes, {} edges: {:?}", edges.len(), started.elapsed());
        assert_eq!(lay.centres.len(), n);
        for e in &edges {
            assert!(
                lay.centres[e.child].1 > lay.centres[e.parent].1,
                "{} → {}",
                e.parent,
                e.child
            );
        }
    }

    #[test]
    fn components_sit_side_by_side() {
        // Two chains and a lone node.
        let lay = layout(&nodes(5), &[edge(0, 1), edge(2, 3)]);
        assert_eq!(
            lay.layers[0],
            vec![Slot::Node(0), Slot::Node(2), Slot::Node(4)]
        );
        let right_of = |a: usize, b: usize| {
            lay.centres[b].0 - lay.centres[a].0 >= NODE_W + COMPONENT_GAP - 1e-6
        };
        assert!(right_of(0, 2) && right_of(1, 3) && right_of(2, 4));
    }

    #[test]
    fn render_links_every_node_and_escapes_text() {
        let mut ns = nodes(4);
        ns[1].label = "<script>alert(1)</script>".to_owned();
        ns[2].href = "/a/x\"onmouseover=\"evil".to_owned();
        let edges = [
            edge(0, 1),
            Edge {
                parent: 0,
                child: 2,
                relation: Relation::Adapter,
                label: Some("lora<&>".to_owned()),
            },
            Edge {
                parent: 1,
                child: 3,
                relation: Relation::Merge,
                label: Some("ties".to_owned()),
            },
            Edge {
                parent: 2,
                child: 3,
                relation: Relation::Merge,
                label: Some("ties".to_owned()),
            },
        ];
        let html = render(&ns, &edges, "lin", "Lineage of model-3", "4 artifacts").into_string();
        assert_eq!(html.matches("<a href").count(), 4);
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("lora&lt;&amp;&gt;"));
        assert!(!html.contains("\"onmouseover"));
        assert!(html.starts_with("<svg"));
        assert!(html.contains("role=\"img\""));
        assert!(html.contains("aria-labelledby=\"lin-title lin-desc\""));
        assert!(html.contains("<title id=\"lin-title\">Lineage of model-3</title><desc id=\"lin-desc\">4 artifacts</desc>"));
        assert!(html.contains("class=\"node node-base node-focus\""));
        assert!(html.contains("class=\"edge edge-merge\""));
        assert!(html.contains("marker-end=\"url(#lin-arrow-adapter)\""));
        // Two `ties` edges into one child: one label, and each edge keeps its tooltip.
        assert_eq!(html.matches(">ties</text>").count(), 1);
        assert_eq!(html.matches("merge (ties)</title>").count(), 2);
    }

    #[test]
    fn long_labels_are_cut_with_the_full_text_in_a_tooltip() {
        let mut ns = nodes(1);
        ns[0].label = "a-very-long-model-name-that-goes-on".to_owned();
        let html = render(&ns, &[], "one", "t", "d").into_string();
        assert!(html.contains(">a-very-long-model-n…</text>"));
        assert!(
            html.contains("<title>a-very-long-model-name-that-goes-on — checkpoint · v1</title>")
        );
    }

    #[test]
    fn empty_graph_says_so() {
        let html = render(&[], &[], "none", "Lineage", "nothing").into_string();
        assert!(html.contains("no artifacts yet"));
        assert!(html.contains(
            "<title id=\"none-title\">Lineage</title><desc id=\"none-desc\">nothing</desc>"
        ));
        let lay = layout(&[], &[]);
        assert!(lay.layers.is_empty() && lay.centres.is_empty());
    }
}
