//! `loadtest plot`: draws a timeline CSV (`timeline`) as a PNG of three panels over the run's
//! time: the sampled process's RSS, the corrected latency percentiles of events and decisions
//! per interval (log scale), and the achieved rate. Labels use the public-domain 8×8 bitmap font
//! of `font8x8`, pixel by pixel (as the root crate's quality plot does), so the figure needs no
//! system font and renders the same everywhere. It owns only the drawing.

use std::path::Path;

use anyhow::{anyhow, Context as _};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::OpKind;
use crate::timeline::{OpRow, Row};

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

const WIDTH: i32 = 960;
const LEFT: i32 = 80;
const RIGHT: i32 = WIDTH - 200;
const BLACK: RGBColor = RGBColor(0, 0, 0);
const GRID: RGBColor = RGBColor(225, 225, 225);
/// Event percentiles in shades of blue, decisions in orange: p50 light, p99.9 dark.
const EVENT: [RGBColor; 3] = [
    RGBColor(150, 200, 235),
    RGBColor(60, 140, 210),
    RGBColor(0, 60, 140),
];
const DECIDE: [RGBColor; 3] = [
    RGBColor(250, 200, 120),
    RGBColor(230, 130, 0),
    RGBColor(160, 60, 0),
];

/// Draws `text` with its top-left corner at `(x, y)`, each font pixel `scale`×`scale`.
fn label(area: &Area, x: i32, y: i32, text: &str, color: &RGBColor, scale: i32) {
    for (n, ch) in text.chars().enumerate() {
        let Some(glyph) = font8x8::legacy::BASIC_LEGACY.get(ch as usize) else {
            continue;
        };
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    let px = x + (n as i32 * 8 + col) * scale;
                    let py = y + row as i32 * scale;
                    for dx in 0..scale {
                        for dy in 0..scale {
                            let _ = area.draw_pixel((px + dx, py + dy), color);
                        }
                    }
                }
            }
        }
    }
}

/// A panel's vertical scale.
#[derive(Clone, Copy)]
enum Scale {
    /// From 0 to `max`, grid lines every `step`.
    Linear { max: f64, step: f64 },
    /// From 10^`lo` to 10^`hi` (whole decades).
    Log { lo: i32, hi: i32 },
}

impl Scale {
    /// Where `v` sits, 0 (bottom) to 1 (top).
    fn frac(self, v: f64) -> f64 {
        match self {
            Scale::Linear { max, .. } => v / max,
            Scale::Log { lo, hi } => (v.max(1e-9).log10() - lo as f64) / (hi - lo) as f64,
        }
    }

    /// Grid values and their labels.
    fn ticks(self, unit: fn(f64) -> String) -> Vec<(f64, String)> {
        match self {
            Scale::Linear { max, step } => (0..=(max / step).round() as i32)
                .map(|k| (k as f64 * step, unit(k as f64 * step)))
                .collect(),
            Scale::Log { lo, hi } => (lo..=hi)
                .map(|d| (10f64.powi(d), unit(10f64.powi(d))))
                .collect(),
        }
    }
}

/// A "nice" step (1, 2 or 5 times a power of ten) giving at most about `n` steps up to `max`.
fn nice_step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(1e-9);
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p)
}

fn linear(max: f64) -> Scale {
    let step = nice_step(max.max(1e-9), 4.0);
    Scale::Linear {
        max: (max / step).ceil().max(1.0) * step,
        step,
    }
}

fn micros(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.0} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.0} ms", us / 1e3)
    } else {
        format!("{us:.0} us")
    }
}

/// A named line of `(t_s, value)` points.
struct Series {
    name: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

/// One panel: a title, a scale, its lines.
struct Panel<'a> {
    title: &'a str,
    scale: Scale,
    unit: fn(f64) -> String,
    series: Vec<Series>,
}

fn draw_panel(area: &Area, p: &Panel, (top, bottom): (i32, i32), t_max: f64) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<_>| e.to_string();
    let x = |t: f64| LEFT + ((RIGHT - LEFT) as f64 * t / t_max) as i32;
    let y = |v: f64| bottom - ((bottom - top) as f64 * p.scale.frac(v).clamp(0.0, 1.0)) as i32;
    for (v, text) in p.scale.ticks(p.unit) {
        let py = y(v);
        area.draw(&PathElement::new(vec![(LEFT, py), (RIGHT, py)], GRID))
            .map_err(e)?;
        label(area, 4, py - 4, &text, &BLACK, 1);
    }
    let axes = vec![(LEFT, top), (LEFT, bottom), (RIGHT, bottom)];
    area.draw(&PathElement::new(axes, BLACK)).map_err(e)?;
    label(area, LEFT, top - 14, p.title, &BLACK, 1);
    for (n, s) in p.series.iter().enumerate() {
        let px: Vec<(i32, i32)> = s.points.iter().map(|&(t, v)| (x(t), y(v))).collect();
        area.draw(&PathElement::new(px, s.color.stroke_width(2)))
            .map_err(e)?;
        let ly = top + n as i32 * 16;
        area.draw(&Rectangle::new(
            [(RIGHT + 16, ly), (RIGHT + 36, ly + 8)],
            s.color.filled(),
        ))
        .map_err(e)?;
        label(area, RIGHT + 44, ly, &s.name, &BLACK, 1);
    }
    Ok(())
}

/// The x-axis ticks: a nice step in seconds, labelled in seconds or minutes.
fn time_axis(area: &Area, bottom: i32, t_max: f64) {
    let step = [
        1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
    ]
    .into_iter()
    .find(|s| t_max / s <= 10.0)
    .unwrap_or(7200.0);
    let mut t = 0.0;
    while t <= t_max + 1e-9 {
        let px = LEFT + ((RIGHT - LEFT) as f64 * t / t_max) as i32;
        let text = if step >= 60.0 {
            format!("{:.0}m", t / 60.0)
        } else {
            format!("{t:.0}s")
        };
        label(area, px - 8, bottom + 6, &text, &BLACK, 1);
        t += step;
    }
    label(
        area,
        LEFT,
        bottom + 20,
        "time into the measured window ->",
        &BLACK,
        1,
    );
}

/// Picks one percentile of an op's row.
type Quantile = fn(&OpRow) -> f64;

/// The latency series: p50, p99, p99.9 of events and decisions, intervals with replies only.
fn latency_series(rows: &[Row]) -> Vec<Series> {
    let mut series = Vec::new();
    for (kind, name, colors) in [
        (OpKind::Event, "event", EVENT),
        (OpKind::Decide, "decide", DECIDE),
    ] {
        let pick: [(&str, Quantile); 3] = [
            ("p50", |o| o.p50_us),
            ("p99", |o| o.p99_us),
            ("p99.9", |o| o.p999_us),
        ];
        for ((q, f), color) in pick.into_iter().zip(colors) {
            let points: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.ops[kind as usize].count > 0)
                .map(|r| (r.t_s, f(&r.ops[kind as usize])))
                .collect();
            if !points.is_empty() {
                let name = format!("{name} {q}");
                series.push(Series {
                    name,
                    color,
                    points,
                });
            }
        }
    }
    series.reverse(); // the legend lists the worst first, and p50 is drawn on top
    series
}

/// Draws `rows` to `png` under `title`.
pub fn draw(rows: &[Row], title: &str, png: &Path) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Err(anyhow!("the timeline has no rows to plot"));
    }
    let t_max = rows.iter().map(|r| r.t_s).fold(1e-9, f64::max);
    let rss: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| Some((r.t_s, r.rss_bytes? as f64 / (1 << 20) as f64)))
        .collect();
    let rss_max = rss.iter().map(|p| p.1).fold(1.0, f64::max);
    let latency = latency_series(rows);
    let (lat_lo, lat_hi) = latency
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold((f64::MAX, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let rate: Vec<(f64, f64)> = rows.iter().map(|r| (r.t_s, r.rate_per_s)).collect();
    let rate_max = rate.iter().map(|p| p.1).fold(1.0, f64::max);
    let panels = [
        Panel {
            title: "resident memory (VmRSS), MiB",
            scale: linear(rss_max * 1.1),
            unit: |v| format!("{v:.0}"),
            series: vec![Series {
                name: "RSS".into(),
                color: RGBColor(0, 120, 60),
                points: rss,
            }],
        },
        Panel {
            title: "corrected latency per interval (from the intended send time)",
            scale: {
                let lo = lat_lo.min(lat_hi).max(1.0).log10().floor() as i32;
                let hi = lat_hi.log10().ceil() as i32;
                Scale::Log {
                    lo,
                    hi: hi.max(lo + 1),
                }
            },
            unit: micros,
            series: latency,
        },
        Panel {
            title: "achieved rate, replies/s",
            scale: linear(rate_max * 1.1),
            unit: |v| format!("{v:.0}"),
            series: vec![Series {
                name: "rate".into(),
                color: RGBColor(90, 90, 90),
                points: rate,
            }],
        },
    ];
    let height = 760;
    let root = BitMapBackend::new(png, (WIDTH as u32, height as u32)).into_drawing_area();
    let fail = |e: String| anyhow!("drawing {}: {e}", png.display());
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    label(&root, LEFT, 12, title, &BLACK, 2);
    let bounds = [(60, 250), (290, 540), (580, 700)];
    for (p, b) in panels.iter().zip(bounds) {
        draw_panel(&root, p, b, t_max).map_err(fail)?;
    }
    time_axis(&root, 700, t_max);
    root.present()
        .map_err(|e| fail(e.to_string()))
        .with_context(|| format!("writing {}", png.display()))
}
