//! report.html: a build's report as one self-contained page (inline SVG charts drawn
//! with plotters, inline CSS, no scripts, nothing fetched), and the comparison page of
//! `qatc report` for several builds.

use std::fmt::Write;

use plotters::prelude::*;

use super::Report;

/// Line colours, readable on white: blue, orange, green, red, purple.
const SERIES_COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

/// Chart size in pixels.
const WIDE: (u32, u32) = (720, 320);

/// The page of one build. `graph` is the quantized graph (drawn, and listed);
/// `sensitivity` the build directory's sensitivity.json, when there is one.
pub fn build_page(
    report: &Report,
    graph: Option<&crate::ir::Graph>,
    sensitivity: Option<&serde_json::Value>,
) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>{} <small>{}</small></h1>\n<p class=\"meta\">{} training / {} test images, classes {:?}, device {}, {:.1} s in all</p>\n",
        esc(&report.model),
        esc(&report.quant),
        report.data.train_images,
        report.data.test_images,
        report.data.classes,
        esc(&report.device),
        report.total_seconds
    );
    body.push_str("<h2>Accuracy</h2>\n");
    body.push_str(&accuracy_table(report));
    body.push_str(&figure("accuracy", &accuracy_bars(report)));
    for note in &report.notes {
        let _ = writeln!(body, "<p class=\"note\">note: {}</p>", esc(note));
    }
    if report.stages().iter().any(|(_, s)| !s.history.is_empty()) {
        body.push_str("<h2>Training</h2>\n");
        body.push_str(&figure(
            "loss",
            &curves(report, "training loss", |e| Some(e.train_loss)),
        ));
        body.push_str(&figure(
            "val-accuracy",
            &curves(report, "test accuracy after each epoch (%)", |e| {
                Some(e.val_accuracy * 100.0)
            }),
        ));
        if report
            .qat
            .as_ref()
            .is_some_and(|qat| qat.history.iter().any(|e| e.range_movement.is_some()))
        {
            body.push_str(&history_table(report));
        }
    }
    if let Some(confusion) = &report.confusion {
        let _ = writeln!(
            body,
            "<h2>Confusion matrix ({}, test set)</h2>",
            report.delivered().0
        );
        body.push_str(&confusion_table(confusion, &report.data.classes));
    }
    if let Some(summary) = &report.summary {
        body.push_str("<h2>Model summary</h2>\n");
        let _ = writeln!(
            body,
            "<pre class=\"summary\">{}</pre>",
            esc(&summary.text())
        );
    }
    if let Some(graph) = graph {
        body.push_str("<h2>Quantized graph</h2>\n<p class=\"meta\">Each block call is framed and labelled by its binding; fake quantizations are yellow, <code>@float</code> ops grey.</p>\n");
        body.push_str(&figure("graph", &crate::ir::svg::svg(graph)));
        let _ = writeln!(
            body,
            "<details><summary>as text</summary><pre class=\"graph\">{}</pre></details>",
            esc(&crate::ir::dump::text(graph))
        );
    }
    if let Some(s) = sensitivity {
        body.push_str("<h2>Sensitivity</h2>\n");
        body.push_str(&figure("sensitivity", &sensitivity_bars(s)));
    }
    if let Some(env) = &report.environment {
        let _ = writeln!(
            body,
            "<p class=\"meta\">qatc {}, libtorch {}, {} threads, CPU features {}, device {}</p>",
            esc(&env.qatc_version),
            esc(&env.libtorch_version),
            env.threads,
            esc(&env.cpu_features.join(" ")),
            esc(&env.device)
        );
    }
    page(&format!("{} ({})", report.model, report.quant), &body)
}

/// One page comparing builds, e.g. the same model at several bit widths.
pub fn comparison_page(reports: &[(String, Report)]) -> String {
    let mut body = String::from("<h1>Comparison</h1>\n<table id=\"comparison\"><tr><th>build</th><th>model</th><th>quant</th><th>float</th><th>PTQ</th><th>control</th><th>QAT</th><th>QAT int8</th></tr>\n");
    for (label, r) in reports {
        let _ = writeln!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(label),
            esc(&r.model),
            esc(&r.quant),
            pct(r.float.accuracy),
            pct(r.ptq.accuracy),
            r.control.as_ref().map_or("-".to_string(), |s| pct(s.accuracy)),
            r.qat.as_ref().map_or("-".to_string(), |s| pct(s.accuracy)),
            r.qat
                .as_ref()
                .and_then(|s| s.int8_accuracy)
                .map_or("-".to_string(), pct),
        );
    }
    body.push_str("</table>\n");
    body.push_str(&figure("sweep", &sweep_chart(reports)));
    page("qatc comparison", &body)
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\nbody{{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}}\nh1 small{{color:#666;font-weight:normal}}\ntable{{border-collapse:collapse;margin:1em 0}}\ntd,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\ntd:first-child,th:first-child{{text-align:left}}\n.meta,.note{{color:#555}}\npre{{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px}}\nfigure{{margin:1em 0}}\n</style></head>\n<body>\n{}</body></html>\n",
        esc(title),
        body
    )
}

fn figure(id: &str, svg: &str) -> String {
    // Drop the XML declaration if any: the SVG is inline.
    let svg = svg.find("<svg").map_or(svg, |at| &svg[at..]);
    format!("<figure id=\"{id}\">{svg}</figure>\n")
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

/// (label, accuracy in %, is the honest control) for every bar.
fn accuracy_rows(r: &Report) -> Vec<(String, f64, bool)> {
    let stages = r
        .stages()
        .into_iter()
        .map(|(name, s)| (name.into(), s.accuracy * 100.0, name == "control"));
    let int8 = r
        .int8_stages()
        .into_iter()
        .map(|(name, _, a)| (name.into(), a * 100.0, false));
    stages.chain(int8).collect()
}

fn accuracy_table(r: &Report) -> String {
    let mut out = String::from("<table id=\"accuracies\"><tr><th>stage</th><th>accuracy</th><th>vs float</th><th>epochs</th><th>train img/s</th></tr>\n");
    for (name, s) in r.stages() {
        let _ = writeln!(
            out,
            "<tr><td>{name}</td><td class=\"acc\">{}</td><td>{:+.2}</td><td>{}</td><td>{}</td></tr>",
            pct(s.accuracy),
            (s.accuracy - r.float.accuracy) * 100.0,
            s.epochs,
            s.training_speed()
        );
    }
    for (name, _, a) in r.int8_stages() {
        let _ = writeln!(
            out,
            "<tr><td>{name}</td><td class=\"acc\">{}</td><td>{:+.2}</td><td>-</td><td>-</td></tr>",
            pct(a),
            (a - r.float.accuracy) * 100.0
        );
    }
    out.push_str("</table>\n");
    if r.control.is_some() {
        out.push_str("<p class=\"meta\">control: float trained for the same extra epochs as QAT, then PTQ: what QAT gains beyond more training.</p>\n");
    }
    out
}

fn history_table(r: &Report) -> String {
    let mut out = String::from("<table id=\"history\"><tr><th>stage</th><th>epoch</th><th>loss</th><th>train acc.</th><th>test acc.</th><th>lr</th><th>img/s</th><th>ranges moved</th></tr>\n");
    for (name, s) in r.stages() {
        for e in &s.history {
            let _ = writeln!(
                out,
                "<tr><td>{name}</td><td>{}</td><td>{:.4}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{}</td></tr>",
                e.epoch,
                e.train_loss,
                pct(e.train_accuracy),
                pct(e.val_accuracy),
                e.learning_rate,
                e.images_per_second,
                e.range_movement.map_or("-".to_string(), pct)
            );
        }
    }
    out.push_str("</table>\n");
    out
}

fn confusion_table(confusion: &[Vec<u64>], classes: &[u8]) -> String {
    let max = confusion
        .iter()
        .flatten()
        .copied()
        .max()
        .unwrap_or(1)
        .max(1);
    let mut out = String::from("<table id=\"confusion\"><tr><th>true \\ predicted</th>");
    for c in classes {
        let _ = write!(out, "<th>{c}</th>");
    }
    out.push_str("</tr>\n");
    for (row, c) in confusion.iter().zip(classes) {
        let _ = write!(out, "<tr><th>{c}</th>");
        for &n in row {
            // Darker for more images; a light cell keeps its number readable.
            let shade = 255 - (n * 180 / max) as u8;
            let _ = write!(
                out,
                "<td style=\"background:rgb({shade},{shade},255)\">{n}</td>"
            );
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    out
}

/// Draws into an SVG string; a drawing error (none expected with this backend) leaves
/// a note instead of a chart.
fn svg(
    size: (u32, u32),
    draw: impl FnOnce(
        &DrawingArea<SVGBackend, plotters::coord::Shift>,
    ) -> Result<(), Box<dyn std::error::Error>>,
) -> String {
    let mut out = String::new();
    let result = {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        let drawn = draw(&root).map_err(|e| e.to_string());
        drawn.and_then(|()| root.present().map_err(|e| e.to_string()))
    };
    match result {
        Ok(()) => out,
        Err(e) => format!("<p class=\"note\">chart not drawn: {}</p>", esc(&e)),
    }
}

fn accuracy_bars(r: &Report) -> String {
    let rows = accuracy_rows(r);
    svg(WIDE, |root| {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(root)
            .caption("test accuracy (%)", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(
                (0..rows.len().saturating_sub(1)).into_segmented(),
                0f64..100f64,
            )?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => rows.get(*i).map_or(String::new(), |r| r.0.clone()),
                _ => String::new(),
            })
            .draw()?;
        chart.draw_series(
            Histogram::vertical(&chart)
                .margin(12)
                .style_func(|x, _| match x {
                    SegmentValue::Exact(i) | SegmentValue::CenterOf(i)
                        if rows.get(*i).is_some_and(|r| r.2) =>
                    {
                        RGBColor(150, 150, 150).filled()
                    }
                    _ => RGBColor(60, 110, 180).filled(),
                })
                .data(rows.iter().enumerate().map(|(i, r)| (i, r.1))),
        )?;
        chart.draw_series(rows.iter().enumerate().map(|(i, r)| {
            Text::new(
                format!("{:.2}", r.1),
                (SegmentValue::CenterOf(i), r.1 + 4.0),
                ("sans-serif", 13).into_font(),
            )
        }))?;
        Ok(())
    })
}

/// One line per training stage over a shared epoch axis (control and QAT both start
/// where float training ended).
fn curves(r: &Report, title: &str, value: impl Fn(&super::Epoch) -> Option<f64>) -> String {
    let float_epochs = r.float.history.len() as f64;
    let series: Vec<(&str, Vec<(f64, f64)>)> = r
        .stages()
        .into_iter()
        .filter(|(name, _)| *name != "PTQ")
        .map(|(name, s)| {
            let start = if name == "float" { 0.0 } else { float_epochs };
            let points = s
                .history
                .iter()
                .filter_map(|e| value(e).map(|v| (start + e.epoch as f64, v)))
                .collect();
            (name, points)
        })
        .collect();
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.1.iter().copied()).collect();
    let x_max = all.iter().map(|p| p.0).fold(1.0, f64::max);
    let (lo, hi) = all.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    let pad = ((hi - lo) * 0.1).max(1e-3);
    let (lo, hi) = if all.is_empty() {
        (0.0, 1.0)
    } else {
        (lo - pad, hi + pad)
    };
    svg(WIDE, |root| {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0.5f64..x_max + 0.5, lo..hi)?;
        chart.configure_mesh().x_desc("epoch").draw()?;
        for (i, (name, points)) in series.iter().enumerate() {
            if points.is_empty() {
                continue;
            }
            let color = SERIES_COLORS[i % SERIES_COLORS.len()];
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })
}

fn sensitivity_bars(s: &serde_json::Value) -> String {
    let layers: Vec<(String, f64)> = s["layers"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|l| {
                    Some((
                        l["layer"].as_str()?.to_string(),
                        l["alone"].as_f64()? * 100.0,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let float = s["float"].as_f64().unwrap_or(0.0) * 100.0;
    let lo = layers.iter().map(|l| l.1).fold(float, f64::min) - 1.0;
    svg((WIDE.0, 80 + 24 * layers.len() as u32), |root| {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("accuracy with one layer quantized (%); float {float:.2}"),
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(140)
            .build_cartesian_2d(
                lo.max(0.0)..float.max(lo + 1.0) + 0.5,
                (0..layers.len().saturating_sub(1)).into_segmented(),
            )?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => layers.get(*i).map_or(String::new(), |l| l.0.clone()),
                _ => String::new(),
            })
            .draw()?;
        chart.draw_series(
            Histogram::horizontal(&chart)
                .margin(4)
                .style(RGBColor(200, 120, 60).filled())
                .data(layers.iter().enumerate().map(|(i, l)| (i, l.1))),
        )?;
        Ok(())
    })
}

/// One accuracy of a report, if it has it.
type Metric = fn(&Report) -> Option<f64>;

/// Accuracy per build: one line per stage across the builds (a bit-width sweep).
fn sweep_chart(reports: &[(String, Report)]) -> String {
    let metrics: [(&str, Metric); 5] = [
        ("float", |r| Some(r.float.accuracy)),
        ("PTQ", |r| Some(r.ptq.accuracy)),
        ("control", |r| r.control.as_ref().map(|s| s.accuracy)),
        ("QAT", |r| r.qat.as_ref().map(|s| s.accuracy)),
        ("QAT int8", |r| r.qat.as_ref().and_then(|s| s.int8_accuracy)),
    ];
    let values: Vec<f64> = reports
        .iter()
        .flat_map(|(_, r)| metrics.iter().filter_map(|m| m.1(r)))
        .map(|a| a * 100.0)
        .collect();
    let lo = values.iter().copied().fold(100.0, f64::min);
    let hi = values.iter().copied().fold(0.0, f64::max);
    let pad = ((hi - lo) * 0.1).max(0.5);
    svg(WIDE, |root| {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(root)
            .caption("test accuracy (%) per build", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(
                (0..reports.len().saturating_sub(1)).into_segmented(),
                (lo - pad).max(0.0)..(hi + pad).min(100.0),
            )?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => reports.get(*i).map_or(String::new(), |r| r.0.clone()),
                _ => String::new(),
            })
            .draw()?;
        for (k, (name, metric)) in metrics.iter().enumerate() {
            let points: Vec<(SegmentValue<usize>, f64)> = reports
                .iter()
                .enumerate()
                .filter_map(|(i, (_, r))| metric(r).map(|a| (SegmentValue::CenterOf(i), a * 100.0)))
                .collect();
            let color = SERIES_COLORS[k % SERIES_COLORS.len()];
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
            chart.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, color.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })
}
