//! PNG charts (plotters, bitmap backend): panels stacked over a shared x axis
//! of seconds. Text is drawn with DejaVu Sans embedded from the `dejavu`
//! crate through plotters' `ab_glyph` feature, so no system font is needed.

use std::path::Path;
use std::sync::Once;

use anyhow::anyhow;
use plotters::coord::ranged1d::Ranged;
use plotters::prelude::*;

const FONT: &str = "dejavu-sans";

const PALETTE: [RGBColor; 6] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(90, 90, 90),
];

/// One line on a panel: legend label, colour index into a fixed palette,
/// `(x, y)` points (a `None` y breaks the line).
#[derive(Debug, Clone)]
pub struct Series(pub String, pub usize, pub Vec<(f64, Option<f64>)>);

/// One panel: y axis description, logarithmic y axis (values clamped to at
/// least 0.1), a horizontal reference line with its label, the lines.
#[derive(Debug, Clone)]
pub struct Panel {
    pub y_label: String,
    pub log_y: bool,
    pub reference: Option<(f64, String)>,
    pub series: Vec<Series>,
}

/// Draw `panels` stacked vertically, sharing the x axis (seconds), into a PNG.
pub fn draw(path: &Path, title: &str, x_label: &str, panels: &[Panel]) -> anyhow::Result<()> {
    static FONT_ONCE: Once = Once::new();
    // A bundled, valid TTF: registration cannot fail in practice.
    FONT_ONCE.call_once(|| {
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
    let e = |e: DrawingAreaErrorKind<_>| anyhow!("{e}");
    let root = BitMapBackend::new(path, (1000, 260 * panels.len() as u32 + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let root = root.titled(title, (FONT, 20).into_font()).map_err(e)?;
    let points = |p: &Panel| {
        p.series
            .iter()
            .flat_map(|s| s.2.clone())
            .collect::<Vec<_>>()
    };
    let x_max = panels
        .iter()
        .flat_map(points)
        .map(|(x, _)| x)
        .fold(1.0, f64::max);
    for (panel, area) in panels.iter().zip(root.split_evenly((panels.len(), 1))) {
        let ys = points(panel).into_iter().filter_map(|(_, y)| y);
        let y_max = ys
            .chain(panel.reference.iter().map(|r| r.0))
            .fold(1.0, f64::max);
        let mut builder = ChartBuilder::on(&area);
        builder
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(64);
        // The two axis kinds are different types: one macro, two charts.
        macro_rules! chart {
            ($y:expr, $floor:expr) => {{
                let mut chart = builder.build_cartesian_2d(0f64..x_max, $y).map_err(e)?;
                chart
                    .configure_mesh()
                    .x_desc(x_label)
                    .y_desc(panel.y_label.as_str())
                    .label_style((FONT, 13).into_font())
                    .axis_desc_style((FONT, 14).into_font())
                    .draw()
                    .map_err(e)?;
                draw_lines(&mut chart, panel, $floor, x_max)?;
            }};
        }
        if panel.log_y {
            chart!((0.1f64..y_max * 2.0).log_scale(), 0.1);
        } else {
            chart!(0f64..y_max * 1.1, 0.0);
        }
    }
    root.present().map_err(e)
}

fn draw_lines<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    panel: &Panel,
    floor: f64,
    x_max: f64,
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let e = |e: DrawingAreaErrorKind<_>| anyhow!("{e}");
    let grey = (RGBColor(60, 60, 60), 1);
    let reference = panel.reference.iter().map(|(y, label)| {
        let line = vec![(0.0, Some(*y)), (x_max, Some(*y))];
        (Series(label.clone(), 0, line), grey)
    });
    let lines = panel
        .series
        .iter()
        .map(|s| (s.clone(), (PALETTE[s.1 % PALETTE.len()], 2)));
    for (Series(label, _, points), (color, legend_width)) in lines.chain(reference) {
        // Split at gaps so a missing second does not draw a misleading line.
        let segments = points.split(|(_, y)| y.is_none()).filter(|s| !s.is_empty());
        for (i, seg) in segments.enumerate() {
            let seg = seg.iter().map(|(x, y)| (*x, y.unwrap_or(floor).max(floor)));
            let drawn = chart
                .draw_series(LineSeries::new(seg, color.stroke_width(2)))
                .map_err(e)?;
            if i == 0 {
                drawn.label(label.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(legend_width))
                });
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 13).into_font())
        .draw()
        .map_err(e)
}
