//! `cargo fuzz run npy`: arbitrary bytes into the one `.npy` reader (`lorkd_data::npy`),
//! which `lorkd run` and the MedMNIST loader use: an error or an array whose length matches
//! its shape, never a panic, a hang or a huge allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = lorkd_data::npy::read_f32(data) {
        let n = a.shape().iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        assert_eq!(n, Some(a.len()));
    }
    let mut r = data;
    let _ = lorkd_data::npy::read_header(&mut r);
});
