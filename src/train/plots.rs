//! The paper's figures as SVG files: a box plot of the runs' validation accuracies
//! per loss, and training/validation accuracy per epoch for the best run of each loss.

use super::metrics::RunRecord;
use super::stats::Calibration;
use anyhow::Result;
use plotters::prelude::*;
use std::path::Path;

const COLORS: [RGBColor; 2] = [RGBColor(31, 119, 180), RGBColor(214, 39, 40)];

/// The SVG is drawn in memory and written through a temporary file renamed into place, so
/// a killed process never leaves a half-written figure.
fn write_svg(path: &Path, svg: &str) -> Result<()> {
    crate::data::fsutil::atomic_write(path, |w| std::io::Write::write_all(w, svg.as_bytes()))
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing failed: {e:?}")
}

/// Accuracy range that holds every value with a margin, in whole points.
fn y_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f32> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
    if !lo.is_finite() {
        return 0.0..100.0;
    }
    ((lo - 1.0).floor().max(0.0) as f32)..((hi + 1.0).ceil().min(100.0) as f32)
}

/// Box plot: one box per group (label, validation accuracies of its runs).
pub fn box_plot(path: &Path, title: &str, groups: &[(String, Vec<f64>)]) -> Result<()> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let labels: Vec<String> = groups.iter().map(|(l, _)| l.clone()).collect();
        let range = y_range(groups.iter().flat_map(|(_, v)| v.iter().copied()));
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(labels.into_segmented(), range)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .y_desc("validation accuracy (%)")
            .disable_x_mesh()
            .draw()
            .map_err(plot_err)?;
        for (i, (label, values)) in groups.iter().enumerate() {
            let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
            let quartiles = Quartiles::new(&v);
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(std::iter::once(
                    Boxplot::new_vertical(SegmentValue::CenterOf(label), &quartiles).style(color),
                ))
                .map_err(plot_err)?;
            // every run as a dot, so five runs are not hidden behind a box
            chart
                .draw_series(v.iter().map(|&y| Circle::new((SegmentValue::CenterOf(label), y), 3, color.filled())))
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    write_svg(path, &svg)
}

/// Training and validation accuracy per epoch for each given run (one color per run,
/// solid validation, dashed-looking thin training line).
pub fn accuracy_curves(path: &Path, title: &str, runs: &[(String, &RunRecord)]) -> Result<()> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let epochs = runs.iter().map(|(_, r)| r.epochs.len()).max().unwrap_or(1).max(1);
        let range = y_range(
            runs.iter().flat_map(|(_, r)| r.epochs.iter().flat_map(|e| [e.train_acc, e.val_acc])),
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(0.5f32..epochs as f32 + 0.5, range)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("accuracy (%)")
            .draw()
            .map_err(plot_err)?;
        for (i, (label, run)) in runs.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let pts = |f: fn(&super::metrics::EpochMetrics) -> f64| {
                run.epochs.iter().map(move |e| (e.epoch as f32, f(e) as f32)).collect::<Vec<_>>()
            };
            chart
                .draw_series(LineSeries::new(pts(|e| e.val_acc), color.stroke_width(2)))
                .map_err(plot_err)?
                .label(format!("{label} validation"))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
            chart
                .draw_series(LineSeries::new(pts(|e| e.train_acc), color.mix(0.5).stroke_width(1)))
                .map_err(plot_err)?
                .label(format!("{label} train"))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.mix(0.5)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    write_svg(path, &svg)
}

/// Reliability diagram: for each group (label, its calibration, e.g. all runs of one loss
/// pooled), the fraction of positive reviews against the mean predicted probability of
/// each non-empty bin (dots joined by a line), and the diagonal of
/// perfect calibration. The legend gives each group's ECE.
pub fn reliability_diagram(path: &Path, title: &str, groups: &[(String, &Calibration)]) -> Result<()> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f32..1f32, 0f32..1f32)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("mean predicted probability of positive (per bin)")
            .y_desc("fraction of positive reviews")
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(LineSeries::new([(0f32, 0f32), (1f32, 1f32)], BLACK.mix(0.4)))
            .map_err(plot_err)?
            .label("perfect calibration")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.4)));
        for (i, (label, cal)) in groups.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let pts: Vec<(f32, f32)> = cal.points().iter().map(|&(_, p, f, _)| (p as f32, f as f32)).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(plot_err)?
                .label(format!("{label} (ECE {:.3})", cal.ece()))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(plot_err)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    write_svg(path, &svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Loss;
    use crate::train::metrics::EpochMetrics;

    fn run(acc: &[f64]) -> RunRecord {
        let epochs = acc
            .iter()
            .enumerate()
            .map(|(i, &a)| EpochMetrics {
                epoch: i + 1,
                train_loss: 0.5,
                train_acc: a + 2.0,
                val_loss: 0.4,
                val_acc: a,
                test_acc: None,
                train_seconds: 1.0,
                tokens_per_second: 1e5,
                lr: 1e-3,
                val_quality: None,
                test_quality: None,
            })
            .collect();
        RunRecord { loss: Loss::Bce, seed: 1, epochs }
    }

    #[test]
    fn figures_are_written_with_their_labels() {
        let dir = tempfile::tempdir().unwrap();
        let boxes = dir.path().join("box.svg");
        box_plot(&boxes, "runs", &[("BCE".into(), vec![85.0, 86.0, 86.5]), ("CE".into(), vec![84.0, 86.6])]).unwrap();
        let svg = std::fs::read_to_string(&boxes).unwrap();
        assert!(svg.contains("BCE") && svg.contains("CE") && svg.contains("<circle"), "box plot content");
        let curves = dir.path().join("curves.svg");
        let (a, b) = (run(&[80.0, 85.0, 86.0]), run(&[81.0, 84.0]));
        accuracy_curves(&curves, "best runs", &[("BCE".into(), &a), ("CE".into(), &b)]).unwrap();
        let svg = std::fs::read_to_string(&curves).unwrap();
        assert!(svg.contains("BCE validation") && svg.contains("CE train"));
        assert_eq!(a.best().unwrap().epoch, 3);
        let rel = dir.path().join("reliability.svg");
        let cal = Calibration::of(&[0.1, 0.2, 0.8, 0.9], &[0, 1, 1, 1], 15);
        reliability_diagram(&rel, "calibration", &[("BCE".into(), &cal)]).unwrap();
        let svg = std::fs::read_to_string(&rel).unwrap();
        assert!(svg.contains(&format!("BCE (ECE {:.3})", cal.ece())) && svg.contains("perfect calibration"), "reliability content");
        assert_eq!(svg.matches("<circle").count(), 4, "one dot per non-empty bin");
    }
}
