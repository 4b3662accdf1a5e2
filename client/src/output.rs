//! Plain-text tables for the CLI. Columns are padded to their widest cell; nothing here talks to the server.

use crate::types::*;

/// Renders rows as left-aligned columns under a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("  {}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// ImageNet labels list every synonym ("tench, Tinca tinca"); a table shows the first few words.
fn short(label: &str) -> String {
    const MAX: usize = 40;
    if label.chars().count() <= MAX {
        label.to_owned()
    } else {
        let cut: String = label.chars().take(MAX - 1).collect();
        format!("{cut}…")
    }
}

/// The first line of every answer.
trait Heading {
    fn heading(&self, file: &str) -> String;
}

macro_rules! heading_for {
    ($($result:ty),*) => {$(
        impl Heading for $result {
            fn heading(&self, file: &str) -> String {
                heading(file, &self.model, self.image_width, self.image_height, &self.timings, self.auto)
            }
        }
    )*};
}
heading_for!(ClassifyResult, DetectResult, SegmentResult);

fn heading(
    file: &str,
    model: &str,
    w: u32,
    h: u32,
    t: &Timings,
    auto: Option<AutoRouting>,
) -> String {
    let chosen = match auto.and_then(|a| a.predicted_ms.map(|p| (p, a.budget_ms))) {
        Some((predicted, budget)) => {
            format!(" (auto: predicted {predicted:.1} ms, budget {budget:.0} ms)")
        }
        None if auto.is_some() => " (auto)".to_owned(),
        None => String::new(),
    };
    format!(
        "{file}  [{model}{chosen}, {w}x{h}, server {:.1} ms]\n",
        t.total_ms
    )
}

pub fn classify(file: &str, r: &ClassifyResult) -> String {
    let rows: Vec<Vec<String>> = r
        .classes
        .iter()
        .enumerate()
        .map(|(rank, c)| {
            vec![
                (rank + 1).to_string(),
                c.index.to_string(),
                short(&c.label),
                format!("{:.4}", c.score),
            ]
        })
        .collect();
    r.heading(file) + &table(&["rank", "index", "label", "score"], &rows)
}

pub fn detect(file: &str, r: &DetectResult) -> String {
    let rows: Vec<Vec<String>> = r
        .detections
        .iter()
        .map(|d| {
            let b = &d.bbox;
            vec![
                short(&d.label),
                format!("{:.3}", d.score),
                format!("{:.0},{:.0} - {:.0},{:.0}", b.x1, b.y1, b.x2, b.y2),
            ]
        })
        .collect();
    let mut out = r.heading(file);
    if rows.is_empty() {
        out.push_str("  (no detections above the score threshold)\n");
    } else {
        out.push_str(&table(&["label", "score", "box x1,y1 - x2,y2 (px)"], &rows));
    }
    out
}

pub fn segment(file: &str, r: &SegmentResult) -> String {
    let rows: Vec<Vec<String>> = r
        .classes
        .iter()
        .map(|c| {
            vec![
                c.index.to_string(),
                short(&c.label),
                format!("{:.1}%", c.fraction * 100.0),
            ]
        })
        .collect();
    r.heading(file) + &table(&["index", "label", "pixels"], &rows)
}

pub fn models(models: &[ModelInfo]) -> String {
    let rows: Vec<Vec<String>> = models
        .iter()
        .map(|m| {
            vec![
                m.name.clone(),
                m.task.clone(),
                format!("{}", m.width),
                m.resolution.to_string(),
                m.precision.clone(),
                m.dataset.clone(),
                format!("{:.2}M", m.parameters as f64 / 1e6),
                format!("{:.0}M", m.multiply_adds as f64 / 1e6),
                if m.is_default {
                    "yes".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    table(
        &[
            "name",
            "task",
            "width",
            "resolution",
            "precision",
            "dataset",
            "params",
            "MACs",
            "default",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_columns_to_the_widest_cell() {
        let t = table(&["a", "bb"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "  a    bb\n  xxx  y\n");
    }

    #[test]
    fn long_labels_are_shortened() {
        assert_eq!(short("cat"), "cat");
        assert_eq!(short(&"x".repeat(50)).chars().count(), 40);
    }
}
