//! Grad-CAM (Selvaraju et al. 2017), the paper's Fig. 3: where a network looks for a class.
//! With feature map `A [C, h, w]` and class score `y`, `w_c = mean_hw ∂y/∂A_c` and
//! `cam = ReLU(Σ_c w_c A_c)`, upsampled to the input and scaled to `[0, 1]`. Our heads are
//! linear over the pooled map, so `w_c = W[y, c] / (h·w)` and Grad-CAM equals the class
//! activation map of Zhou et al. — the test checks exactly that identity.
use image::{Rgb, RgbImage};
use tch::{Kind, Tensor};

/// A heat map at input resolution (row-major, values in `[0, 1]`) and the class it explains.
#[derive(Clone, Debug)]
pub struct Cam {
    /// `side × side` values in `[0, 1]` (all 0 when nothing is positive).
    pub map: Vec<f32>,
    /// Map side (the input's).
    pub side: usize,
    /// The class explained.
    pub class: i64,
    /// Its softmax probability.
    pub prob: f64,
}

/// Grad-CAM of one image `x [1, C, S, S]`: `feature_map(x)` gives `A [1, C', h, w]`,
/// `head(pooled [1, C'])` the logits; `class` None explains the predicted class.
///
/// # Errors
/// libtorch errors from the backward pass.
pub fn gradcam(
    x: &Tensor,
    feature_map: impl Fn(&Tensor) -> Tensor,
    head: impl Fn(&Tensor) -> Tensor,
    class: Option<i64>,
) -> anyhow::Result<Cam> {
    let side = x.size()[2];
    let a = feature_map(x).detach().set_requires_grad(true);
    let logits = head(&a.mean_dim([2i64, 3].as_slice(), false, None));
    let class = class.unwrap_or_else(|| logits.argmax(-1, false).int64_value(&[0]));
    let prob = logits.softmax(-1, Kind::Float).double_value(&[0, class]);
    let y = logits.get(0).get(class);
    let grads = Tensor::run_backward(&[y], &[&a], false, false);
    let w = grads[0].mean_dim([2i64, 3].as_slice(), true, None);
    let cam = (w * a.detach())
        .sum_dim_intlist(1, true, Kind::Float)
        .relu()
        .upsample_bilinear2d([side, side], false, None, None);
    let max = cam.max().double_value(&[]);
    let cam = if max > 0.0 { cam / max } else { cam };
    Ok(Cam {
        map: Vec::try_from(cam.reshape([-1]).to_device(tch::Device::Cpu))?,
        side: side as usize,
        class,
        prob,
    })
}

/// The jet colour map at `v ∈ [0, 1]` (blue → cyan → yellow → red).
pub fn jet(v: f32) -> [u8; 3] {
    let v = v.clamp(0.0, 1.0);
    let c = |x: f32| ((1.5 - (4.0 * v - x).abs()).clamp(0.0, 1.0) * 255.0) as u8;
    [c(3.0), c(2.0), c(1.0)]
}

/// `base` (an RGB image of the map's side) blended half and half with the jet-coloured map.
pub fn overlay(base: &RgbImage, cam: &Cam) -> RgbImage {
    let s = cam.side as u32;
    let base = image::imageops::resize(base, s, s, image::imageops::FilterType::Triangle);
    RgbImage::from_fn(s, s, |x, y| {
        let h = jet(cam.map[(y * s + x) as usize]);
        let b = base.get_pixel(x, y).0;
        Rgb([0, 1, 2].map(|i| ((u16::from(b[i]) + u16::from(h[i])) / 2) as u8))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, nn::Module, Device};

    /// Grad-CAM of a linear head over a pooled map is the class activation map
    /// `ReLU(Σ_c W[y,c] A_c)`, normalised.
    #[test]
    fn gradcam_of_a_linear_head_is_the_class_activation_map() {
        let seed = crate::testing::seeded("gradcam");
        let _ = seed;
        let vs = nn::VarStore::new(Device::Cpu);
        let conv = nn::conv2d(vs.root() / "c", 3, 5, 3, nn::ConvConfig::default());
        let fc = nn::linear(vs.root() / "fc", 5, 4, Default::default());
        let x = Tensor::randn([1, 3, 12, 12], (Kind::Float, Device::Cpu));
        let fmap = |x: &Tensor| conv.forward(x).relu();
        for class in [None, Some(2)] {
            let cam = gradcam(&x, fmap, |f| fc.forward(f), class).unwrap();
            assert_eq!((cam.side, cam.map.len()), (12, 144));
            let a = fmap(&x).detach(); // [1, 5, 10, 10]
            let want_class = class.unwrap_or_else(|| {
                fc.forward(&a.mean_dim([2i64, 3].as_slice(), false, None))
                    .argmax(-1, false)
                    .int64_value(&[0])
            });
            assert_eq!(cam.class, want_class);
            let w = fc.ws.get(want_class).reshape([1, 5, 1, 1]);
            let want = (w * &a)
                .sum_dim_intlist(1, true, Kind::Float)
                .relu()
                .upsample_bilinear2d([12, 12], false, None, None);
            let m = want.max().double_value(&[]);
            let want: Vec<f32> =
                Vec::try_from(if m > 0.0 { want / m } else { want }.reshape([-1])).unwrap();
            for (g, w) in cam.map.iter().zip(&want) {
                assert!((g - w).abs() < 1e-4, "{g} vs {w}");
            }
            assert!(cam.map.iter().all(|v| (0.0..=1.0).contains(v)));
            assert!((0.0..=1.0).contains(&cam.prob));
        }
        assert!(jet(0.0)[2] > 100, "cold is blue");
        assert!(jet(1.0)[0] > 100, "hot is red");
    }
}
