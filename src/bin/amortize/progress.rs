//! Progress bars on stderr (hidden when stderr is not a terminal).

use amortize::train::EpochReport;
use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `len` items of `unit`.
pub fn bar(len: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let template = format!("{{spinner}} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}}) {{msg}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

/// Shows an epoch's losses on the training bar.
pub fn report_epoch(bar: &ProgressBar, e: &EpochReport) {
    bar.set_position(e.epoch as u64);
    bar.set_message(format!(
        "train {:.4} validation {:.4}",
        e.train_loss,
        e.validation_loss.unwrap_or(f32::NAN)
    ));
}
