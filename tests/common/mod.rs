//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

pub mod agent;
pub mod cluster;
pub mod docker;
pub mod files;
pub mod images;
pub mod orc;
pub mod state_size;
