//! The run's PNG plot: training loss per step and, when evaluated, Recall@1 per epoch.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

/// System fonts tried for the labels; without one the curves are drawn unlabelled.
const FONT_CANDIDATES: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

fn font_available() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        FONT_CANDIDATES.iter().any(|path| {
            std::fs::read(path).ok().is_some_and(|bytes| {
                // plotters keeps registered fonts for the life of the process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
            })
        })
    })
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot draw the plot: {message}")]
pub struct PlotError {
    path: String,
    message: String,
}

/// Draws `loss` (step, value) and `recall` (step, R@1) into a PNG at `path`.
pub fn draw(path: &Path, loss: &[(u64, f64)], recall: &[(u64, f64)]) -> Result<(), PlotError> {
    let fail = |message: String| PlotError {
        path: path.display().to_string(),
        message,
    };
    let labelled = font_available();
    let root = BitMapBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let max_step = loss
        .iter()
        .chain(recall)
        .map(|&(step, _)| step)
        .max()
        .unwrap_or(1)
        .max(1);
    let max_loss = loss
        .iter()
        .map(|&(_, value)| value)
        .fold(0.0_f64, f64::max)
        .max(1e-3)
        * 1.05;

    let mut builder = ChartBuilder::on(&root);
    builder
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .right_y_label_area_size(55);
    if labelled {
        builder.caption("training loss and test Recall@1", ("sans-serif", 20));
    }
    let mut chart = builder
        .build_cartesian_2d(0u64..max_step, 0.0..max_loss)
        .map_err(|e| fail(e.to_string()))?
        .set_secondary_coord(0u64..max_step, 0.0..1.0);
    if labelled {
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss")
            .draw()
            .map_err(|e| fail(e.to_string()))?;
        chart
            .configure_secondary_axes()
            .y_desc("Recall@1")
            .draw()
            .map_err(|e| fail(e.to_string()))?;
    }
    chart
        .draw_series(LineSeries::new(loss.iter().copied(), &BLUE))
        .map_err(|e| fail(e.to_string()))?;
    if !recall.is_empty() {
        chart
            .draw_secondary_series(LineSeries::new(recall.iter().copied(), RED.stroke_width(2)))
            .map_err(|e| fail(e.to_string()))?;
        chart
            .draw_secondary_series(
                recall
                    .iter()
                    .map(|&point| Circle::new(point, 4, RED.filled())),
            )
            .map_err(|e| fail(e.to_string()))?;
    }
    root.present().map_err(|e| fail(e.to_string()))
}
