//! Synthetic departments, generated on the fly, deterministic on every machine.
//!
//! Every image carries the same four cues: the orientation of a texture (`angle`), the size
//! of round blobs (`size`), a colour hue (`hue`) and the spatial frequency of a texture
//! (`freq`). In department `d` exactly one cue decides the class (cue `(d + d/4) mod 4`, its
//! level order reversed for odd `d/4`); the other three are drawn at random, so they are
//! present but meaningless there. Each department also has its own look (`d mod 4`):
//! speckled ultrasound fans, X-ray bodies with bright nodules, dermoscopy lesions on skin,
//! H&E-like histology with nuclei. A shared network must read all four cues and route them
//! per department; an expert only needs its own — the situation LoRKD's decomposition is for.
//!
//! Orientation levels live in `[0°, 90°]` so that a horizontal flip (training augmentation)
//! never turns one class into another.

use std::f32::consts::PI;

use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::dataset::{Department, Item, Opened, Source, Split};
use crate::spec::SyntheticSpec;

const LOOKS: [&str; 4] = ["ultrasound", "xray", "dermoscopy", "histology"];
const CUES: [&str; 4] = ["angle", "size", "hue", "freq"];

/// Department `d`'s look (0 ultrasound, 1 X-ray, 2 dermoscopy, 3 histology).
pub fn look_of(dept: usize) -> usize {
    dept % 4
}

/// The cue that decides the class in department `d` (0 angle, 1 size, 2 hue, 3 freq).
pub fn cue_of(dept: usize) -> usize {
    (dept + dept / 4) % 4
}

/// Images per class per department in a split.
pub fn per_class(spec: &SyntheticSpec, split: Split) -> usize {
    match split {
        Split::Train => spec.per_class,
        Split::Val | Split::Test => (spec.per_class / 4).max(1),
    }
}

pub(crate) fn open(spec: &SyntheticSpec) -> Opened {
    let departments = (0..spec.departments)
        .map(|d| {
            let name = if d < 4 {
                LOOKS[d].to_string()
            } else {
                format!("{}-{}", LOOKS[look_of(d)], d / 4 + 1)
            };
            let cue = CUES[cue_of(d)];
            Department {
                name,
                classes: (0..spec.classes).map(|c| format!("{cue}-{c}")).collect(),
            }
        })
        .collect();
    let splits = Split::ALL.map(|split| {
        let n = per_class(spec, split);
        let mut items = Vec::with_capacity(spec.departments * spec.classes * n);
        for d in 0..spec.departments {
            for c in 0..spec.classes {
                for i in 0..n {
                    items.push(Item {
                        dept: d as u32,
                        class: c as u32,
                        key: i as u32,
                    });
                }
            }
        }
        items
    });
    (departments, splits, Source::Synthetic(spec.clone()))
}

/// SplitMix64 over the parts: one independent stream per image.
fn mix(parts: &[u64]) -> u64 {
    let mut h: u64 = 0x9E37_79B9_7F4A_7C15;
    for &p in parts {
        h ^= p
            .wrapping_add(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(h << 6)
            .wrapping_add(h >> 2);
        let mut z = h;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h = z ^ (z >> 31);
    }
    h
}

fn hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
    let h6 = (h.rem_euclid(1.0)) * 6.0;
    let i = h6.floor() as i32;
    let f = h6 - i as f32;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match i {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// Soft disc coverage with a one-pixel antialiased edge (`d`, `r` in pixels).
fn disc(d: f32, r: f32) -> f32 {
    (r - d + 0.5).clamp(0.0, 1.0)
}

/// Roughly N(0, 1) from three uniforms (cheap, deterministic, bounded).
fn noise(rng: &mut ChaCha8Rng) -> f32 {
    (rng.gen::<f32>() + rng.gen::<f32>() + rng.gen::<f32>() - 1.5) * 2.0
}

/// Renders image `index` of class `class` in department `dept` for a split.
pub fn render(
    spec: &SyntheticSpec,
    dept: usize,
    class: usize,
    split: Split,
    index: usize,
) -> RgbImage {
    let s = spec.size as usize;
    let sf = s as f32;
    let k = spec.classes;
    let mut rng = ChaCha8Rng::seed_from_u64(mix(&[
        spec.seed,
        dept as u64,
        class as u64,
        split as u64,
        index as u64,
    ]));
    let cue = cue_of(dept);
    let reversed = (dept / 4) % 2 == 1;
    // Cue values in (0, 1): level centre ± 0.3 of a level's width, so levels never overlap.
    let mut t = [0f32; 4];
    for (j, tj) in t.iter_mut().enumerate() {
        let level = if j == cue {
            if reversed {
                k - 1 - class
            } else {
                class
            }
        } else {
            rng.gen_range(0..k)
        };
        *tj = (level as f32 + 0.5 + rng.gen_range(-0.3..0.3)) / k as f32;
    }
    let theta = t[0] * PI / 2.0;
    let radius = sf * (0.03 + 0.15 * t[1]);
    let tint = hsv(t[2] * 0.8, 0.85, 1.0);
    let cycles = 2.0 + 6.0 * t[3];
    let phase = rng.gen_range(0.0..2.0 * PI);
    let (ct, st) = (theta.cos(), theta.sin());
    let grating = |u: f32, v: f32| (2.0 * PI * cycles * (u * ct + v * st) + phase).sin();
    let look = look_of(dept);
    let gain = rng.gen_range(0.88..1.12f32);
    let (dx, dy) = (rng.gen_range(-0.06..0.06f32), rng.gen_range(-0.06..0.06f32));

    // Blob centres (pixels) and radii, placed per look.
    let n_blobs = match look {
        0 => 2,
        1 => 3,
        2 => 4,
        _ => 4,
    };
    let blobs: Vec<(f32, f32, f32)> = (0..n_blobs)
        .map(|_| {
            let (cx, cy) = match look {
                // Inside the fan, mid depth.
                0 => (
                    0.5 + dx + rng.gen_range(-0.18..0.18),
                    rng.gen_range(0.35..0.75),
                ),
                // Inside the body.
                1 => (
                    0.5 + dx + rng.gen_range(-0.25..0.25),
                    0.5 + dy + rng.gen_range(-0.3..0.3),
                ),
                // Inside the lesion.
                2 => (
                    0.5 + dx + rng.gen_range(-0.17..0.17),
                    0.5 + dy + rng.gen_range(-0.17..0.17),
                ),
                _ => (rng.gen_range(0.08..0.92), rng.gen_range(0.08..0.92)),
            };
            (cx * sf, cy * sf, radius * rng.gen_range(0.85..1.15))
        })
        .collect();
    let blob_cover = |px: f32, py: f32| -> f32 {
        let mut m = 0f32;
        for &(bx, by, br) in &blobs {
            let d = ((px - bx).powi(2) + (py - by).powi(2)).sqrt();
            m = m.max(disc(d, br));
        }
        m
    };
    // Lesion outline (dermoscopy).
    let lesion_r = rng.gen_range(0.28..0.36f32);
    let (w1, w2) = (rng.gen_range(0.0..2.0 * PI), rng.gen_range(0.0..2.0 * PI));
    let skin = [0.87 * gain, 0.68 * gain, 0.58 * gain];
    let pink = [0.93, 0.62, 0.78];
    let purple = [0.35, 0.18, 0.55];

    let mut img = RgbImage::new(spec.size, spec.size);
    for y in 0..s {
        for x in 0..s {
            let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
            let (u, v) = (px / sf, py / sf);
            let g = grating(u, v);
            let m = blob_cover(px, py);
            let rgb: [f32; 3] = match look {
                0 => {
                    // Sector scan from an apex at the top: speckle × depth attenuation.
                    let (ax, ay) = (0.5 + dx, 0.03);
                    let rho = ((u - ax).powi(2) + (v - ay).powi(2)).sqrt();
                    let phi = (u - ax).atan2(v - ay);
                    let inside = ((0.92 - rho) * sf).clamp(0.0, 1.0)
                        * ((0.62 - phi.abs()) * sf * 0.5).clamp(0.0, 1.0);
                    let speckle = rng.gen_range(0.6..1.4f32);
                    let i = (0.45 + 0.3 * g)
                        * speckle
                        * (1.0 - 0.4 * rho)
                        * (1.0 - 0.8 * m)
                        * inside
                        * gain;
                    let bg = 0.02 * rng.gen::<f32>();
                    [0, 1, 2].map(|c| bg + i * (0.7 + 0.3 * tint[c]))
                }
                1 => {
                    // Body ellipse, rib-like oriented texture, bright nodules.
                    let e = ((u - 0.5 - dx) / 0.38).powi(2) + ((v - 0.5 - dy) / 0.45).powi(2);
                    let b = ((1.0 - e) * 6.0).clamp(0.0, 1.0);
                    let i =
                        (0.08 + 0.35 * b + 0.12 * g * b + 0.45 * m) * gain + 0.03 * noise(&mut rng);
                    [0, 1, 2].map(|c| i * (0.7 + 0.3 * tint[c]))
                }
                2 => {
                    // Pigmented lesion on skin; its colour is the hue, a network texture inside,
                    // dark globules.
                    let (lx, ly) = (u - 0.5 - dx, v - 0.5 - dy);
                    let phi = ly.atan2(lx);
                    let r = lesion_r
                        * (1.0 + 0.1 * (3.0 * phi + w1).sin() + 0.05 * (5.0 * phi + w2).sin());
                    let l = ((r - (lx * lx + ly * ly).sqrt()) * sf * 0.5).clamp(0.0, 1.0);
                    let lesion = tint.map(|c| 0.55 * c * (1.0 + 0.2 * g));
                    [0, 1, 2].map(|c| {
                        let base = skin[c] * (1.0 - l) + lesion[c] * l;
                        base * (1.0 - 0.5 * m) + 0.02 * noise(&mut rng)
                    })
                }
                _ => {
                    // H&E-like: tinted pink stroma with oriented fibres, purple nuclei.
                    let fib = 1.0 - 0.4 * (g + 1.0);
                    [0, 1, 2].map(|c| {
                        let bg = (0.7 * pink[c] + 0.3 * tint[c]) * fib * gain;
                        bg * (1.0 - m) + purple[c] * m + 0.03 * noise(&mut rng)
                    })
                }
            };
            img.put_pixel(
                x as u32,
                y as u32,
                image::Rgb(rgb.map(|c| (c.clamp(0.0, 1.0) * 255.0).round() as u8)),
            );
        }
    }
    img
}
