//! The paper's figures as plots (`plotters`): one per operation (Load,
//! Store, Copy), median time against block size, one line per mode, in SVG
//! and PNG. PNG text is drawn with a TrueType font read at run time
//! (`--font`, `$IBP_BENCH_FONT`, else DejaVu Sans from /usr/share/fonts).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::paper::{Mode, Op};
use crate::report::{title, Stat};

/// Where DejaVu Sans usually is.
const FONTS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];
const SIZE: (u32, u32) = (900, 560);

/// One figure's files, or why a file could not be written.
pub struct Plotted {
    pub op: Op,
    pub files: Vec<PathBuf>,
    pub error: Option<String>,
}

pub fn write_all(
    st: &BTreeMap<(Op, Mode, u64), Stat>,
    sizes: &[u64],
    out: &Path,
    font: Option<&Path>,
) -> Vec<Plotted> {
    let font_ok = register_font(font);
    [Op::Load, Op::Store, Op::Copy]
        .into_iter()
        .map(|op| {
            let mut p = Plotted {
                op,
                files: Vec::new(),
                error: None,
            };
            let series = series(st, sizes, op);
            let stem = op_stem(op);
            let svg = out.join(format!("{stem}.svg"));
            match draw(SVGBackend::new(&svg, SIZE).into_drawing_area(), op, &series) {
                Ok(()) => p.files.push(svg),
                Err(e) => p.error = Some(format!("{}: {e}", svg.display())),
            }
            let png = out.join(format!("{stem}.png"));
            match &font_ok {
                Ok(()) => match draw(
                    BitMapBackend::new(&png, SIZE).into_drawing_area(),
                    op,
                    &series,
                ) {
                    Ok(()) => p.files.push(png),
                    Err(e) => p.error = Some(format!("{}: {e}", png.display())),
                },
                Err(e) => p.error = Some(format!("{} not written: {e}", png.display())),
            }
            p
        })
        .collect()
}

fn op_stem(op: Op) -> &'static str {
    match op {
        Op::Load => "figure1-load",
        Op::Store => "figure2-store",
        Op::Copy => "figure3-copy",
        Op::Allocate => "allocate",
        Op::Allocate2 => "allocate-target",
    }
}

/// Per mode: (MB, median ms) points.
fn series(
    st: &BTreeMap<(Op, Mode, u64), Stat>,
    sizes: &[u64],
    op: Op,
) -> Vec<(Mode, Vec<(f64, f64)>)> {
    Mode::ALL
        .into_iter()
        .map(|mode| {
            let pts = sizes
                .iter()
                .filter_map(|&mb| st.get(&(op, mode, mb)).map(|s| (mb as f64, s.median * 1e3)))
                .collect();
            (mode, pts)
        })
        .collect()
}

fn colour(mode: Mode) -> RGBColor {
    match mode {
        Mode::Legacy => RGBColor(0x1f, 0x77, 0xb4),
        Mode::Crypto => RGBColor(0xff, 0x7f, 0x0e),
        Mode::Full => RGBColor(0x2c, 0xa0, 0x2c),
    }
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    op: Op,
    series: &[(Mode, Vec<(f64, f64)>)],
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("{e:?}");
    root.fill(&WHITE).map_err(e)?;
    let xmax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.0))
        .fold(1.0f64, f64::max)
        * 1.05;
    let ymax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .fold(1e-3f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title(op), ("sans-serif", 26))
        .margin(16)
        .x_label_area_size(46)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("block size (MB)")
        .y_desc("median time (ms)")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(e)?;
    for (mode, pts) in series {
        let c = colour(*mode);
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
            .map_err(e)?
            .label(mode.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// Registers the PNG font once per process.
fn register_font(font: Option<&Path>) -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let candidates: Vec<PathBuf> = font
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("IBP_BENCH_FONT").map(PathBuf::from))
            .map(|p| vec![p])
            .unwrap_or_else(|| FONTS.iter().map(PathBuf::from).collect());
        let (path, bytes) = candidates
            .iter()
            .find_map(|p| std::fs::read(p).ok().map(|b| (p.clone(), b)))
            .ok_or_else(|| {
                format!(
                    "no TrueType font for the PNG text ({}): install fonts-dejavu-core, or give --font / IBP_BENCH_FONT",
                    candidates
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        // plotters keeps the font for the process's lifetime.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{} is not a usable TrueType font", path.display()))
    })
    .clone()
}
