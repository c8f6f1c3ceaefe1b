//! lorkd-tools: fuse, fold and quantize LoRKD experts into one bundle; inspect, verify
//! against tract, export ONNX, make and apply signed department updates.
#![deny(unsafe_code)]
pub mod arena_plan;
pub mod calibrate;
pub mod checkpoint;
pub mod cmd;
pub mod delta;
pub mod fold;
pub mod fsio;
pub mod graph;
pub mod input;
pub mod keys;
pub mod onnx;
pub mod pack;
pub mod quantize;
pub mod report;
pub mod trust;
pub mod verify;
