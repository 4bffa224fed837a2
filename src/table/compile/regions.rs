//! Compiling regions, the local region and the geo resolver.

use super::*;

impl<'a> Compiler<'a> {
    pub(super) fn region_ref(&mut self, at: YamlPath, name: &str) -> Option<RegionId> {
        let found = self.regions.get(name).copied();
        if found.is_none() {
            let known: Vec<&str> = self.config.regions.keys().map(String::as_str).collect();
            let hint = crate::config::words::nearest(name, &known)
                .map(|near| format!(" (did you mean `{near}`?)"))
                .unwrap_or_default();
            self.problems.at(
                at,
                format!(
                    "unknown region `{name}`{hint}; regions are: {}",
                    known.join(", ")
                ),
            );
        }
        found
    }

    pub(super) fn region_list(&mut self, at: YamlPath, names: &[String]) -> RegionOrder {
        let mut order = RegionOrder::default();
        for (i, name) in names.iter().enumerate() {
            if let Some(id) = self.region_ref(at.index(i), name) {
                order.push(id);
            }
        }
        order
    }

    pub(super) fn regions(&mut self) -> Vec<Region> {
        let at = root().key("regions");
        if self.config.regions.is_empty() {
            self.problems.at(
                at.clone(),
                "at least one region is required (name → { lat, lon })",
            );
        }
        if self.config.regions.len() > MAX_REGIONS {
            self.problems.at(
                at.clone(),
                format!("at most {MAX_REGIONS} regions are supported"),
            );
            return Vec::new();
        }
        let mut out = Vec::new();
        for (i, (name, region)) in self.config.regions.iter().enumerate() {
            let here = at.key(name.clone());
            if !is_valid_name(name) {
                self.problems.at(
                    here.clone(),
                    format!("region name `{name}` may only use letters, digits, '-', '_' and '.'"),
                );
            }
            if !(-90.0..=90.0).contains(&region.lat) {
                self.problems.at(
                    here.key("lat"),
                    format!("latitude {} is outside -90..90", region.lat),
                );
            }
            if !(-180.0..=180.0).contains(&region.lon) {
                self.problems.at(
                    here.key("lon"),
                    format!("longitude {} is outside -180..180", region.lon),
                );
            }
            self.regions.insert(name.as_str(), i as RegionId);
            out.push(Region {
                name: name.clone(),
                coords: (region.lat, region.lon),
                header: HeaderValue::from_str(name).unwrap_or(HeaderValue::from_static("invalid")),
            });
        }
        out
    }

    pub(super) fn local_region(&mut self) -> Option<RegionId> {
        match &self.config.local_region {
            Some(name) => self.region_ref(root().key("local_region"), name),
            None => {
                self.problems.at(
                    root(),
                    "local_region is required: the region this instance runs in, used first for clients whose location is unknown",
                );
                None
            }
        }
    }

    pub(super) fn geo(&mut self, database: Option<Arc<GeoDb>>) -> GeoResolver {
        let at = root().key("geo");
        let mut trusted = Vec::new();
        for (i, t) in self.config.geo.trusted_proxies.iter().enumerate() {
            match parse_net(t) {
                Some(net) => trusted.push(net),
                None => self.problems.at(
                    at.key("trusted_proxies").index(i),
                    format!("`{t}` is not a CIDR or IP address"),
                ),
            }
        }
        let mut overrides = Vec::new();
        for (i, o) in self.config.geo.overrides.iter().enumerate() {
            let here = at.key("overrides").index(i);
            let net = parse_net(&o.cidr);
            if net.is_none() {
                self.problems
                    .at(here.key("cidr"), format!("`{}` is not a CIDR", o.cidr));
            }
            let mut location = Location {
                source: LocationSource::Override,
                ..Location::default()
            };
            match (&o.country, &o.region) {
                (Some(country), None) => match CountryCode::parse(country) {
                    Some(code) => {
                        location.country = Some(code);
                        location.continent = code.continent();
                        location.coords = location.continent.map(|c| GeoPoint::new(c.centre()));
                    }
                    None => self.problems.at(
                        here.key("country"),
                        format!("`{country}` is not a two-letter country code"),
                    ),
                },
                (None, Some(region)) => {
                    location.region = self.region_ref(here.key("region"), region)
                }
                _ => self
                    .problems
                    .at(here.clone(), "give exactly one of `country` or `region`"),
            }
            match (o.lat, o.lon) {
                (Some(lat), Some(lon))
                    if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) =>
                {
                    location.coords = Some(GeoPoint::new((lat, lon)));
                }
                (None, None) => {}
                _ => self.problems.at(
                    here.clone(),
                    "lat and lon go together, within -90..90 and -180..180",
                ),
            }
            if let Some(net) = net {
                overrides.push(GeoOverride { net, location });
            }
        }
        // The demo's built-in database stands in for the files.
        let (database, v6) = match database {
            Some(db) => (Some(db), None),
            None => self.geo_databases(),
        };
        GeoResolver::new(trusted, overrides, database).with_ipv6_database(v6)
    }
}

/// A CIDR, or a bare address meaning just that address.
pub(super) fn parse_net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
        .map(|n| n.trunc())
}
