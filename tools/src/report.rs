//! The demo's evaluation report: one table (per department, one accuracy column per model),
//! `report.json`, and two PNG plots drawn with plotters — training curves from each run's
//! `metrics.jsonl` and grouped per-department accuracy bars.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use serde::Serialize;
use serde_json::Value;

/// One accuracy column: a label and, per department name, top-1 accuracy in [0, 1].
#[derive(Clone, Debug, Serialize)]
pub struct Column {
    pub label: String,
    pub accuracy: BTreeMap<String, f64>,
}

/// Reads a column from an evaluation JSON: `{"departments": [{"name": …, KEY: acc}]}` where
/// KEY is the first of `experts`, `accuracy`, `top1` present (both `eval` and `eval-bundle`).
pub fn read_column(label: &str, path: &Path) -> Result<Column> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let depts = v["departments"]
        .as_array()
        .with_context(|| format!("{}: no `departments` array", path.display()))?;
    let mut accuracy = BTreeMap::new();
    for d in depts {
        let name = d["name"]
            .as_str()
            .with_context(|| format!("{}: department without `name`", path.display()))?;
        let acc = ["experts", "accuracy", "top1"]
            .iter()
            .find_map(|k| d[*k].as_f64())
            .with_context(|| format!("{}: department {name} has no accuracy", path.display()))?;
        accuracy.insert(name.to_string(), acc);
    }
    Ok(Column {
        label: label.to_string(),
        accuracy,
    })
}

/// One training curve: a label and (epoch, validation mean accuracy, loss) points.
#[derive(Clone, Debug, Serialize)]
pub struct Curve {
    pub label: String,
    pub points: Vec<(f64, f64, f64)>,
}

/// Reads `metrics.jsonl` (one JSON object per epoch with `epoch`, `val_mean`, `loss`).
/// Lines of per-department runs (`stl`) are averaged per epoch.
pub fn read_curve(label: &str, path: &Path) -> Result<Curve> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut by_epoch: BTreeMap<u64, (f64, f64, f64)> = BTreeMap::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
        let epoch = v["epoch"]
            .as_u64()
            .with_context(|| format!("{}:{}: no `epoch`", path.display(), i + 1))?;
        let acc = v["val_mean"].as_f64().unwrap_or(f64::NAN);
        let loss = v["loss"].as_f64().unwrap_or(f64::NAN);
        let e = by_epoch.entry(epoch).or_insert((0.0, 0.0, 0.0));
        *e = (e.0 + acc, e.1 + loss, e.2 + 1.0);
    }
    let points = by_epoch
        .into_iter()
        .map(|(ep, (a, l, n))| (ep as f64, a / n, l / n))
        .collect();
    Ok(Curve {
        label: label.to_string(),
        points,
    })
}

/// The report: columns joined on department names, plus free-form facts (sizes, timings).
#[derive(Debug, Serialize)]
pub struct Report {
    pub departments: Vec<String>,
    pub columns: Vec<Column>,
    pub means: BTreeMap<String, f64>,
    pub facts: BTreeMap<String, Value>,
}

impl Report {
    /// Joins the columns; departments are those of the first column, in its order.
    pub fn new(columns: Vec<Column>, facts: BTreeMap<String, Value>) -> Result<Self> {
        let Some(first) = columns.first() else {
            bail!("a report needs at least one accuracy column")
        };
        let departments: Vec<String> = first.accuracy.keys().cloned().collect();
        let mut means = BTreeMap::new();
        for c in &columns {
            for d in &departments {
                if !c.accuracy.contains_key(d) {
                    bail!("column {} has no department {d}", c.label);
                }
            }
            let m = departments.iter().map(|d| c.accuracy[d]).sum::<f64>()
                / departments.len().max(1) as f64;
            means.insert(c.label.clone(), m);
        }
        Ok(Report {
            departments,
            columns,
            means,
            facts,
        })
    }

    /// The table as text: a row per department, a column per model, then the mean.
    pub fn table(&self) -> String {
        let w = self
            .departments
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(4)
            .max(10);
        let cw = self
            .columns
            .iter()
            .map(|c| c.label.len())
            .max()
            .unwrap_or(6)
            .max(8);
        let mut s = format!("{:<w$}", "department");
        for c in &self.columns {
            s += &format!("  {:>cw$}", c.label);
        }
        s.push('\n');
        for d in &self.departments {
            s += &format!("{d:<w$}");
            for c in &self.columns {
                s += &format!("  {:>cw$.1}", 100.0 * c.accuracy[d]);
            }
            s.push('\n');
        }
        s += &format!("{:<w$}", "mean");
        for c in &self.columns {
            s += &format!("  {:>cw$.1}", 100.0 * self.means[&c.label]);
        }
        s.push('\n');
        for (k, v) in &self.facts {
            s += &format!("{k}: {v}\n");
        }
        s
    }
}

/// Registers a system TrueType font for plot text (plotters' `ab_glyph` backend needs one).
fn register_font() -> Result<()> {
    const CANDIDATES: &[&str] = &[
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    ];
    let path = CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("no TrueType font found for the plots (install fonts-dejavu-core)")?;
    let bytes: &'static [u8] = Box::leak(std::fs::read(&path)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{}: not a usable font", path.display()))
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plotting: {e:?}")
}

/// Training curves: validation mean accuracy (left) and loss (right) per epoch.
pub fn plot_curves(curves: &[Curve], out: &Path) -> Result<()> {
    register_font()?;
    let root = BitMapBackend::new(out, (1200, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (left, right) = root.split_horizontally(600);
    let max_epoch = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let max_loss = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.2))
        .filter(|l| l.is_finite())
        .fold(0.1, f64::max);
    for (area, title, ymax, pick) in [
        (
            &left,
            "validation accuracy (mean over departments)",
            1.0,
            1usize,
        ),
        (&right, "training loss", max_loss * 1.05, 2usize),
    ] {
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..max_epoch, 0.0..ymax)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .draw()
            .map_err(plot_err)?;
        for (i, c) in curves.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let pts: Vec<(f64, f64)> = c
                .points
                .iter()
                .map(|p| (p.0, if pick == 1 { p.1 } else { p.2 }))
                .filter(|p| p.1.is_finite())
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(plot_err)?
                .label(c.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                .map_err(plot_err)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

/// Grouped bars: per department, one bar per column.
pub fn plot_accuracy(report: &Report, out: &Path) -> Result<()> {
    register_font()?;
    let n = report.departments.len();
    let k = report.columns.len();
    let root = BitMapBackend::new(out, (350 + 120 * n as u32 * k.max(1) as u32 / 2, 480))
        .into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("top-1 accuracy per department", ("sans-serif", 22))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        // Half a group of room on the right for the legend, so it never covers a bar.
        .build_cartesian_2d(0.0..n as f64 + 0.5, 0.0..110.0)
        .map_err(plot_err)?;
    // Numeric x ticks would land between bars: name each department's group in the plot instead.
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("%")
        .draw()
        .map_err(plot_err)?;
    chart
        .draw_series(report.departments.iter().enumerate().map(|(i, d)| {
            Text::new(
                d.clone(),
                (i as f64 + 0.1, 108.0),
                ("sans-serif", 16).into_font(),
            )
        }))
        .map_err(plot_err)?;
    let width = 0.8 / k.max(1) as f64;
    for (j, c) in report.columns.iter().enumerate() {
        let color = Palette99::pick(j).to_rgba();
        let bars: Vec<_> = report
            .departments
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let x0 = i as f64 + 0.1 + j as f64 * width;
                Rectangle::new(
                    [(x0, 0.0), (x0 + width * 0.95, 100.0 * c.accuracy[d])],
                    color.filled(),
                )
            })
            .collect();
        chart
            .draw_series(bars)
            .map_err(plot_err)?
            .label(c.label.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn joins_columns_and_draws_pngs() {
        let dir = std::env::temp_dir().join(format!("lorkd-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = write(
            &dir,
            "a.json",
            r#"{"departments":[{"name":"lung","experts":0.5},{"name":"skin","experts":1.0}]}"#,
        );
        let b = write(
            &dir,
            "b.json",
            r#"{"departments":[{"name":"skin","accuracy":0.25},{"name":"lung","accuracy":0.75}]}"#,
        );
        let r = Report::new(
            vec![read_column("A", &a).unwrap(), read_column("B", &b).unwrap()],
            BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(r.departments, vec!["lung", "skin"]);
        assert!((r.means["A"] - 0.75).abs() < 1e-12 && (r.means["B"] - 0.5).abs() < 1e-12);
        let t = r.table();
        assert!(
            t.contains("lung") && t.contains("75.0") && t.contains("50.0"),
            "{t}"
        );
        let m = write(&dir, "m.jsonl", "{\"epoch\":1,\"val_mean\":0.4,\"loss\":2.0}\n{\"epoch\":2,\"val_mean\":0.6,\"loss\":1.0}\n");
        let c = read_curve("lorkd", &m).unwrap();
        assert_eq!(c.points, vec![(1.0, 0.4, 2.0), (2.0, 0.6, 1.0)]);
        if register_font().is_ok() {
            plot_curves(&[c], &dir.join("curves.png")).unwrap();
            plot_accuracy(&r, &dir.join("acc.png")).unwrap();
            for f in ["curves.png", "acc.png"] {
                let bytes = std::fs::read(dir.join(f)).unwrap();
                assert_eq!(&bytes[1..4], b"PNG", "{f} is not a PNG");
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn missing_department_is_an_error() {
        let dir = std::env::temp_dir().join(format!("lorkd-report-miss-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = write(
            &dir,
            "a.json",
            r#"{"departments":[{"name":"lung","experts":0.5}]}"#,
        );
        let b = write(
            &dir,
            "b.json",
            r#"{"departments":[{"name":"skin","experts":0.5}]}"#,
        );
        let err = Report::new(
            vec![read_column("A", &a).unwrap(), read_column("B", &b).unwrap()],
            BTreeMap::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("lung"), "{err}");
        assert!(read_column("X", &dir.join("nope.json")).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
