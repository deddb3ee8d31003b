//! The soak's plot: RSS and `allocated` over time as an SVG line chart, with the configuration
//! changes and the flaps marked. Drawn by hand like `bench/src/report.rs` draws
//! `bench/results/latest.svg`, without a plotting dependency.

use std::fmt::Write as _;

use crate::sample::Sample;
use crate::schedule::{FlapKind, Schedule};
use crate::verdict::mib;

const W: f64 = 900.0;
const H: f64 = 420.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 40.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;

/// The SVG; `configs` names the configuration each change applies.
pub fn svg(samples: &[Sample], schedule: &Schedule, configs: &[&str]) -> String {
    let duration = schedule.duration.as_secs_f64().max(1.0);
    let top_mib = samples
        .iter()
        .map(|s| mib(s.rss as f64).max(mib(s.allocated as f64)))
        .fold(1.0_f64, f64::max);
    // A round top above the highest point, in five round steps.
    let top_mib = [
        50.0, 100.0, 150.0, 200.0, 250.0, 300.0, 400.0, 500.0, 750.0, 1000.0,
    ]
    .into_iter()
    .find(|&top| top >= top_mib * 1.1)
    .unwrap_or_else(|| (top_mib * 1.1 / 500.0).ceil() * 500.0);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let x = |t: f64| LEFT + t / duration * pw;
    let y = |m: f64| TOP + ph - m / top_mib * ph;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="20" font-size="14">Soak: Envoy's memory over {:.0} min of load (backends flapping, a configuration change every {:.0} s)</text>
"#,
        duration / 60.0,
        schedule
            .changes
            .first()
            .map_or(0.0, std::time::Duration::as_secs_f64)
    );
    // Flaps: shaded bands, red for failing, grey for gone, orange for slow.
    for flap in &schedule.flaps {
        let colour = match flap.kind {
            FlapKind::Fail => "#f4cccc",
            FlapKind::Close => "#dddddd",
            FlapKind::Slow(_) => "#fde9c9",
        };
        let (x0, x1) = (x(flap.start.as_secs_f64()), x(flap.end.as_secs_f64()));
        let _ = writeln!(
            svg,
            r#"<rect x="{x0:.1}" y="{TOP}" width="{:.1}" height="{ph}" fill="{colour}"/>"#,
            x1 - x0
        );
    }
    // Axes and grid.
    let steps = 5;
    for i in 0..=steps {
        let m = top_mib * f64::from(i) / f64::from(steps);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#e0e0e0"/><text x="{:.1}" y="{:.1}" text-anchor="end">{m:.0}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y(m) + 4.0,
            yy = y(m)
        );
    }
    let minutes = (duration / 60.0).ceil() as u32;
    let tick = if minutes > 1 { 60.0 } else { 10.0 };
    let mut t = 0.0;
    while t <= duration + 0.01 {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x(t),
            TOP + ph + 16.0,
            if tick >= 60.0 {
                format!("{:.0} min", t / 60.0)
            } else {
                format!("{t:.0} s")
            }
        );
        t += tick;
    }
    let _ = writeln!(
        svg,
        r#"<text x="15" y="{:.1}" transform="rotate(-90 15 {:.1})" text-anchor="middle">MiB</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    // Configuration changes: dashed lines labelled with the configuration applied.
    for (i, at) in schedule.changes.iter().enumerate() {
        let xx = x(at.as_secs_f64());
        let name = configs
            .get((i + 1) % configs.len().max(1))
            .copied()
            .unwrap_or("");
        let _ = writeln!(
            svg,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="#555" stroke-dasharray="4"/><text x="{:.1}" y="{:.1}" font-size="10">{name}</text>"##,
            TOP + ph,
            xx + 3.0,
            TOP + 12.0,
        );
    }
    // The series.
    for (label, colour, value) in [
        ("RSS", "#4c78a8", (|s: &Sample| s.rss) as fn(&Sample) -> u64),
        ("allocated", "#f58518", |s: &Sample| s.allocated),
    ] {
        let points: Vec<String> = samples
            .iter()
            .map(|s| format!("{:.1},{:.1}", x(s.t), y(mib(value(s) as f64))))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/><!-- {label} -->"#,
            points.join(" ")
        );
    }
    // Legend.
    let ly = H - 18.0;
    let legend = [
        ("#4c78a8", "RSS (VmRSS)", true),
        ("#f58518", "allocated (/memory)", true),
        ("#f4cccc", "an upstream answers 503", false),
        ("#dddddd", "an upstream is gone", false),
        ("#fde9c9", "an upstream is slow", false),
    ];
    let mut lx = LEFT;
    for (colour, text, line) in legend {
        if line {
            let _ = writeln!(
                svg,
                r#"<line x1="{lx}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="3"/>"#,
                ly - 4.0,
                lx + 18.0,
                ly - 4.0
            );
        } else {
            let _ = writeln!(
                svg,
                r#"<rect x="{lx}" y="{:.1}" width="18" height="10" fill="{colour}"/>"#,
                ly - 9.0
            );
        }
        let _ = writeln!(svg, r#"<text x="{:.1}" y="{ly}">{text}</text>"#, lx + 22.0);
        lx += 34.0 + text.len() as f64 * 6.6;
    }
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" font-size="10" fill="#555">dashed: configuration change (ECDS), named by the configuration applied</text>"##,
        LEFT,
        TOP - 8.0
    );
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn samples(minutes: u64) -> Vec<Sample> {
        (0..=minutes * 12)
            .map(|i| Sample {
                t: i as f64 * 5.0,
                rss: 110 << 20,
                allocated: (17 << 20) + (i % 3) * (1 << 19),
                ..Sample::default()
            })
            .collect()
    }

    #[test]
    fn the_plot_has_both_series_every_change_and_every_flap() {
        let schedule = Schedule::new(Duration::from_secs(600));
        let svg = svg(&samples(10), &schedule, &["a", "b", "c", "d"]);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(
            svg.matches("stroke-dasharray").count(),
            schedule.changes.len()
        );
        assert_eq!(
            svg.matches(r##"height="310" fill="#"##).count(),
            schedule.flaps.len()
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        if let Some(path) = std::env::var_os("SOAK_PLOT_SAMPLE") {
            std::fs::write(path, &svg).expect("write the sample plot");
        }
    }
}
