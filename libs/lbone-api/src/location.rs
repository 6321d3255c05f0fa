//! Locations: WGS 84 coordinates and great-circle distances.

use serde::{Deserialize, Serialize};

/// Mean Earth radius (km) used by the haversine formula.
pub const EARTH_RADIUS_KM: f64 = 6371.0088;

/// A point on Earth in decimal degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Location {
    /// Latitude, -90 (south) to 90 (north).
    pub lat: f64,
    /// Longitude, -180 (west) to 180 (east).
    pub lon: f64,
}

impl Location {
    /// A location, if both coordinates are finite and in range.
    pub fn new(lat: f64, lon: f64) -> Result<Location, String> {
        if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
            return Err(format!("latitude {lat} is not within -90..90"));
        }
        if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
            return Err(format!("longitude {lon} is not within -180..180"));
        }
        Ok(Location { lat, lon })
    }

    /// Parses `LAT,LON` in decimal degrees, e.g. `49.19,16.61`.
    pub fn parse(s: &str) -> Result<Location, String> {
        let (lat, lon) = s
            .split_once(',')
            .ok_or_else(|| format!("bad location {s:?}: expected LAT,LON"))?;
        let num = |v: &str, what: &str| {
            v.trim()
                .parse::<f64>()
                .map_err(|_| format!("bad location {s:?}: {what} is not a number"))
        };
        Location::new(num(lat, "latitude")?, num(lon, "longitude")?)
    }

    /// Great-circle distance in kilometres (haversine).
    pub fn distance_km(&self, other: &Location) -> f64 {
        let (p1, p2) = (self.lat.to_radians(), other.lat.to_radians());
        let dp = p2 - p1;
        let dl = (other.lon - self.lon).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.4},{:.4}", self.lat, self.lon)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_range() {
        assert_eq!(
            Location::parse("49.19, 16.61"),
            Ok(Location {
                lat: 49.19,
                lon: 16.61
            })
        );
        for bad in [
            "", "49.19", "a,b", "91,0", "0,181", "-90.5,0", "NaN,0", "inf,0", "1,2,3",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn haversine_distances() {
        let brno = Location::new(49.1951, 16.6068).unwrap();
        let prague = Location::new(50.0755, 14.4378).unwrap();
        let knoxville = Location::new(35.9606, -83.9207).unwrap();
        let d = brno.distance_km(&prague);
        assert!((d - 185.0).abs() < 5.0, "Brno-Prague {d}");
        let d = prague.distance_km(&knoxville);
        assert!((d - 7600.0).abs() < 150.0, "Prague-Knoxville {d}");
        assert_eq!(brno.distance_km(&brno), 0.0);
        // Antipodes: half the circumference, no NaN.
        let a = Location::new(0.0, 0.0).unwrap();
        let b = Location::new(0.0, 180.0).unwrap();
        let d = a.distance_km(&b);
        assert!(
            (d - std::f64::consts::PI * EARTH_RADIUS_KM).abs() < 1e-6,
            "{d}"
        );
    }
}
