//! PNG charts (plotters, bitmap backend). Text is drawn with DejaVu Sans
//! embedded from the `dejavu` crate through plotters' `ab_glyph` feature, so
//! no system font (or fontconfig) is needed.

use std::path::Path;
use std::sync::Once;

use anyhow::anyhow;
use plotters::prelude::*;
use plotters::style::FontStyle;

const FONT: &str = "dejavu-sans";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // A bundled, valid TTF: registration cannot fail in practice.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

/// One line on a panel.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Colour index into a fixed palette.
    pub color: usize,
    /// `(x, y)` points; `None` y values break the line.
    pub points: Vec<(f64, Option<f64>)>,
}

/// One panel (a y axis and its lines).
#[derive(Debug, Clone)]
pub struct Panel {
    /// Y axis description.
    pub y_label: String,
    /// Logarithmic y axis (values are clamped to at least `0.1`).
    pub log_y: bool,
    /// Horizontal reference line (e.g. a threshold), with its label.
    pub reference: Option<(f64, String)>,
    /// The lines.
    pub series: Vec<Series>,
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(90, 90, 90),
];

/// Draw `panels` stacked vertically, sharing the x axis (seconds), into a PNG.
pub fn draw(path: &Path, title: &str, x_label: &str, panels: &[Panel]) -> anyhow::Result<()> {
    register_font();
    let height = 260 * panels.len() as u32 + 40;
    let root = BitMapBackend::new(path, (1000, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let root = root
        .titled(title, (FONT, 20).into_font())
        .map_err(|e| anyhow!("{e}"))?;
    let areas = root.split_evenly((panels.len(), 1));
    let x_max = panels
        .iter()
        .flat_map(|p| {
            p.series
                .iter()
                .flat_map(|s| s.points.iter().map(|(x, _)| *x))
        })
        .fold(1.0f64, f64::max);
    for (panel, area) in panels.iter().zip(areas.iter()) {
        let y_max = panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().filter_map(|(_, y)| *y))
            .chain(panel.reference.iter().map(|(y, _)| *y))
            .fold(1.0f64, f64::max);
        let mut builder = ChartBuilder::on(area);
        builder
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(64);
        // The two axis kinds are different types: one macro, two charts.
        macro_rules! chart {
            ($y:expr, $floor:expr) => {{
                let mut chart = builder
                    .build_cartesian_2d(0f64..x_max, $y)
                    .map_err(|e| anyhow!("{e}"))?;
                chart
                    .configure_mesh()
                    .x_desc(x_label)
                    .y_desc(panel.y_label.as_str())
                    .label_style((FONT, 13).into_font())
                    .axis_desc_style((FONT, 14).into_font())
                    .draw()
                    .map_err(|e| anyhow!("{e}"))?;
                draw_lines(&mut chart, panel, $floor, x_max)?;
            }};
        }
        if panel.log_y {
            chart!((0.1f64..y_max * 2.0).log_scale(), 0.1);
        } else {
            chart!(0f64..y_max * 1.1, 0.0);
        }
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

fn draw_lines<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    panel: &Panel,
    floor: f64,
    x_max: f64,
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    X: plotters::coord::ranged1d::Ranged<ValueType = f64>,
    Y: plotters::coord::ranged1d::Ranged<ValueType = f64>,
{
    for s in &panel.series {
        let color = PALETTE[s.color % PALETTE.len()];
        // Split at gaps so a missing second does not draw a misleading line.
        let mut segments: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for (x, y) in &s.points {
            match y {
                Some(y) => segments
                    .last_mut()
                    .expect("non-empty")
                    .push((*x, y.max(floor))),
                None => segments.push(Vec::new()),
            }
        }
        let mut first = true;
        for seg in segments.into_iter().filter(|s| !s.is_empty()) {
            let series = chart
                .draw_series(LineSeries::new(seg, color.stroke_width(2)))
                .map_err(|e| anyhow!("{e}"))?;
            if first {
                series.label(s.label.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
                first = false;
            }
        }
    }
    if let Some((y, label)) = &panel.reference {
        let grey = RGBColor(60, 60, 60);
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, *y), (x_max, *y)],
                grey.stroke_width(2),
            ))
            .map_err(|e| anyhow!("{e}"))?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], grey.stroke_width(1))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 13).into_font())
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_with_text() {
        let dir = std::env::temp_dir().join(format!("charts-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.png");
        let pts = |f: fn(f64) -> f64| (0..20).map(|i| (i as f64, Some(f(i as f64)))).collect();
        draw(
            &path,
            "test chart",
            "seconds",
            &[
                Panel {
                    y_label: "origin q/s".into(),
                    log_y: false,
                    reference: Some((10.0, "threshold".into())),
                    series: vec![Series {
                        label: "a".into(),
                        color: 0,
                        points: pts(|x| x * 2.0),
                    }],
                },
                Panel {
                    y_label: "p99 ms".into(),
                    log_y: true,
                    reference: None,
                    series: vec![Series {
                        label: "b".into(),
                        color: 1,
                        points: pts(|x| 1.0 + x * x),
                    }],
                },
            ],
        )
        .unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > 1000);
        let _ = std::fs::remove_dir_all(dir);
    }
}
