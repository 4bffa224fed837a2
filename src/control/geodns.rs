//! Starting, keeping and moving the GeoDNS listener with the table: `lifecycle` binds it at
//! start, `reload` binds a moved one before the new table is swapped in (so a port in use
//! fails the reload and the old table keeps serving) and stops the old one after.

use std::net::SocketAddr;

use crate::control::ControlError;
use crate::control::lifecycle::Server;
use crate::dns::server::{self, DnsListener, DnsSockets};
use crate::table::RoutingTable;

/// What a new table asks of the listener in service.
pub(crate) enum DnsChange {
    /// Same address (or still none): nothing to do; queries read the new table.
    Keep,
    /// No `geodns` any more: stop the listener.
    Stop,
    /// A new or moved listener, already bound.
    Start(SocketAddr, DnsSockets),
}

/// Bind the table's listener, when it has one.
pub(crate) fn bind(table: &RoutingTable) -> Result<Option<(SocketAddr, DnsSockets)>, ControlError> {
    let Some(geodns) = table.geodns.as_deref() else {
        return Ok(None);
    };
    server::bind(geodns.listen)
        .map(|s| Some((geodns.listen, s)))
        .map_err(|source| ControlError::Bind {
            name: "geodns".into(),
            addr: geodns.listen,
            source,
        })
}

/// What `table` changes for the listener in service (binding a moved one now).
pub(crate) fn prepare(
    current: Option<&DnsListener>,
    table: &RoutingTable,
) -> Result<DnsChange, ControlError> {
    let wanted = table.geodns.as_deref().map(|g| g.listen);
    match (current, wanted) {
        (None, None) => Ok(DnsChange::Keep),
        (Some(_), None) => Ok(DnsChange::Stop),
        (Some(l), Some(addr)) if l.configured == addr => Ok(DnsChange::Keep),
        (_, Some(_)) => match bind(table)? {
            Some((configured, sockets)) => Ok(DnsChange::Start(configured, sockets)),
            None => Ok(DnsChange::Keep),
        },
    }
}

/// Apply `change` after the new table is in service.
pub(crate) fn apply(server: &Server, current: &mut Option<DnsListener>, change: DnsChange) {
    match change {
        DnsChange::Keep => {
            let limit = server
                .table
                .load()
                .geodns
                .as_ref()
                .map(|g| g.tcp_max_connections);
            if let (Some(listener), Some(limit)) = (current.as_mut(), limit) {
                listener.set_tcp_limit(limit, &server.tracker);
            }
        }
        DnsChange::Stop => {
            if let Some(old) = current.take() {
                tracing::info!(addr = %old.addr, "GeoDNS listener removed by reload");
                old.stop.cancel();
            }
        }
        DnsChange::Start(configured, sockets) => {
            if let Some(old) = current.take() {
                old.stop.cancel();
            }
            *current = serve(server, configured, sockets);
        }
    }
}

/// Serve bound sockets on the calling (control) runtime.
pub(crate) fn serve(
    server: &Server,
    configured: SocketAddr,
    sockets: DnsSockets,
) -> Option<DnsListener> {
    match server::serve(
        &server.table,
        configured,
        sockets,
        &server.tracker,
        &server.shutdown,
    ) {
        Ok(listener) => Some(listener),
        Err(e) => {
            tracing::error!("GeoDNS listener could not start: {e}");
            None
        }
    }
}
