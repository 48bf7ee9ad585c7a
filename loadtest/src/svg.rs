//! Svg: small self-contained line charts (inline SVG, no scripts or fonts to fetch) for the HTML
//! report. Missing values break a line instead of being drawn as zero.

use std::fmt::Write;

/// One series: a name for the legend, a CSS colour, and (x, y) points.
#[derive(Debug, Clone)]
pub struct Line {
    pub name: String,
    pub color: &'static str,
    pub points: Vec<(f64, Option<f64>)>,
}

#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub y_unit: String,
    pub lines: Vec<Line>,
    /// An x range to shade (the measurement window).
    pub band: Option<(f64, f64)>,
}

const W: f64 = 720.0;
const H: f64 = 260.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 40.0;

/// Escape text for XML and HTML.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A step of 1, 2 or 5 times a power of ten giving about five ticks up to `max`.
pub fn nice_step(max: f64) -> f64 {
    if !max.is_finite() || max <= 0.0 {
        return 1.0;
    }
    let raw = max / 5.0;
    let power = 10f64.powf(raw.log10().floor());
    let m = raw / power;
    let factor = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    factor * power
}

fn label(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

pub fn render(chart: &Chart) -> String {
    let xs = chart.lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
    let x_max = xs.fold(1.0f64, f64::max);
    let y_data = chart
        .lines
        .iter()
        .flat_map(|l| l.points.iter().filter_map(|p| p.1))
        .fold(0.0f64, f64::max);
    let step = nice_step(y_data);
    let y_max = ((y_data / step).ceil() * step).max(step);
    let px = |x: f64| LEFT + x / x_max * (W - LEFT - RIGHT);
    let py = |y: f64| H - BOTTOM - y / y_max * (H - TOP - BOTTOM);

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{title}" font-family="sans-serif" font-size="11">"#,
        title = escape(&chart.title)
    );
    let _ = write!(
        svg,
        r##"<text x="{LEFT}" y="16" font-size="13" font-weight="bold">{}</text>"##,
        escape(&chart.title)
    );
    if let Some((a, b)) = chart.band {
        let _ = write!(
            svg,
            r##"<rect x="{:.1}" y="{TOP}" width="{:.1}" height="{:.1}" fill="#eef5ee"/>"##,
            px(a),
            (px(b) - px(a)).max(0.0),
            H - TOP - BOTTOM
        );
    }
    let mut y = 0.0;
    while y <= y_max + step / 2.0 {
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{y1:.1}" y2="{y1:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            py(y) + 4.0,
            label(y),
            y1 = py(y)
        );
        y += step;
    }
    let x_step = nice_step(x_max);
    let mut x = 0.0;
    while x <= x_max + x_step / 2.0 {
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}s</text>"##,
            px(x),
            H - BOTTOM + 16.0,
            label(x)
        );
        x += x_step;
    }
    let _ = write!(
        svg,
        r##"<text x="12" y="{:.1}" transform="rotate(-90 12 {:.1})" text-anchor="middle">{}</text>"##,
        (TOP + H - BOTTOM) / 2.0,
        (TOP + H - BOTTOM) / 2.0,
        escape(&chart.y_unit)
    );
    for line in &chart.lines {
        let mut d = String::new();
        let mut pen_down = false;
        for &(x, y) in &line.points {
            match y {
                Some(y) => {
                    let _ = write!(d, "{}{:.1},{:.1} ", if pen_down { "L" } else { "M" }, px(x), py(y));
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        if !d.is_empty() {
            let _ = write!(
                svg,
                r#"<path d="{}" fill="none" stroke="{}" stroke-width="1.6"/>"#,
                d.trim_end(),
                line.color
            );
        }
    }
    for (i, line) in chart.lines.iter().enumerate() {
        let lx = W - RIGHT - 150.0 * (chart.lines.len() - i) as f64;
        let _ = write!(
            svg,
            r#"<rect x="{lx:.1}" y="8" width="10" height="10" fill="{}"/><text x="{:.1}" y="17">{}</text>"#,
            line.color,
            lx + 14.0,
            escape(&line.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_round_numbers() {
        assert_eq!(nice_step(10.0), 2.0);
        assert_eq!(nice_step(47.0), 10.0);
        assert_eq!(nice_step(400_000.0), 100_000.0);
        assert_eq!(nice_step(0.0), 1.0);
    }

    #[test]
    fn charts_are_self_contained_and_break_on_missing_values() {
        let chart = Chart {
            title: "p99 <deliver>".into(),
            y_unit: "ms".into(),
            lines: vec![Line {
                name: "p99".into(),
                color: "#c33",
                points: vec![(1.0, Some(2.0)), (2.0, None), (3.0, Some(4.0)), (4.0, Some(1.0))],
            }],
            band: Some((1.0, 3.0)),
        };
        let svg = render(&chart);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("p99 &lt;deliver&gt;"));
        assert!(!svg.contains("<script") && !svg.contains("href"));
        let path = svg
            .split("<path d=\"")
            .nth(1)
            .and_then(|p| p.split('"').next())
            .expect("path");
        assert_eq!(path.matches('M').count(), 2, "a gap starts a new segment: {path}");
    }
}
