//! Draws the reward-over-time plot as a PNG with plotters' bitmap backend. Labels are drawn
//! with the public-domain 8×8 bitmap font of `font8x8`, pixel by pixel, so the figure needs no
//! system font and renders the same on every machine.

use plotters::prelude::*;

const COLORS: [RGBColor; 8] = [
    RGBColor(150, 150, 150),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(213, 94, 0),
    RGBColor(0, 114, 178),
    RGBColor(0, 0, 0),
];

/// Draws `text` with its top-left corner at `(x, y)`, each font pixel `scale`×`scale`.
fn label<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    x: i32,
    y: i32,
    text: &str,
    color: &RGBColor,
    scale: i32,
) {
    for (n, ch) in text.chars().enumerate() {
        let Some(glyph) = font8x8::legacy::BASIC_LEGACY.get(ch as usize) else {
            continue;
        };
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    let px = x + (n as i32 * 8 + col) * scale;
                    let py = y + row as i32 * scale;
                    for (dx, dy) in (0..scale).flat_map(|dx| (0..scale).map(move |dy| (dx, dy))) {
                        let _ = area.draw_pixel((px + dx, py + dy), color);
                    }
                }
            }
        }
    }
}

/// Plots each series (mean expected reward per bin of the stream) against stream position,
/// with a dashed vertical line where the drift happens (`drift` as a fraction of the stream).
pub fn reward_curves(path: &str, series: &[(String, Vec<f64>)], drift: f64) -> Result<(), String> {
    let (w, h) = (960i32, 600i32);
    let root = BitMapBackend::new(path, (w as u32, h as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (left, right, top, bottom) = (70, w - 330, 50, h - 60);
    let y_max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0f64, f64::max);
    let y_max = (y_max * 10.0).ceil() / 10.0;
    let bins = series.first().map_or(1, |(_, v)| v.len().max(2));
    let to_px = |i: f64, y: f64| {
        let x = left + ((right - left) as f64 * i / (bins - 1) as f64) as i32;
        let y = bottom - ((bottom - top) as f64 * (y / y_max)) as i32;
        (x, y)
    };
    let black = RGBColor(0, 0, 0);
    let grid = RGBColor(225, 225, 225);
    // Grid lines and y labels every 0.1.
    let steps = (y_max * 10.0).round() as i32;
    for k in 0..=steps {
        let y = k as f64 / 10.0;
        let (_, py) = to_px(0.0, y);
        root.draw(&PathElement::new(vec![(left, py), (right, py)], grid))
            .map_err(|e| e.to_string())?;
        label(&root, left - 40, py - 4, &format!("{y:.1}"), &black, 1);
    }
    root.draw(&PathElement::new(
        vec![(left, top), (left, bottom), (right, bottom)],
        black,
    ))
    .map_err(|e| e.to_string())?;
    // The drift, dashed.
    let dx = left + ((right - left) as f64 * drift) as i32;
    let mut y = top;
    while y < bottom {
        root.draw(&PathElement::new(
            vec![(dx, y), (dx, (y + 6).min(bottom))],
            black,
        ))
        .map_err(|e| e.to_string())?;
        y += 12;
    }
    label(&root, dx + 4, top + 4, "drift", &black, 1);
    for (n, (_, values)) in series.iter().enumerate() {
        let color = COLORS[n % COLORS.len()];
        let points: Vec<(i32, i32)> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| to_px(i as f64, v))
            .collect();
        root.draw(&PathElement::new(points, color.stroke_width(2)))
            .map_err(|e| e.to_string())?;
    }
    label(
        &root,
        left,
        16,
        "expected reward per decision, over the stream",
        &black,
        2,
    );
    label(
        &root,
        left,
        bottom + 20,
        "stream position (time order) ->",
        &black,
        1,
    );
    for (n, (name, _)) in series.iter().enumerate() {
        let color = COLORS[n % COLORS.len()];
        let y = top + 10 + n as i32 * 24;
        root.draw(&Rectangle::new(
            [(right + 20, y), (right + 44, y + 8)],
            color.filled(),
        ))
        .map_err(|e| e.to_string())?;
        label(&root, right + 52, y, name, &black, 1);
    }
    root.present().map_err(|e| e.to_string())
}
