//! Depot locations: WGS 84 coordinates and great-circle distances, the
//! `lbone_api` crate's (a query and a registration carry them).

pub use lbone_api::location::{Location, EARTH_RADIUS_KM};
