//! The cloud regions `meridian import istio` can recognise, with where they are: AWS's region
//! names, each with the coordinates of its metro area (for Meridian's distance ranking) and
//! its continent code (for `steering.continents`). Read by `regions` (inference and flags) and
//! `locality` (localityLbSetting); nothing else.

/// A region Meridian can place without being told where it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KnownRegion {
    pub name: &'static str,
    pub lat: f64,
    pub lon: f64,
    /// Continent code as `steering.continents` spells it (AF AN AS EU NA OC SA).
    pub continent: &'static str,
}

const fn region(name: &'static str, lat: f64, lon: f64, continent: &'static str) -> KnownRegion {
    KnownRegion {
        name,
        lat,
        lon,
        continent,
    }
}

/// AWS regions. Coordinates are the metro area's, to a tenth of a degree: enough to rank
/// regions by distance, which is all Meridian uses them for.
pub const AWS_REGIONS: &[KnownRegion] = &[
    region("us-east-1", 38.9, -77.4, "NA"),
    region("us-east-2", 40.0, -83.0, "NA"),
    region("us-west-1", 37.4, -121.9, "NA"),
    region("us-west-2", 45.8, -119.7, "NA"),
    region("us-gov-east-1", 40.0, -83.0, "NA"),
    region("us-gov-west-1", 45.8, -119.7, "NA"),
    region("ca-central-1", 45.5, -73.6, "NA"),
    region("ca-west-1", 51.0, -114.1, "NA"),
    region("mx-central-1", 20.6, -100.4, "NA"),
    region("sa-east-1", -23.5, -46.6, "SA"),
    region("eu-west-1", 53.3, -6.3, "EU"),
    region("eu-west-2", 51.5, -0.1, "EU"),
    region("eu-west-3", 48.9, 2.4, "EU"),
    region("eu-central-1", 50.1, 8.7, "EU"),
    region("eu-central-2", 47.4, 8.5, "EU"),
    region("eu-north-1", 59.3, 18.1, "EU"),
    region("eu-south-1", 45.5, 9.2, "EU"),
    region("eu-south-2", 41.6, -0.9, "EU"),
    region("il-central-1", 32.1, 34.8, "AS"),
    region("me-south-1", 26.1, 50.6, "AS"),
    region("me-central-1", 25.2, 55.3, "AS"),
    region("af-south-1", -33.9, 18.4, "AF"),
    region("ap-east-1", 22.3, 114.2, "AS"),
    region("ap-east-2", 25.0, 121.5, "AS"),
    region("ap-south-1", 19.1, 72.9, "AS"),
    region("ap-south-2", 17.4, 78.5, "AS"),
    region("ap-southeast-1", 1.35, 103.8, "AS"),
    region("ap-southeast-2", -33.9, 151.2, "OC"),
    region("ap-southeast-3", -6.2, 106.8, "AS"),
    region("ap-southeast-4", -37.8, 145.0, "OC"),
    region("ap-southeast-5", 3.1, 101.7, "AS"),
    region("ap-southeast-7", 13.8, 100.5, "AS"),
    region("ap-northeast-1", 35.7, 139.7, "AS"),
    region("ap-northeast-2", 37.6, 127.0, "AS"),
    region("ap-northeast-3", 34.7, 135.5, "AS"),
    region("cn-north-1", 39.9, 116.4, "AS"),
    region("cn-northwest-1", 37.5, 105.2, "AS"),
];

/// The known region named exactly `name`.
pub fn known(name: &str) -> Option<&'static KnownRegion> {
    AWS_REGIONS.iter().find(|r| r.name == name)
}

/// Great-circle distance in km (for "which region is next nearest").
pub fn distance_km(a: &KnownRegion, b: &KnownRegion) -> f64 {
    let (la1, lo1, la2, lo2) = (
        a.lat.to_radians(),
        a.lon.to_radians(),
        b.lat.to_radians(),
        b.lon.to_radians(),
    );
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_coordinates_sane() {
        for (i, r) in AWS_REGIONS.iter().enumerate() {
            assert!(
                AWS_REGIONS[i + 1..].iter().all(|o| o.name != r.name),
                "{}",
                r.name
            );
            assert!((-90.0..=90.0).contains(&r.lat) && (-180.0..=180.0).contains(&r.lon));
            assert!(
                ["AF", "AN", "AS", "EU", "NA", "OC", "SA"].contains(&r.continent),
                "{}",
                r.name
            );
        }
    }

    #[test]
    fn distances() {
        let (us, eu, ap) = (
            known("us-east-1").unwrap(),
            known("eu-west-1").unwrap(),
            known("ap-southeast-1").unwrap(),
        );
        let d = distance_km(us, eu);
        assert!((5000.0..6000.0).contains(&d), "{d}");
        assert!(distance_km(us, ap) > distance_km(us, eu));
        assert_eq!(distance_km(us, us), 0.0);
    }
}
