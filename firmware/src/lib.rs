//! lorkd-firmware: the board-agnostic device application. A host talks to it over a serial
//! port in COBS frames of postcard messages with a CRC-32 ([`proto`]); a debounced button
//! cycles departments ([`button`]); update packages stream chunk by chunk into the model's
//! update store, resumable after a reset. The model side is the [`model::Model`] trait,
//! implemented over `lorkd_runtime` (bundle in place from memory-mapped flash, engine, A/B
//! update store) by [`runtime_model::RuntimeModel`]; [`app::App`] ties it together. Boards
//! live in `boards/` (QEMU: `firmware/run-qemu`).
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

pub mod app;
pub mod button;
pub mod cobs;
pub mod crc;
pub mod fixture;
pub mod model;
pub mod proto;
// `MappedFlash` is an `unsafe trait`: implementors promise the flash is memory-mapped.
#[allow(unsafe_code)]
pub mod runtime_model;
