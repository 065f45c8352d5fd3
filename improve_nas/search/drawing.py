"""Pictures of genotypes: a cell as a graph, and an ensemble's cells as DOT, SVG, PNG, one-line text or JSON.

A cell is drawn as the states it computes: the two inputs h0 (the processed cell input) and h1 (the adjusted
previous layer), one node per block (its state, h2, h3, ...) with an edge from each state it reads labelled with the
operation applied there, and a `concat` node fed by the states the cell output concatenates (`Cell.output_states`).

No Graphviz binary is needed anywhere: pydot only writes DOT text (for whoever has Graphviz or another DOT viewer),
and SVG/PNG are drawn by matplotlib (Agg, never pyplot's global state) with a layered layout computed here from the
DAG, after Sugiyama, Tagawa, Toda, *Methods for Visual Understanding of Hierarchical System Structures*, IEEE SMC
1981: a state's layer is one more than the deepest state it reads, the nodes of a layer are ordered by the mean
height of the states they read (the barycenter heuristic), and an edge bends away from the nodes and labels it
would cross.

Matplotlib and pydot are imported only by the functions that need them, so `text`/`json` cost no import time.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import textwrap
from typing import Any, Sequence

from improve_nas.models import genotype as models_genotype
from improve_nas.search import space

FORMATS = ("svg", "png", "dot", "text", "json")
PICTURE_FORMATS = ("svg", "png")  # bytes for a file; the others are text

# The space's names, except "none": it is the identity, and an edge reading "none" would look like no connection.
_LABELS = {models_genotype.IDENTITY: "identity"}


def operation_label(operation: str) -> str:
    """The label of an operation's edge: its name in `space.OPERATIONS`, "identity" for "none"."""
    return _LABELS.get(operation, operation)


@dataclasses.dataclass(frozen=True)
class Member:
    """One ensemble member to draw.

    Attributes:
        name: The member's name in the run (`t<iteration>_<builder name>`).
        genotype: Its cells.
        recorded: False when the run did not record a genotype (trained before the search existed) and NASNet-A,
            the only architecture then, is shown.
    """

    name: str
    genotype: space.Genotype
    recorded: bool = True

    @property
    def digest(self) -> str:
        return self.genotype.digest()

    def heading(self) -> str:
        note = "" if self.recorded else "  (no genotype recorded: NASNet-A, trained before the search)"
        return f"{self.name}  {self.digest}{note}"


@dataclasses.dataclass(frozen=True)
class Node:
    """A state of a cell (`h<state>`, kind "input" or "block") or its output (`concat`, kind "output")."""

    id: str
    label: str
    kind: str
    layer: int


@dataclasses.dataclass(frozen=True)
class Edge:
    """From the state `source` to `target`; `label` is the operation ("" on the edges into the output)."""

    source: str
    target: str
    label: str


@dataclasses.dataclass(frozen=True)
class CellGraph:
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]


OUTPUT = "concat"


def cell_graph(cell: space.Cell) -> CellGraph:
    """The cell as a DAG: 2 + B + 1 nodes, 2B operation edges and one edge per output state."""
    layers = [0] * space.NUM_INPUT_STATES
    for block in cell.blocks:
        layers.append(1 + max(layers[state] for _, state in block))
    nodes = [Node(f"h{s}", f"h{s}", "input" if s < space.NUM_INPUT_STATES else "block", layer)
             for s, layer in enumerate(layers)]
    nodes.append(Node(OUTPUT, OUTPUT, "output", 1 + max(layers)))
    edges = [Edge(f"h{state}", f"h{space.NUM_INPUT_STATES + i}", operation_label(operation))
             for i, block in enumerate(cell.blocks) for operation, state in block]
    edges += [Edge(f"h{state}", OUTPUT, "") for state in cell.output_states]
    return CellGraph(tuple(nodes), tuple(edges))


def layered_layout(graph: CellGraph) -> dict[str, tuple[int, float]]:
    """(layer, row) of every node: rows of a layer centred on 0, one apart, top down by the barycenter heuristic."""
    sources: dict[str, list[str]] = {}
    for edge in graph.edges:
        sources.setdefault(edge.target, []).append(edge.source)
    position: dict[str, tuple[int, float]] = {}
    for layer in range(max(node.layer for node in graph.nodes) + 1):
        nodes = [node for node in graph.nodes if node.layer == layer]  # in state order: ties keep it
        if layer:
            nodes.sort(key=lambda node: -sum(position[s][1] for s in sources[node.id]) / len(sources[node.id]))
        for rank, node in enumerate(nodes):
            position[node.id] = (layer, (len(nodes) - 1) / 2 - rank)
    return position


# --- text forms ---------------------------------------------------------------------------------------------------

def to_text(members: Sequence[Member], title: str | None = None) -> str:
    """One line per member: name, hash, `Genotype.text()` (a `# title` line first, when given)."""
    width = max((len(member.name) for member in members), default=0)
    lines = [f"# {title}"] if title else []
    lines += [f"{member.name.ljust(width)}  {member.digest}  {member.genotype.text()}" for member in members]
    return "\n".join(lines) + "\n"


def records(members: Sequence[Member]) -> list[dict[str, Any]]:
    """The members as JSON values: name, genotype (`Genotype.to_dict`), its hash and text, whether it was recorded."""
    return [{"name": member.name, "genotype_hash": member.digest, "genotype": member.genotype.to_dict(),
             "text": member.genotype.text(), "genotype_recorded": member.recorded} for member in members]


def to_json(members: Sequence[Member], **context: Any) -> str:
    """`{**context, "members": records(members)}`, indented."""
    return json.dumps({**context, "members": records(members)}, indent=2) + "\n"


def to_dot(members: Sequence[Member], title: str | None = None) -> str:
    """A DOT digraph: a cluster per member holding a cluster per cell (node names `m<i>_<cell>_<node>`)."""
    import pydot

    graph = pydot.Dot("cells", graph_type="digraph", rankdir="LR", fontname="Helvetica")
    if title:
        graph.set("label", title)
        graph.set("labelloc", "t")
    for index, member in enumerate(members):
        cluster = pydot.Cluster(f"m{index}", label=member.heading())
        for cell_name, cell in zip(("normal", "reduce"), member.genotype.cells):
            prefix = f"m{index}_{cell_name}_"
            subgraph = pydot.Cluster(f"m{index}_{cell_name}", label=f"{_CELL_TITLES[cell_name]}: {cell.text()}")
            cell_drawing = cell_graph(cell)
            for node in cell_drawing.nodes:
                subgraph.add_node(pydot.Node(prefix + node.id, label=node.label, **_DOT_STYLE[node.kind]))
            for edge in cell_drawing.edges:
                attributes = {"label": edge.label} if edge.label else {"style": "dashed"}
                subgraph.add_edge(pydot.Edge(prefix + edge.source, prefix + edge.target, **attributes))
            cluster.add_subgraph(subgraph)
        graph.add_subgraph(cluster)
    return graph.to_string()


_CELL_TITLES = {"normal": "normal cell", "reduce": "reduction cell"}
_COLORS = {"input": "#cfe2f3", "block": "#fff2cc", "output": "#d9ead3"}
_DOT_STYLE = {kind: {"shape": "box" if kind == "output" else "circle", "style": "filled", "fillcolor": color}
              for kind, color in _COLORS.items()}


# --- pictures -----------------------------------------------------------------------------------------------------

# Drawing units (one unit is _INCH inches, the same on both axes) and sizes in points.
_INCH = 0.45
_LAYER_GAP, _ROW_GAP = 2.8, 1.4
_RADIUS = {"input": 0.3, "block": 0.3, "output": 0.5}
_EDGE_FONT, _NODE_FONT, _TEXT_FONT, _NAME_FONT = 7.0, 8.0, 7.0, 9.0
_CHAR = 0.6  # width of an average character, in font sizes (DejaVu Sans, a little generous)
_LABEL_HEIGHT = 0.3  # units
_BENDS = (0.0, 0.5, -0.5, 1.0, -1.0, 1.5, -1.5, 2.0, -2.0, 2.6, -2.6)  # how far an edge's middle may bend, in units
_LABEL_AT = (0.5, 0.62, 0.38, 0.72, 0.28)  # where along its edge a label may sit, best first
_DPI = 100


def render(members: Sequence[Member], image_format: str, title: str | None = None) -> bytes:
    """SVG or PNG bytes of one figure: a row per member (name, hash, text form), its normal and reduction cell."""
    if image_format not in PICTURE_FORMATS:
        raise ValueError(f"render draws {', '.join(PICTURE_FORMATS)}; got {image_format!r}")
    if not members:
        raise ValueError("render needs at least one member")
    import matplotlib
    from matplotlib.figure import Figure

    rows = [[_CellDrawing.of(cell) for cell in member.genotype.cells] for member in members]
    width = max(drawing.width for row in rows for drawing in row)  # one box size, so one scale, for every cell
    height = max(drawing.height for row in rows for drawing in row)
    cell_w, cell_h = width * _INCH, height * _INCH
    margin, gap = 0.3, 0.3
    figure_w = 2 * cell_w + gap + 2 * margin
    wrap = max(40, int(figure_w * 72 / (_TEXT_FONT * _CHAR)))
    headings = [(member.heading(), textwrap.wrap(member.genotype.text(), wrap)) for member in members]
    heading_h = [0.3 + len(lines) * _TEXT_FONT * 1.35 / 72 + 0.25 for _, lines in headings]
    title_h = 0.45 if title else 0.0
    figure_h = title_h + sum(heading_h) + len(members) * (cell_h + gap) + margin

    figure = Figure(figsize=(figure_w, figure_h), dpi=_DPI)
    inch_x, inch_y = 1 / figure_w, 1 / figure_h
    top = 1 - margin * inch_y
    if title:
        figure.text(0.5, top, title, ha="center", va="top", fontsize=11, fontweight="bold", parse_math=False)
        top -= title_h * inch_y
    for (heading, lines), drawings, heading_height in zip(headings, rows, heading_h):
        figure.text(margin * inch_x, top, heading, ha="left", va="top", fontsize=_NAME_FONT, fontweight="bold",
                    parse_math=False)
        figure.text(margin * inch_x, top - 0.28 * inch_y, "\n".join(lines), ha="left", va="top",
                    fontsize=_TEXT_FONT, family="monospace", linespacing=1.35, parse_math=False)
        top -= heading_height * inch_y
        for column, (cell_name, drawing) in enumerate(zip(_CELL_TITLES, drawings)):
            left = margin + column * (cell_w + gap)
            axes = figure.add_axes((left * inch_x, top - cell_h * inch_y, cell_w * inch_x, cell_h * inch_y))
            drawing.draw(axes, width, height)
            axes.set_title(_CELL_TITLES[cell_name], fontsize=_NAME_FONT, pad=2)
        top -= (cell_h + gap) * inch_y

    buffer = io.BytesIO()
    # Text stays text in the SVG (searchable, small); fixed ids and no date make the same input the same bytes.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "improve_nas"}):
        figure.savefig(buffer, format=image_format, metadata={"Date": None} if image_format == "svg" else None)
    return buffer.getvalue()


def _label_width(text: str, font: float = _EDGE_FONT) -> float:
    return len(text) * font * _CHAR / 72 / _INCH


@dataclasses.dataclass
class _Curve:
    """An edge as a quadratic Bézier from `start` over `control` to `end`, in drawing units; its label at
    parameter `label_at`."""

    edge: Edge
    start: tuple[float, float]
    control: tuple[float, float]
    end: tuple[float, float]
    label_at: float = 0.5

    @property
    def label_centre(self) -> tuple[float, float]:
        return self.at(self.label_at)

    def at(self, t: float) -> tuple[float, float]:
        return tuple((1 - t) ** 2 * a + 2 * (1 - t) * t * c + t ** 2 * b
                     for a, c, b in zip(self.start, self.control, self.end))


@dataclasses.dataclass
class _CellDrawing:
    """A cell's graph laid out in drawing units: node centres, edge curves, and the box they fill."""

    graph: CellGraph
    centres: dict[str, tuple[float, float]]
    curves: list[_Curve]
    box: tuple[float, float, float, float]  # x0, y0, x1, y1

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @classmethod
    def of(cls, cell: space.Cell) -> _CellDrawing:
        graph = cell_graph(cell)
        centres = {name: (layer * _LAYER_GAP, row * _ROW_GAP) for name, (layer, row) in layered_layout(graph).items()}
        kinds = {node.id: node.kind for node in graph.nodes}
        curves: list[_Curve] = []
        labels: list[tuple[float, float, float]] = []  # centre x, y and width of every placed label
        for edge in graph.edges:
            curve = _route(edge, centres, kinds, labels, curves)
            curves.append(curve)
            if edge.label:
                labels.append((*curve.label_centre, _label_width(edge.label)))
        points = [(x + dx * _RADIUS[kinds[n]], y + dy * _RADIUS[kinds[n]])
                  for n, (x, y) in centres.items() for dx, dy in ((-1, -1), (1, 1))]
        points += [curve.at(t / 8) for curve in curves for t in range(9)]
        points += [(x + sign * w / 2, y + sign * _LABEL_HEIGHT / 2) for x, y, w in labels for sign in (-1, 1)]
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        pad = 0.15
        return cls(graph, centres, curves, (min(xs) - pad, min(ys) - pad, max(xs) + pad, max(ys) + pad))

    def draw(self, axes, width: float, height: float) -> None:
        """Draws into `axes`, whose box is `width` x `height` units (the largest cell's: one scale everywhere)."""
        from matplotlib.patches import Circle, FancyArrowPatch
        from matplotlib.path import Path

        x0, y0, _, y1 = self.box
        axes.set_xlim(x0, x0 + width)  # left-aligned: layers line up across rows
        axes.set_ylim((y0 + y1 - height) / 2, (y0 + y1 + height) / 2)
        axes.set_aspect("equal", adjustable="datalim")
        axes.axis("off")
        kinds = {node.id: node.kind for node in self.graph.nodes}
        for curve in self.curves:
            start, end = _trimmed(curve, _RADIUS[kinds[curve.edge.source]], _RADIUS[kinds[curve.edge.target]])
            path = Path([start, curve.control, end], [Path.MOVETO, Path.CURVE3, Path.CURVE3])
            axes.add_patch(FancyArrowPatch(path=path, arrowstyle="-|>", mutation_scale=9, linewidth=0.9,
                                           color="#555555", linestyle="-" if curve.edge.label else "--", zorder=1))
            if curve.edge.label:
                axes.text(*curve.label_centre, curve.edge.label, ha="center", va="center", fontsize=_EDGE_FONT,
                          zorder=3, parse_math=False,
                          bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.9})
        for node in self.graph.nodes:
            x, y = self.centres[node.id]
            radius = _RADIUS[node.kind]
            axes.add_patch(Circle((x, y), radius, facecolor=_COLORS[node.kind], edgecolor="#333333", zorder=2))
            axes.text(x, y, node.label, ha="center", va="center", fontsize=_NODE_FONT, zorder=4, parse_math=False)


def _route(edge: Edge, centres: dict[str, tuple[float, float]], kinds: dict[str, str],
           labels: list[tuple[float, float, float]], placed: list[_Curve]) -> _Curve:
    """The bend and label position of `edge` with the fewest collisions: the curve crossing a node other than its
    ends or retracing an earlier edge between the same nodes, its label overlapping a placed label or a node.
    Ties go to the straighter curve with the label nearer its middle."""
    best = None
    for bend in _BENDS:
        curve = _curve(edge, centres, bend)
        samples = [curve.at(t / 16) for t in range(2, 15)]
        path_clash = sum(any(math.hypot(px - x, py - y) < _RADIUS[kinds[name]] + 0.12 for px, py in samples)
                         for name, (x, y) in centres.items() if name not in (edge.source, edge.target))
        path_clash += 2 * sum(other.edge.source == edge.source and other.edge.target == edge.target
                              and math.dist(other.control, curve.control) < 0.5 for other in placed)
        for label_at in _LABEL_AT if edge.label else (0.5,):
            clash = path_clash + (_label_collisions(edge.label, curve.at(label_at), centres, kinds, labels)
                                  if edge.label else 0)
            key = (clash, abs(bend) + abs(label_at - 0.5))
            if best is None or key < best[0]:
                best = (key, dataclasses.replace(curve, label_at=label_at))
    return best[1]


def _curve(edge: Edge, centres: dict[str, tuple[float, float]], bend: float) -> _Curve:
    """The quadratic Bézier between the nodes' centres whose middle lies `bend` units off the straight line."""
    (ax, ay), (bx, by) = centres[edge.source], centres[edge.target]
    length = math.hypot(bx - ax, by - ay) or 1.0
    normal = (-(by - ay) / length, (bx - ax) / length)
    control = ((ax + bx) / 2 + 2 * bend * normal[0], (ay + by) / 2 + 2 * bend * normal[1])
    return _Curve(edge, (ax, ay), control, (bx, by))


def _label_collisions(label: str, centre: tuple[float, float], centres: dict[str, tuple[float, float]],
                      kinds: dict[str, str], labels: list[tuple[float, float, float]]) -> int:
    (mx, my), width = centre, _label_width(label)
    clash = sum(abs(mx - x) < (width + w) / 2 + 0.05 and abs(my - y) < _LABEL_HEIGHT + 0.02 for x, y, w in labels)
    return clash + sum(abs(mx - x) < width / 2 + _RADIUS[kinds[name]] and abs(my - y) < _LABEL_HEIGHT / 2 +
                       _RADIUS[kinds[name]] for name, (x, y) in centres.items())


def _trimmed(curve: _Curve, start_radius: float, end_radius: float):
    """The curve's ends moved onto the boundaries of their nodes (along the tangents, which point at the control)."""
    def towards(point, target, distance):
        length = math.dist(point, target) or 1.0
        return tuple(p + (t - p) * distance / length for p, t in zip(point, target))

    return towards(curve.start, curve.control, start_radius), towards(curve.end, curve.control, end_radius + 0.02)
