//! One frame of the live table, as lines of text: a pure function of what was measured, so
//! the layout is tested without Envoy. The line count is the same for every frame (the
//! terminal redraw relies on it) and every line is shorter than 80 columns.

/// One backend's line.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The cluster name.
    pub name: String,
    /// Whether the keys act on it.
    pub selected: bool,
    /// Requests it received per second over the window.
    pub rate: f64,
    /// Its part of the requests all backends received in the window, in percent.
    pub share: f64,
    /// `healthy`, `unhealthy` (probes), `ejected` (failed requests) or `?` (no status page).
    pub health: String,
    /// Requests the upstream is answering now.
    pub in_flight: u64,
    /// What the demo did to the upstream (`ok`, `slow +200ms`, `failing 503`, `killed`).
    pub condition: String,
}

/// Everything one frame shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The policy, from the status page.
    pub policy: String,
    /// `normal`, `panic`, `backup` or `all_down`, from the status page.
    pub mode: String,
    /// Seconds since the live demo started.
    pub uptime_s: u64,
    /// One per backend.
    pub rows: Vec<Row>,
    /// Answers other than 200 per second (Envoy's 503 for a refused upstream, eisodos' own
    /// 503 when nothing is healthy, a failing upstream's 503).
    pub non_200_rate: f64,
    /// Requests per second that got no answer at all.
    pub no_answer_rate: f64,
    /// The answer to the last command, or empty.
    pub message: String,
    /// The keys.
    pub legend: String,
}

/// The header line's first words: how a reader of the output finds where a frame starts.
pub const TITLE: &str = "eisodos live";

/// The frame's lines.
pub fn render(frame: &Frame) -> Vec<String> {
    let mut lines = Vec::with_capacity(frame.rows.len() + 6);
    lines.push(format!(
        "{TITLE} · {} · mode {} · {} s",
        frame.policy, frame.mode, frame.uptime_s
    ));
    lines.push(format!(
        "  {:<12} {:>6} {:>7}  {:<10} {:>9}  {}",
        "backend", "req/s", "share", "health", "in flight", "upstream"
    ));
    for row in &frame.rows {
        lines.push(format!(
            "{} {:<12} {:>6.0} {:>6.1}%  {:<10} {:>9}  {}",
            if row.selected { '>' } else { ' ' },
            row.name,
            row.rate,
            row.share,
            row.health,
            row.in_flight,
            row.condition
        ));
    }
    lines.push(format!("  {:<12} {:>6.0}", "non-200", frame.non_200_rate));
    lines.push(format!(
        "  {:<12} {:>6.0}",
        "no answer", frame.no_answer_rate
    ));
    lines.push(frame.message.clone());
    lines.push(frame.legend.clone());
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let frame = Frame {
            policy: "round_robin".to_owned(),
            mode: "normal".to_owned(),
            uptime_s: 12,
            rows: vec![
                Row {
                    name: "backend_a".to_owned(),
                    selected: false,
                    rate: 50.0,
                    share: 50.0,
                    health: "healthy".to_owned(),
                    in_flight: 1,
                    condition: "ok".to_owned(),
                },
                Row {
                    name: "backend_b".to_owned(),
                    selected: true,
                    rate: 0.0,
                    share: 0.0,
                    health: "unhealthy".to_owned(),
                    in_flight: 0,
                    condition: "killed".to_owned(),
                },
            ],
            non_200_rate: 0.0,
            no_answer_rate: 0.0,
            message: "backend_b killed".to_owned(),
            legend: "keys: q quit".to_owned(),
        };
        let lines = render(&frame);
        assert_eq!(
            lines,
            [
                "eisodos live · round_robin · mode normal · 12 s",
                "  backend       req/s   share  health     in flight  upstream",
                "  backend_a        50   50.0%  healthy            1  ok",
                "> backend_b         0    0.0%  unhealthy          0  killed",
                "  non-200           0",
                "  no answer         0",
                "backend_b killed",
                "keys: q quit",
            ]
        );
    }
}
