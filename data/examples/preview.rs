//! Writes a contact sheet of synthetic departments: one row per department, 4 images per
//! class. `cargo run -p lorkd-data --example preview -- [SPEC] [OUT.png]`.

use lorkd_data::{synthetic, DataSpec, Split};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let spec = args.next().unwrap_or_else(|| "synthetic".into());
    let out = args.next().unwrap_or_else(|| "synthetic.png".into());
    let DataSpec::Synthetic(spec) = DataSpec::parse(&spec)? else {
        return Err("preview needs a synthetic spec".into());
    };
    let (s, per) = (spec.size, 4usize);
    let mut grid =
        image::RgbImage::new(s * (spec.classes * per) as u32, s * spec.departments as u32);
    for d in 0..spec.departments {
        for c in 0..spec.classes {
            for i in 0..per {
                let img = synthetic::render(&spec, d, c, Split::Train, i);
                let x = ((c * per + i) as u32 * s) as i64;
                image::imageops::replace(&mut grid, &img, x, (d as u32 * s) as i64);
            }
        }
    }
    grid.save(&out)?;
    println!("wrote {out}: rows = departments, {per} images per class, classes left to right");
    Ok(())
}
