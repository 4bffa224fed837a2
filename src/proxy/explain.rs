//! `x-meridian-decision`: the decision, written out for a trusted client that asked.

use super::*;

/// The `x-meridian-decision` summary of a routing decision (same facts as `/explain`).
pub(super) fn explain_decision(table: &RoutingTable, d: &RouteDecision<'_>) -> String {
    let order: Vec<String> = d
        .order
        .as_slice()
        .iter()
        .map(|r| {
            format!(
                "{}={:.0}%{}",
                table.region_name(*r),
                d.cluster.health(*r).share() * 100.0,
                if d.cluster.peer_down(*r) {
                    "(peer down)"
                } else {
                    ""
                }
            )
        })
        .collect();
    let hash = match d.cluster.affinity.as_deref() {
        Some(a) => format!(
            "; {}",
            crate::route::affinity::explain(a, d.affinity.as_deref())
        ),
        None => String::new(),
    };
    format!(
        "client {} via {} country {} continent {} location {}; route {} cluster {}; order {}; region {}{}; endpoint {}{hash}",
        d.client,
        match d.client_source {
            AddrSource::Peer => "peer",
            AddrSource::ForwardedFor => "x-forwarded-for",
        },
        d.location
            .country
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into()),
        d.location
            .continent
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into()),
        d.location.source.as_str(),
        d.route.name,
        d.cluster.name,
        order.join(","),
        table.region_name(d.region),
        if d.panic { " (panic)" } else { "" },
        d.endpoint.address,
    )
}
