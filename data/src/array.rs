//! Between `ndarray` arrays and the flat buffers that the runtime's engine, libtorch and the
//! bundle writer take: the elements in logical (C) order, without a copy when the array is
//! already laid out that way (every array lorkd-data makes is).
use std::borrow::Cow;

use ndarray::{Array, ArrayBase, Data, Dimension};

/// The elements of `a` in logical order as one slice: borrowed when `a` is contiguous in
/// that order, copied otherwise.
pub fn flat<T: Clone, S: Data<Elem = T>, D: Dimension>(a: &ArrayBase<S, D>) -> Cow<'_, [T]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().cloned().collect()),
    }
}

/// The elements of `a` in logical order as a vector: its own buffer when `a` is in standard
/// layout, a copy otherwise.
pub fn into_flat<T: Clone, D: Dimension>(a: Array<T, D>) -> Vec<T> {
    if a.is_standard_layout() {
        a.into_raw_vec_and_offset().0
    } else {
        a.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logical_order_whatever_the_layout() {
        let a = ndarray::array![[1, 2, 3], [4, 5, 6]];
        assert!(matches!(flat(&a), Cow::Borrowed(&[1, 2, 3, 4, 5, 6])));
        assert_eq!(&*flat(&a.t()), &[1, 4, 2, 5, 3, 6]);
        assert_eq!(into_flat(a.t().to_owned()), [1, 4, 2, 5, 3, 6]);
        assert_eq!(into_flat(a.reversed_axes()), [1, 4, 2, 5, 3, 6]);
    }
}
