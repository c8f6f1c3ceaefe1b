//! lorkd-tools: fuse, fold and quantize LoRKD experts into one bundle; inspect, verify
//! against tract, export ONNX, make and apply signed department updates.
pub mod cmd;
