//! Scalar reference kernels: the specification every faster twin is tested against.
pub mod concat_shuffle;
pub mod conv;
pub mod conv1x1;
pub mod dwconv3x3;
pub mod gap;
pub mod linear;
pub mod maxpool;
pub mod relu;
pub mod requant_weights;
