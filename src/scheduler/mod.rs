//! Deciding where tasks run: the cluster query language (`query`) and the
//! pure placement function (`placement`). No I/O here.

pub mod placement;
pub mod query;
