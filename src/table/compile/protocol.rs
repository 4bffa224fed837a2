//! Checks of a cluster's `protocol`: the TLS-only protocols need the cluster's `tls` block.
//! Called by the cluster compiler (`clusters.rs`) when it builds the pool.

use super::*;
use crate::config::UpstreamProtocol;

/// Report a protocol that cannot work with the rest of the cluster's config.
pub(super) fn check(compiler: &mut Compiler<'_>, here: &YamlPath, cluster: &ClusterConfig) {
    let protocol = cluster.protocol;
    if protocol.needs_tls() && cluster.tls.is_none() {
        compiler.problems.at(
            here.key("protocol"),
            format!(
                "`{}` negotiates HTTP/2 with ALPN in TLS: add a `tls` block, or use `h2c` for \
                 HTTP/2 without TLS",
                protocol.as_str()
            ),
        );
    }
    if protocol == UpstreamProtocol::H2c && cluster.tls.is_some() {
        compiler.problems.at(
            here.key("protocol"),
            "`h2c` is HTTP/2 without TLS, but the cluster has a `tls` block: use `http2`",
        );
    }
}
