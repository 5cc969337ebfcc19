//! Inline SVG charts (the score heatmap and line charts), plus the pieces every SVG in this crate
//! shares: the one number formatter, the colour-blind-safe palettes and the accessible `<svg>` shell.
//!
//! Conventions, kept by [`crate::lineage`] too:
//! - every SVG has `role="img"`, a `<title>` and a `<desc>` as its first children and
//!   `aria-labelledby` naming both (ids start with the caller's `id_prefix`, so they are unique);
//! - every number shown goes through [`number`] (4 decimals) and is printed as text, never shown
//!   only as a colour;
//! - all user text is escaped by maud; long labels are cut with an ellipsis, the full text sits in a
//!   nested `<title>` tooltip;
//! - elements carry CSS classes for restyling *and* explicit fill/stroke attributes, so the SVG reads
//!   well without any stylesheet;
//! - SVG elements are always written with a closing tag (`rect … {}`): maud writes HTML, and in
//!   inline SVG an unclosed `<rect>` would swallow its siblings.

use maud::{Markup, html};

/// An sRGB colour.
pub(crate) type Rgb = [u8; 3];

/// The Okabe–Ito palette for categories: orange, sky blue, bluish green, yellow, blue, vermillion,
/// reddish purple, black.
pub(crate) const OKABE_ITO: [Rgb; 8] = [
    [0xE6, 0x9F, 0x00],
    [0x56, 0xB4, 0xE9],
    [0x00, 0x9E, 0x73],
    [0xF0, 0xE4, 0x42],
    [0x00, 0x72, 0xB2],
    [0xD5, 0x5E, 0x00],
    [0xCC, 0x79, 0xA7],
    [0x00, 0x00, 0x00],
];

/// Viridis sampled at 9 even stops (dark purple → yellow), the heatmap's sequential scale.
const VIRIDIS: [Rgb; 9] = [
    [0x44, 0x01, 0x54],
    [0x47, 0x2D, 0x7B],
    [0x3B, 0x52, 0x8B],
    [0x2C, 0x72, 0x8E],
    [0x21, 0x90, 0x8C],
    [0x27, 0xAD, 0x81],
    [0x5D, 0xC8, 0x63],
    [0xAA, 0xDC, 0x32],
    [0xFD, 0xE7, 0x25],
];

pub(crate) const FONT: &str = "system-ui, sans-serif";
const DARK_TEXT: &str = "#000000";
const LIGHT_TEXT: &str = "#ffffff";
/// Ink for axes, labels and legends on the (white) page.
pub(crate) const INK: &str = "#222222";
/// A generous estimate of one character's width at 12 px, used to size margins for labels.
const CHAR_W: f64 = 7.0;
const MARGIN: f64 = 16.0;
/// Longest label (in characters) drawn before cutting it with an ellipsis.
const LABEL_CHARS: usize = 28;

const CELL_W: f64 = 76.0;
const CELL_H: f64 = 30.0;
const SCALE_BAR_W: f64 = 200.0;
const SCALE_BAR_H: f64 = 12.0;

const PLOT_H: f64 = 240.0;
const TARGET_TICKS: usize = 5;
/// Order in which lines take Okabe–Ito colours: the strongest contrasts on white first, yellow last.
const LINE_COLOURS: [usize; 8] = [4, 5, 2, 6, 0, 1, 7, 3];
/// Dash patterns, cycled together with the colours so lines differ without colour too.
const LINE_DASHES: [Option<&str>; 6] = [
    None,
    Some("7 4"),
    Some("2 3"),
    Some("9 3 2 3"),
    Some("14 5"),
    Some("4 2 1 2"),
];

/// The number formatter every chart uses: 4 decimals, `n/a` for NaN and infinities.
pub fn number(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.4}")
    } else {
        "n/a".to_owned()
    }
}

/// A coordinate, with one decimal (enough for pixels, and it keeps the markup short).
pub(crate) fn px(x: f64) -> String {
    format!("{x:.1}")
}

pub(crate) fn hex([r, g, b]: Rgb) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// WCAG relative luminance of an sRGB colour.
fn luminance(c: Rgb) -> f64 {
    let linear = |v: u8| {
        let v = f64::from(v) / 255.0;
        if v <= 0.04045 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * linear(c[0]) + 0.7152 * linear(c[1]) + 0.0722 * linear(c[2])
}

/// Black or white text, whichever has the higher WCAG contrast ratio against `fill`.
pub(crate) fn text_on(fill: Rgb) -> &'static str {
    let l = luminance(fill);
    let against_black = (l + 0.05) / 0.05;
    let against_white = 1.05 / (l + 0.05);
    if against_black >= against_white {
        DARK_TEXT
    } else {
        LIGHT_TEXT
    }
}

/// `s` cut to at most `max_chars` characters, the last one an ellipsis when anything was cut.
pub(crate) fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_owned()
    } else {
        let mut cut: String = s.chars().take(max_chars.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// Estimated width of the widest label once cut to `max_chars`.
fn label_width(labels: &[String], max_chars: usize) -> f64 {
    let chars = labels
        .iter()
        .map(|l| l.chars().count().min(max_chars))
        .max()
        .unwrap_or(0);
    chars as f64 * CHAR_W
}

/// The accessible `<svg>` shell: natural size (the page scrolls it rather than shrinking text),
/// `role="img"`, and `<title>`/`<desc>` first, named by `aria-labelledby`.
pub(crate) fn svg(
    class: &str,
    id_prefix: &str,
    (width, height): (f64, f64),
    title: &str,
    desc: &str,
    body: Markup,
) -> Markup {
    let title_id = format!("{id_prefix}-title");
    let desc_id = format!("{id_prefix}-desc");
    html! {
        svg xmlns="http://www.w3.org/2000/svg" class=(class) role="img"
            aria-labelledby=(format!("{title_id} {desc_id}"))
            width=(px(width)) height=(px(height))
            viewBox=(format!("0 0 {} {}", px(width), px(height)))
            font-family=(FONT) font-size="12" {
            title id=(title_id) { (title) }
            desc id=(desc_id) { (desc) }
            (body)
        }
    }
}

/// A small SVG that only says `message` (e.g. "no data yet"), still with its title and desc.
pub(crate) fn placeholder(
    class: &str,
    id_prefix: &str,
    title: &str,
    desc: &str,
    message: &str,
) -> Markup {
    let body = html! {
        text class="empty" x="12" y="24" dominant-baseline="central" font-size="13" fill=(INK) {
            (message)
        }
    };
    svg(class, id_prefix, (240.0, 48.0), title, desc, body)
}

/// The sequential scale at `t` ∈ [0, 1] (clamped): linear interpolation between the viridis stops.
fn scale(t: f64) -> Rgb {
    let pos = t.clamp(0.0, 1.0) * (VIRIDIS.len() - 1) as f64;
    let i = (pos.floor() as usize).min(VIRIDIS.len() - 2);
    let frac = pos - i as f64;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    let mix =
        |k: usize| (f64::from(a[k]) + (f64::from(b[k]) - f64::from(a[k])) * frac).round() as u8;
    [mix(0), mix(1), mix(2)]
}

/// The cell colour for `value` on a scale running from `min` to `max`; a degenerate scale
/// (min = max, or not finite) puts every value in the middle.
fn cell_colour(value: f64, min: f64, max: f64) -> Rgb {
    let span = max - min;
    if span != 0.0 && span.is_finite() {
        scale((value - min) / span)
    } else {
        scale(0.5)
    }
}

/// A score matrix: one row per evaluation point (e.g. "after round 2"), one column per task.
pub struct Heatmap<'a> {
    pub row_labels: &'a [String],
    pub col_labels: &'a [String],
    /// `cells[row][col]`; missing rows or columns count as `None`.
    pub cells: &'a [Vec<Option<f64>>],
    /// The values mapped to the two ends of the colour scale (values outside are clamped).
    pub min: f64,
    pub max: f64,
}

/// The heatmap: each cell coloured on the viridis scale with its value printed in it (`—` and a
/// hatched fill where there is none), row labels on the left, column labels slanted on top, and a
/// colour bar with `min` and `max` printed under the grid.
pub fn heatmap(h: &Heatmap<'_>, id_prefix: &str, title: &str, desc: &str) -> Markup {
    let (rows, cols) = (h.row_labels.len(), h.col_labels.len());
    if rows == 0 || cols == 0 {
        return placeholder("chart heatmap", id_prefix, title, desc, "no data yet");
    }
    let value = |r: usize, c: usize| {
        h.cells
            .get(r)
            .and_then(|row| row.get(c))
            .copied()
            .flatten()
            .filter(|v| v.is_finite())
    };
    let any_missing = (0..rows).any(|r| (0..cols).any(|c| value(r, c).is_none()));

    // Column labels are drawn at -45°, so they need (and overhang to the right by) about
    // their length over √2.
    let col_label_extent = label_width(h.col_labels, LABEL_CHARS) * std::f64::consts::FRAC_1_SQRT_2;
    let left = MARGIN + label_width(h.row_labels, LABEL_CHARS) + 12.0;
    let top = MARGIN + col_label_extent + 12.0;
    let grid_w = cols as f64 * CELL_W;
    let bar_y = top + rows as f64 * CELL_H + 20.0;
    let legend_w = SCALE_BAR_W + if any_missing { 120.0 } else { 0.0 };
    let width = (left + grid_w - CELL_W / 2.0 + col_label_extent + 8.0)
        .max(left + grid_w)
        .max(left + legend_w)
        + MARGIN;
    let height = bar_y + SCALE_BAR_H + 20.0 + MARGIN;
    let gradient_id = format!("{id_prefix}-scale");
    let hatch_id = format!("{id_prefix}-hatch");
    let stop_count = VIRIDIS.len() - 1;

    let body = html! {
        defs {
            linearGradient id=(gradient_id) x1="0" y1="0" x2="1" y2="0" {
                @for (i, stop) in VIRIDIS.iter().enumerate() {
                    stop offset=(format!("{:.3}", i as f64 / stop_count as f64)) stop-color=(hex(*stop)) {}
                }
            }
            pattern id=(hatch_id) width="6" height="6" patternUnits="userSpaceOnUse"
                patternTransform="rotate(45)" {
                rect width="6" height="6" fill="#eeeeee" {}
                line x1="0" y1="0" x2="0" y2="6" stroke="#aaaaaa" stroke-width="2" {}
            }
        }
        g class="axis row-labels" fill=(INK) {
            @for (r, label) in h.row_labels.iter().enumerate() {
                text class="row-label" x=(px(left - 8.0)) y=(px(top + (r as f64 + 0.5) * CELL_H))
                    text-anchor="end" dominant-baseline="central" {
                    title { (label) }
                    (truncate(label, LABEL_CHARS))
                }
            }
        }
        g class="axis col-labels" fill=(INK) {
            @for (c, label) in h.col_labels.iter().enumerate() {
                @let (x, y) = (left + (c as f64 + 0.5) * CELL_W, top - 8.0);
                text class="col-label" x=(px(x)) y=(px(y)) text-anchor="start"
                    transform=(format!("rotate(-45 {} {})", px(x), px(y))) {
                    title { (label) }
                    (truncate(label, LABEL_CHARS))
                }
            }
        }
        g class="cells" {
            @for (r, row_label) in h.row_labels.iter().enumerate() {
                @for (c, col_label) in h.col_labels.iter().enumerate() {
                    @let (x, y) = (left + c as f64 * CELL_W, top + r as f64 * CELL_H);
                    @let (cx, cy) = (px(x + CELL_W / 2.0), px(y + CELL_H / 2.0));
                    @match value(r, c) {
                        Some(v) => {
                            @let fill = cell_colour(v, h.min, h.max);
                            rect class="cell" x=(px(x)) y=(px(y)) width=(px(CELL_W)) height=(px(CELL_H))
                                fill=(hex(fill)) stroke="#ffffff" stroke-width="1" {
                                title { (row_label) " · " (col_label) ": " (number(v)) }
                            }
                            text class="cell-value" data-row=(r) data-col=(c) x=(cx) y=(cy)
                                text-anchor="middle" dominant-baseline="central" pointer-events="none"
                                fill=(text_on(fill)) { (number(v)) }
                        }
                        None => {
                            rect class="cell cell-missing" x=(px(x)) y=(px(y)) width=(px(CELL_W))
                                height=(px(CELL_H)) fill=(format!("url(#{hatch_id})")) stroke="#ffffff"
                                stroke-width="1" {
                                title { (row_label) " · " (col_label) ": no value" }
                            }
                            text class="cell-value cell-missing" data-row=(r) data-col=(c) x=(cx) y=(cy)
                                text-anchor="middle" dominant-baseline="central" pointer-events="none"
                                fill=(INK) { "—" }
                        }
                    }
                }
            }
        }
        g class="legend" fill=(INK) {
            rect class="scale-bar" x=(px(left)) y=(px(bar_y)) width=(px(SCALE_BAR_W)) height=(px(SCALE_BAR_H))
                fill=(format!("url(#{gradient_id})")) stroke=(INK) stroke-width="0.5" {}
            @let label_y = px(bar_y + SCALE_BAR_H + 10.0);
            text class="scale-min" x=(px(left)) y=(label_y) text-anchor="start" dominant-baseline="central" {
                (number(h.min))
            }
            text class="scale-max" x=(px(left + SCALE_BAR_W)) y=(label_y) text-anchor="end"
                dominant-baseline="central" { (number(h.max)) }
            @if any_missing {
                @let x = left + SCALE_BAR_W + 24.0;
                rect x=(px(x)) y=(px(bar_y)) width=(px(SCALE_BAR_H)) height=(px(SCALE_BAR_H))
                    fill=(format!("url(#{hatch_id})")) stroke=(INK) stroke-width="0.5" {}
                text x=(px(x + SCALE_BAR_H + 6.0)) y=(px(bar_y + SCALE_BAR_H / 2.0)) dominant-baseline="central" {
                    "— no value"
                }
            }
        }
    };
    svg(
        "chart heatmap",
        id_prefix,
        (width, height),
        title,
        desc,
        body,
    )
}

/// Round tick values covering `[lo, hi]`: the step is 1, 2 or 5 × 10^k, chosen so that about
/// `target` steps span the range, and the first and last ticks are the multiples of the step just
/// outside it. A zero-width range is widened first, so there are always at least two ticks.
fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let (mut lo, mut hi) = if lo.is_finite() && hi.is_finite() && lo <= hi {
        (lo, hi)
    } else {
        (0.0, 1.0)
    };
    if hi - lo <= 1e-9 * lo.abs().max(hi.abs()).max(1.0) {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() / 10.0 };
        lo -= pad;
        hi += pad;
    }
    let raw = (hi - lo) / target as f64;
    let mut exp = raw.log10().floor() as i32;
    let fraction = raw / 10f64.powi(exp);
    // The tolerances keep a raw step of exactly 0.2 (say) from becoming 0.5 through rounding.
    let mantissa = if fraction <= 1.0 + 1e-9 {
        1
    } else if fraction <= 2.0 + 1e-9 {
        2
    } else if fraction <= 5.0 + 1e-9 {
        5
    } else {
        exp += 1;
        1
    };
    let step = f64::from(mantissa) * 10f64.powi(exp);
    let first = (lo / step + 1e-9).floor() as i64;
    let last = (hi / step - 1e-9).ceil() as i64;
    // k × mantissa is an exact integer and 10^|exp| an exact power of ten, so one multiplication or
    // division gives the double nearest the decimal tick (0.3, not 0.30000000000000004).
    let tick = |k: i64| {
        let units = (k * i64::from(mantissa)) as f64;
        if exp >= 0 {
            units * 10f64.powi(exp)
        } else {
            units / 10f64.powi(-exp)
        }
    };
    (first..=last).map(tick).collect()
}

/// One series of a line chart; `points[i]` belongs to the chart's `x_labels[i]`, `None` is a gap.
pub struct Line {
    pub name: String,
    pub points: Vec<Option<f64>>,
}

pub struct LineChart<'a> {
    pub x_labels: &'a [String],
    pub lines: &'a [Line],
    pub x_title: &'a str,
    pub y_title: &'a str,
    /// Include 0 in the y range and draw a dashed line there.
    pub zero_line: bool,
}

/// Runs of consecutive finite values, each as `(x index, value)` pairs; `None` and non-finite
/// values split runs.
fn runs(points: &[Option<f64>]) -> Vec<Vec<(usize, f64)>> {
    let mut runs = Vec::new();
    let mut current = Vec::new();
    for (i, p) in points.iter().enumerate() {
        match p.filter(|v| v.is_finite()) {
            Some(v) => current.push((i, v)),
            None if !current.is_empty() => runs.push(std::mem::take(&mut current)),
            None => {}
        }
    }
    if !current.is_empty() {
        runs.push(current);
    }
    runs
}

/// A line chart: evenly spaced x labels, a y axis with round ticks and gridlines, one polyline per
/// run of values (gaps where a point is `None`), a circle per point carrying its value, and a legend
/// on the right. Each line has its own colour and dash pattern, and every other line hollow markers.
pub fn line_chart(c: &LineChart<'_>, id_prefix: &str, title: &str, desc: &str) -> Markup {
    let n = c.x_labels.len();
    let values = c
        .lines
        .iter()
        .flat_map(|line| line.points.iter().take(n).flatten().copied())
        .filter(|v| v.is_finite());
    let Some((lo, hi)) = values.fold(None, |range: Option<(f64, f64)>, v| {
        Some(range.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))))
    }) else {
        return placeholder("chart line-chart", id_prefix, title, desc, "no data yet");
    };
    let (lo, hi) = if c.zero_line {
        (lo.min(0.0), hi.max(0.0))
    } else {
        (lo, hi)
    };
    let ticks = nice_ticks(lo, hi, TARGET_TICKS);
    let (y_min, y_max) = match (ticks.first(), ticks.last()) {
        (Some(&first), Some(&last)) => (first, last),
        _ => (lo, hi),
    };
    let tick_labels: Vec<String> = ticks.iter().map(|&t| number(t)).collect();

    let left = MARGIN + 20.0 + label_width(&tick_labels, LABEL_CHARS) + 10.0;
    let step = (label_width(c.x_labels, 20) + 12.0).clamp(48.0, 160.0);
    let plot_top = MARGIN;
    let plot_bottom = plot_top + PLOT_H;
    let right = left + step * n as f64;
    let legend_x = right + 24.0;
    let names: Vec<String> = c.lines.iter().map(|l| l.name.clone()).collect();
    let width = legend_x + 40.0 + label_width(&names, LABEL_CHARS) + MARGIN;
    let height = (plot_bottom + 52.0).max(plot_top + 20.0 * c.lines.len() as f64) + MARGIN;
    let x_at = |i: usize| left + step * (i as f64 + 0.5);
    let y_at = |v: f64| plot_top + (y_max - v) / (y_max - y_min) * PLOT_H;
    let style = |i: usize| {
        let colour = hex(OKABE_ITO[LINE_COLOURS[i % LINE_COLOURS.len()]]);
        let marker_fill = if i.is_multiple_of(2) {
            colour.clone()
        } else {
            "#ffffff".to_owned()
        };
        (colour, LINE_DASHES[i % LINE_DASHES.len()], marker_fill)
    };

    let body = html! {
        g class="grid" {
            @for &t in &ticks {
                line x1=(px(left)) x2=(px(right)) y1=(px(y_at(t))) y2=(px(y_at(t))) stroke="#dddddd" stroke-width="1" {}
            }
        }
        @if c.zero_line {
            line class="zero-line" x1=(px(left)) x2=(px(right)) y1=(px(y_at(0.0))) y2=(px(y_at(0.0)))
                stroke="#555555" stroke-width="1.2" stroke-dasharray="5 4" {}
        }
        g class="axis y-axis" fill=(INK) {
            line x1=(px(left)) x2=(px(left)) y1=(px(plot_top)) y2=(px(plot_bottom)) stroke=(INK) stroke-width="1" {}
            @for (t, label) in ticks.iter().zip(&tick_labels) {
                text x=(px(left - 6.0)) y=(px(y_at(*t))) text-anchor="end" dominant-baseline="central" { (label) }
            }
            @let (tx, ty) = (MARGIN + 6.0, plot_top + PLOT_H / 2.0);
            text class="axis-title" x=(px(tx)) y=(px(ty)) text-anchor="middle" dominant-baseline="central"
                transform=(format!("rotate(-90 {} {})", px(tx), px(ty))) { (c.y_title) }
        }
        g class="axis x-axis" fill=(INK) {
            line x1=(px(left)) x2=(px(right)) y1=(px(plot_bottom)) y2=(px(plot_bottom)) stroke=(INK) stroke-width="1" {}
            @for (i, label) in c.x_labels.iter().enumerate() {
                text x=(px(x_at(i))) y=(px(plot_bottom + 14.0)) text-anchor="middle" dominant-baseline="central" {
                    title { (label) }
                    (truncate(label, 20))
                }
            }
            text class="axis-title" x=(px((left + right) / 2.0)) y=(px(plot_bottom + 38.0)) text-anchor="middle"
                dominant-baseline="central" { (c.x_title) }
        }
        @for (i, line) in c.lines.iter().enumerate() {
            @let (colour, dash, marker_fill) = style(i);
            g class=(format!("series series-{i}")) {
                @for run in runs(&line.points[..line.points.len().min(n)]) {
                    @if run.len() > 1 {
                        polyline class="line-segment" fill="none" stroke=(colour) stroke-width="2"
                            stroke-dasharray=[dash]
                            points=(run.iter().map(|&(x, v)| format!("{},{}", px(x_at(x)), px(y_at(v)))).collect::<Vec<_>>().join(" ")) {}
                    }
                    @for &(x, v) in &run {
                        circle class="point" data-value=(number(v)) cx=(px(x_at(x))) cy=(px(y_at(v))) r="4"
                            fill=(marker_fill) stroke=(colour) stroke-width="2" {
                            title { (line.name) " · " (c.x_labels[x]) ": " (number(v)) }
                        }
                    }
                }
            }
        }
        g class="legend" fill=(INK) {
            @for (i, line) in c.lines.iter().enumerate() {
                @let (colour, dash, marker_fill) = style(i);
                @let y = plot_top + 8.0 + 20.0 * i as f64;
                line x1=(px(legend_x)) x2=(px(legend_x + 28.0)) y1=(px(y)) y2=(px(y)) stroke=(colour)
                    stroke-width="2" stroke-dasharray=[dash] {}
                circle cx=(px(legend_x + 14.0)) cy=(px(y)) r="4" fill=(marker_fill) stroke=(colour) stroke-width="2" {}
                text x=(px(legend_x + 36.0)) y=(px(y)) dominant-baseline="central" {
                    title { (line.name) }
                    (truncate(&line.name, LABEL_CHARS))
                }
            }
        }
    };
    svg(
        "chart line-chart",
        id_prefix,
        (width, height),
        title,
        desc,
        body,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    /// The text of every `class="cell-value"` element, keyed by its `data-row`/`data-col`.
    fn cell_texts(markup: &str) -> Vec<((usize, usize), String)> {
        markup
            .split("<text class=\"cell-value")
            .skip(1)
            .map(|rest| {
                let attr = |name: &str| -> usize {
                    let start = rest.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                    let len = rest[start..].find('"').unwrap();
                    rest[start..start + len].parse().unwrap()
                };
                let open_end = rest.find('>').unwrap() + 1;
                let close = rest.find("</text>").unwrap();
                (
                    (attr("data-row"), attr("data-col")),
                    rest[open_end..close].to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn number_prints_four_decimals_and_na() {
        assert_eq!(number(0.8125), "0.8125");
        assert_eq!(number(1.0), "1.0000");
        assert_eq!(number(-0.41), "-0.4100");
        assert_eq!(number(0.123_456), "0.1235");
        assert_eq!(number(f64::NAN), "n/a");
        assert_eq!(number(f64::INFINITY), "n/a");
        assert_eq!(number(f64::NEG_INFINITY), "n/a");
    }

    #[test]
    fn nice_ticks_are_round_and_cover_the_range() {
        assert_eq!(
            nice_ticks(-0.41, 0.05, 5),
            vec![-0.5, -0.4, -0.3, -0.2, -0.1, 0.0, 0.1]
        );
        assert_eq!(nice_ticks(0.0, 1.0, 5), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(
            nice_ticks(0.62, 0.71, 5),
            vec![0.62, 0.64, 0.66, 0.68, 0.7, 0.72]
        );
        assert_eq!(
            nice_ticks(3.0, 870.0, 5),
            vec![0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]
        );
        assert_eq!(
            nice_ticks(-3.0, -1.0, 5),
            vec![-3.0, -2.5, -2.0, -1.5, -1.0]
        );
    }

    #[test]
    fn nice_ticks_widen_a_zero_range() {
        assert_eq!(
            nice_ticks(0.5, 0.5, 5),
            vec![0.44, 0.46, 0.48, 0.5, 0.52, 0.54, 0.56]
        );
        assert_eq!(nice_ticks(0.0, 0.0, 5), vec![-1.0, -0.5, 0.0, 0.5, 1.0]);
        assert_eq!(
            nice_ticks(f64::NAN, 1.0, 5),
            vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
        );
    }

    #[test]
    fn scale_ends_are_the_end_stops() {
        assert_eq!(cell_colour(0.2, 0.2, 0.9), VIRIDIS[0]);
        assert_eq!(cell_colour(0.9, 0.2, 0.9), VIRIDIS[8]);
        // Clamped outside the range.
        assert_eq!(cell_colour(-5.0, 0.2, 0.9), VIRIDIS[0]);
        assert_eq!(cell_colour(5.0, 0.2, 0.9), VIRIDIS[8]);
        // Exactly on an inner stop, and halfway between two stops.
        assert_eq!(scale(0.5), VIRIDIS[4]);
        assert_eq!(scale(1.0 / 16.0), [0x46, 0x17, 0x68]);
        // A degenerate scale does not divide by zero.
        assert_eq!(cell_colour(0.3, 0.3, 0.3), VIRIDIS[4]);
    }

    #[test]
    fn text_colour_contrasts_with_the_fill() {
        assert_eq!(text_on(VIRIDIS[8]), DARK_TEXT);
        assert_eq!(text_on(VIRIDIS[0]), LIGHT_TEXT);
        assert_eq!(text_on([0xff, 0xff, 0xff]), DARK_TEXT);
        assert_eq!(text_on([0, 0, 0]), LIGHT_TEXT);
    }

    #[test]
    fn heatmap_prints_every_cell_once_and_a_dash_for_missing() {
        let rows = strings(&["after round 1", "after round 2"]);
        let cols = strings(&["fomc", "ner", "qa"]);
        let cells = vec![
            vec![Some(0.8125), None, Some(0.1)],
            // A short row: the missing column counts as `None`.
            vec![Some(0.5), Some(0.25)],
        ];
        let h = Heatmap {
            row_labels: &rows,
            col_labels: &cols,
            cells: &cells,
            min: 0.0,
            max: 1.0,
        };
        let html = heatmap(&h, "hm", "Scores", "Score per task after each round").into_string();
        let texts = cell_texts(&html);
        assert_eq!(texts.len(), 6);
        let expected = [
            ((0, 0), "0.8125"),
            ((0, 1), "—"),
            ((0, 2), "0.1000"),
            ((1, 0), "0.5000"),
            ((1, 1), "0.2500"),
            ((1, 2), "—"),
        ];
        for (key, text) in expected {
            let found: Vec<_> = texts.iter().filter(|(k, _)| *k == key).collect();
            assert_eq!(found.len(), 1, "cell {key:?}");
            assert_eq!(found[0].1, text, "cell {key:?}");
        }
        assert!(html.contains("<title>after round 1 · fomc: 0.8125</title>"));
        assert!(html.contains("<title>after round 2 · qa: no value</title>"));
        // The scale's ends are printed.
        assert!(html.contains(">0.0000</text>") && html.contains(">1.0000</text>"));
        assert!(html.starts_with("<svg"));
        assert!(html.contains("role=\"img\""));
        assert!(html.contains("aria-labelledby=\"hm-title hm-desc\""));
        assert!(html.contains("<title id=\"hm-title\">Scores</title><desc id=\"hm-desc\">"));
    }

    #[test]
    fn heatmap_without_rows_says_so() {
        let h = Heatmap {
            row_labels: &[],
            col_labels: &[],
            cells: &[],
            min: 0.0,
            max: 1.0,
        };
        let html = heatmap(&h, "e", "Scores", "none").into_string();
        assert!(html.contains("no data yet"));
        assert!(html.contains("<title id=\"e-title\">Scores</title>"));
    }

    #[test]
    fn labels_are_escaped() {
        let evil = strings(&["<script>alert(1)</script>"]);
        let cells = vec![vec![Some(0.5)]];
        let h = Heatmap {
            row_labels: &evil,
            col_labels: &evil,
            cells: &cells,
            min: 0.0,
            max: 1.0,
        };
        let html = heatmap(&h, "x", "<b>t</b>", "\"d\"").into_string();
        assert!(!html.contains("<script>"));
        assert!(!html.contains("<b>"));
        assert!(html.contains("&lt;script&gt;"));

        let lines = [Line {
            name: "<script>".to_owned(),
            points: vec![Some(0.5)],
        }];
        let chart = LineChart {
            x_labels: &evil,
            lines: &lines,
            x_title: "<i>",
            y_title: "<u>",
            zero_line: false,
        };
        let html = line_chart(&chart, "y", "t", "d").into_string();
        assert!(!html.contains("<script>") && !html.contains("<i>") && !html.contains("<u>"));
        assert!(html.contains("&lt;script&gt;"));
    }

    #[test]
    fn line_with_a_gap_draws_two_segments() {
        let x = strings(&["r0", "r1", "r2", "r3", "r4"]);
        let lines = [Line {
            name: "fomc".to_owned(),
            points: vec![Some(0.5), Some(0.6), None, Some(0.7), Some(0.75)],
        }];
        let chart = LineChart {
            x_labels: &x,
            lines: &lines,
            x_title: "round",
            y_title: "score",
            zero_line: false,
        };
        let html = line_chart(&chart, "lc", "Scores", "fomc per round").into_string();
        assert_eq!(html.matches("<polyline").count(), 2);
        assert_eq!(html.matches("class=\"point\"").count(), 4);
        assert!(html.contains("data-value=\"0.7500\""));
        assert!(html.contains("<title>fomc · r3: 0.7000</title>"));
        assert!(!html.contains("zero-line"));
    }

    #[test]
    fn line_chart_handles_degenerate_data() {
        let x = strings(&["r0", "r1"]);
        let no_lines = LineChart {
            x_labels: &x,
            lines: &[],
            x_title: "",
            y_title: "",
            zero_line: true,
        };
        assert!(
            line_chart(&no_lines, "a", "t", "d")
                .into_string()
                .contains("no data yet")
        );

        let one_point = [Line {
            name: "a".to_owned(),
            points: vec![Some(0.3)],
        }];
        let chart = LineChart {
            x_labels: &x,
            lines: &one_point,
            x_title: "",
            y_title: "",
            zero_line: false,
        };
        let html = line_chart(&chart, "b", "t", "d").into_string();
        assert_eq!(html.matches("class=\"point\"").count(), 1);
        assert_eq!(html.matches("<polyline").count(), 0);
        assert!(!html.contains("NaN") && !html.contains("inf"));

        let flat = [Line {
            name: "a".to_owned(),
            points: vec![Some(0.3), Some(0.3)],
        }];
        let chart = LineChart {
            x_labels: &x,
            lines: &flat,
            x_title: "",
            y_title: "",
            zero_line: false,
        };
        let html = line_chart(&chart, "c", "t", "d").into_string();
        assert!(!html.contains("NaN") && !html.contains("inf"));
        assert!(html.contains(">0.3000</text>"));

        // Negative values with the zero line: the axis covers both, and the line is drawn.
        let negative = [
            Line {
                name: "a".to_owned(),
                points: vec![Some(-0.41), Some(0.05)],
            },
            Line {
                name: "b".to_owned(),
                points: vec![Some(-0.2), None],
            },
        ];
        let chart = LineChart {
            x_labels: &x,
            lines: &negative,
            x_title: "",
            y_title: "",
            zero_line: true,
        };
        let html = line_chart(&chart, "d", "t", "d").into_string();
        assert!(html.contains("class=\"zero-line\""));
        assert!(html.contains(">-0.5000</text>") && html.contains(">0.1000</text>"));
        assert!(html.contains("class=\"series series-1\""));
    }
}
