//! Compiled route policies: what each policy decides per request, as plain data and pure
//! functions over it. Built by `table/compile`, hung off a `Route` as an `Option` that is
//! `None` for a route without the policy; applied by `proxy/policies`.

pub mod chance;
pub mod cors;
pub mod explain;
pub mod fault;
pub mod mirror;
