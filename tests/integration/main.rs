//! One integration-test binary (one link, shared helpers). Modules by feature; regression tests are
//! named after the bug they pin.

mod admin;
mod api;
mod backup;
mod bundle;
mod cli;
mod common;
mod crash;
mod disk_full;
mod fsck;
mod keys;
mod layering;
mod net;
mod openapi;
mod origin;
mod restart;
mod upgrade;
mod vectors;
