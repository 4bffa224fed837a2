//! The exchange with retries: one try after another within the route's retry policy and budget,
//! each against the region and endpoint the decision (or its retry target) names.

use super::*;
use crate::table::retry::RetryPolicy;
use crate::upstream::h2_exchange::H2Answer;

/// Counts a request against an endpoint while it is outstanding.
pub struct InFlight(Arc<EndpointState>);

impl InFlight {
    pub(super) fn new(state: &Arc<EndpointState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One attempt's result.
pub(super) enum Tried {
    Answered(UpstreamHead, PooledConn, AttemptGuards),
    /// An HTTP/2 upstream's answer (boxed: the HTTP/1.1 path keeps its size).
    AnsweredH2(Box<H2Answer>, AttemptGuards),
    Failed {
        failure: AttemptFailure,
        cause: AttemptError,
        /// The body, when it was never sent.
        unsent: Option<UpstreamBody>,
    },
    Refused(Overflow),
}

impl Tried {
    pub(super) fn summary(&self) -> String {
        match self {
            Self::Answered(head, _, _) => head.status.as_u16().to_string(),
            Self::AnsweredH2(answer, _) => answer.response.status().as_u16().to_string(),
            Self::Failed { failure, .. } => format!("{failure:?}"),
            Self::Refused(overflow) => format!("overflow {}", overflow.as_str()),
        }
    }
}

/// Try, and retry within the route's policy: other endpoints first, then later regions.
pub(super) async fn attempts(
    table: &RoutingTable,
    decision: &RouteDecision<'_>,
    request: Outgoing<'_>,
    mut body: ReplayBody,
    rng: &mut fastrand::Rng,
    trace: &mut Trace,
) -> Result<(Box<Answer>, RegionId), ProxyError> {
    let route = decision.route;
    let cluster = decision.cluster;
    let policy = &route.retries;
    let mut region = decision.region;
    let mut endpoint = decision.endpoint.clone();
    let mut tried: Vec<Arc<Endpoint>> = Vec::new();
    let mut retries = 0u32;
    let _active = Counted::new(&cluster.active_requests);
    // Taken at the first retry and kept until the request ends: a request that is retrying
    // counts against the budget for as long as it lasts, so retries of retries stay bounded.
    let mut retry_slot: Option<Counted<'_>> = None;
    loop {
        let Some(attempt_body) = body.next() else {
            return Err(ProxyError::Upstream {
                endpoint: endpoint.address,
                region: table.region_name(region).to_owned(),
                cause: Box::new(AttemptError::NotReplayable),
            });
        };
        trace.tries += 1;
        trace.endpoint = Some(endpoint.address);
        trace.region = Some(region);
        let tried_now = {
            let exchange = try_once(
                cluster,
                &endpoint,
                request,
                attempt_body,
                route.max_replay_body,
            );
            // In a block: a try given up is dropped, with its connection and permits, before
            // the next one starts.
            tokio::pin!(exchange);
            match policy.per_try_timeout {
                None => exchange.await,
                Some(limit) => match tokio::time::timeout(limit.after(), exchange.as_mut()).await {
                    Ok(tried) => tried,
                    Err(_) => {
                        // The default deadline only moves a request on: with nowhere to go,
                        // the try keeps the rest of the route timeout.
                        let give_up_try = match limit {
                            PerTryTimeout::Strict(_) => true,
                            PerTryTimeout::MoveOn(_) => {
                                retries < policy.attempts
                                    && policy.may_retry(
                                        AttemptFailure::PerTryTimeout,
                                        &request.parts.method,
                                        body.replayable(),
                                    )
                                    && retry_could_go(
                                        decision,
                                        region,
                                        &tried,
                                        &endpoint,
                                        retry_slot.is_some(),
                                        rng,
                                    )
                            }
                        };
                        if give_up_try {
                            Tried::Failed {
                                failure: AttemptFailure::PerTryTimeout,
                                cause: AttemptError::NoAnswer(limit.after()),
                                unsent: None,
                            }
                        } else {
                            exchange.await
                        }
                    }
                },
            }
        };
        if let Some(lines) = &mut trace.explain {
            lines.push(format!(
                "try {}: {} in {} -> {}",
                trace.tries,
                endpoint.address,
                table.region_name(region),
                tried_now.summary()
            ));
        }
        let (failure, retry_after, last) = match tried_now {
            Tried::Refused(overflow) => {
                ClusterStats::bump(match overflow {
                    Overflow::MaxRequests => &cluster.stats.overflow_max_requests,
                    Overflow::MaxPendingRequests => &cluster.stats.overflow_max_pending_requests,
                });
                tracing::info!(cluster = %cluster.name, limit = overflow.as_str(), "circuit breaker overflow");
                return Err(ProxyError::Overflow {
                    cluster: cluster.name.clone(),
                    overflow,
                });
            }
            Tried::Answered(response, conn, guards) => {
                let status = response.status.as_u16();
                cluster.stats.attempts_response.inc();
                endpoint.state.record_outcome(status < 500);
                cluster.reporter.report(&endpoint, Outcome::Status(status));
                let failure = AttemptFailure::Status(status);
                if !policy.covers(failure) {
                    return Ok((
                        stream_response(response, conn, guards, route.response_idle_timeout),
                        region,
                    ));
                }
                let retry_after = parse_retry_after(response.fields.get("retry-after"));
                (failure, retry_after, Last::Response(response, conn, guards))
            }
            Tried::AnsweredH2(mut answer, guards) => {
                let status = answer.response.status().as_u16();
                cluster.stats.attempts_response.inc();
                endpoint.state.record_outcome(status < 500);
                cluster.reporter.report(&endpoint, Outcome::Status(status));
                let failure = match h2_attempt::grpc_failure(&answer) {
                    Some(code) => AttemptFailure::Grpc(code),
                    None => AttemptFailure::Status(status),
                };
                if !policy.covers(failure) {
                    return Ok((
                        h2_attempt::h2_response(
                            *answer,
                            guards,
                            route.response_idle_timeout,
                            trace.grpc_deadline,
                        ),
                        region,
                    ));
                }
                if let Some(sent) = h2_attempt::sent_body(&mut answer).await {
                    body.restore(sent);
                }
                (failure, None, Last::H2(answer, guards, trace.grpc_deadline))
            }
            Tried::Failed {
                failure,
                cause,
                unsent,
            } => {
                if body.exceeded() {
                    return Err(ProxyError::Malformed(Malformed::BodyTooLarge {
                        limit: route.max_body,
                    }));
                }
                cluster.reporter.report(&endpoint, Outcome::LocalFailure);
                endpoint.state.record_outcome(false);
                match failure {
                    AttemptFailure::PerTryTimeout => cluster.stats.attempts_timeout.inc(),
                    AttemptFailure::Reset | AttemptFailure::Status(_) | AttemptFailure::Grpc(_) => {
                        cluster.stats.attempts_reset.inc()
                    }
                    AttemptFailure::ConnectFailure | AttemptFailure::RefusedStream => {
                        cluster.stats.attempts_connect_failure.inc()
                    }
                }
                if let Some(unsent) = unsent {
                    body.restore(unsent);
                }
                (failure, None, Last::Error(failure, cause))
            }
        };
        let give_up = retries >= policy.attempts
            || !policy.may_retry(failure, &request.parts.method, body.replayable());
        let next = if give_up {
            None
        } else {
            // Only a request that retries pays for remembering what it tried.
            tried.push(endpoint.clone());
            retry_target(
                cluster,
                &decision.order,
                region,
                decision.panic,
                &tried,
                rng,
            )
        };
        let Some((next_region, next_endpoint)) = next else {
            return last.finish(table, region, &endpoint, route);
        };
        let verdict = admit_retry(cluster, policy, failure, &endpoint, &mut retry_slot).await;
        if verdict == BudgetVerdict::Exhausted {
            ClusterStats::bump(&cluster.stats.retry_budget_exhausted);
            tracing::info!(cluster = %cluster.name, route = %route.name, "retry budget exhausted: not retrying");
            return last.finish(table, region, &endpoint, route);
        }
        drop(last);
        retries += 1;
        ClusterStats::bump(&cluster.stats.retries);
        tracing::debug!(
            cluster = %cluster.name, route = %route.name, retry = retries, ?failure, budget = ?verdict,
            from = %endpoint.address, to = %next_endpoint.address, region = %table.region_name(next_region),
            "retrying"
        );
        tokio::time::sleep(policy.backoff(retries, retry_after, rng)).await;
        region = next_region;
        endpoint = next_endpoint.clone();
    }
}

/// What the last attempt left, for the client when no retry follows.
// Lives on the stack for one attempt; boxing the common case would cost more than it saves.
#[allow(clippy::large_enum_variant)]
pub(super) enum Last {
    Response(UpstreamHead, PooledConn, AttemptGuards),
    H2(Box<H2Answer>, AttemptGuards, Option<Instant>),
    Error(AttemptFailure, AttemptError),
}

impl Last {
    pub(super) fn finish(
        self,
        table: &RoutingTable,
        region: RegionId,
        endpoint: &Endpoint,
        route: &crate::table::routes::Route,
    ) -> Result<(Box<Answer>, RegionId), ProxyError> {
        let (per_try_timeout, response_idle) =
            (route.retries.per_try_timeout, route.response_idle_timeout);
        let region_name = table.region_name(region).to_owned();
        match self {
            Self::Response(response, conn, guards) => Ok((
                stream_response(response, conn, guards, response_idle),
                region,
            )),
            Self::H2(answer, guards, deadline) => Ok((
                h2_attempt::h2_response(*answer, guards, response_idle, deadline),
                region,
            )),
            Self::Error(AttemptFailure::ConnectFailure | AttemptFailure::RefusedStream, cause) => {
                Err(ProxyError::Connect {
                    endpoint: endpoint.address,
                    region: region_name,
                    cause: Box::new(cause),
                })
            }
            Self::Error(AttemptFailure::PerTryTimeout, _) => Err(ProxyError::Timeout {
                endpoint: endpoint.address,
                region: region_name,
                after: per_try_timeout.map(|t| t.after()).unwrap_or_default(),
            }),
            Self::Error(_, cause) => Err(ProxyError::Upstream {
                endpoint: endpoint.address,
                region: region_name,
                cause: Box::new(cause),
            }),
        }
    }
}

/// The upstream's response, its body streamed through and its connection returned to the
/// pool once read.
pub(super) fn stream_response(
    head: UpstreamHead,
    conn: PooledConn,
    guards: AttemptGuards,
    response_idle: Duration,
) -> Box<Answer> {
    let UpstreamHead {
        status,
        version,
        fields,
        framing,
    } = head;
    let mut response = Response::new(Either::Left(UpstreamResponseBody::new(
        framing,
        conn,
        guards,
        response_idle,
    )));
    *response.status_mut() = status;
    *response.version_mut() = version;
    Box::new(Answer {
        response,
        upstream: fields,
        region: None,
        request_id: None,
    })
}

/// Whether a retry could go now from a try against `endpoint` in `region` that is past its
/// default per-try deadline: there is an endpoint this request has not tried, and room in
/// the retry budget (read, not taken: the retry takes its place once decided).
fn retry_could_go(
    decision: &RouteDecision<'_>,
    region: RegionId,
    tried: &[Arc<Endpoint>],
    endpoint: &Arc<Endpoint>,
    slot_held: bool,
    rng: &mut fastrand::Rng,
) -> bool {
    let cluster = decision.cluster;
    let retrying = cluster.active_retries.load(Ordering::Relaxed);
    let others = if slot_held {
        retrying.saturating_sub(1)
    } else {
        retrying
    };
    let room = decision.route.retries.budget(
        TryCost::Work,
        cluster.active_requests.load(Ordering::Relaxed),
        others,
    ) != BudgetVerdict::Exhausted;
    if !room {
        return false;
    }
    let mut seen = tried.to_vec();
    seen.push(endpoint.clone());
    retry_target(cluster, &decision.order, region, decision.panic, &seen, rng).is_some()
}

/// Ask the retry budget whether the request may retry the try that failed with `failure`
/// against `endpoint`; when it may, the request takes its place among those retrying (once,
/// kept until it ends), in the same step as the budget is read, so requests that fail
/// together cannot all pass on one reading.
///
/// A reset the budget would refuse costs one look at its endpoint: when it no longer takes
/// connections it died with the try, nothing running holds the request, and the retry is
/// free like that of a try that never left. All the requests a killed endpoint held reset at
/// the same moment, far more of them than a budget sized for steady failures admits.
async fn admit_retry<'c>(
    cluster: &'c Cluster,
    policy: &RetryPolicy,
    failure: AttemptFailure,
    endpoint: &Endpoint,
    slot: &mut Option<Counted<'c>>,
) -> BudgetVerdict {
    let cost = if failure.reached_upstream() {
        TryCost::Work
    } else {
        TryCost::Nothing
    };
    let verdict = take_retry_place(cluster, policy, cost, slot);
    if verdict == BudgetVerdict::Exhausted
        && failure == AttemptFailure::Reset
        && cluster.pool.refuses_connections(endpoint.address).await
    {
        return take_retry_place(cluster, policy, TryCost::Nothing, slot);
    }
    verdict
}

/// The budget's verdict on a retry that cost `cost`, taking the request's place among those
/// retrying when admitted and it holds none yet.
fn take_retry_place<'c>(
    cluster: &'c Cluster,
    policy: &RetryPolicy,
    cost: TryCost,
    slot: &mut Option<Counted<'c>>,
) -> BudgetVerdict {
    let active = cluster.active_requests.load(Ordering::Relaxed);
    if slot.is_some() {
        // Already counted among those retrying: the others are the rest.
        let others = cluster
            .active_retries
            .load(Ordering::Relaxed)
            .saturating_sub(1);
        return policy.budget(cost, active, others);
    }
    let mut verdict = BudgetVerdict::Exhausted;
    let taken =
        cluster
            .active_retries
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |others| {
                verdict = policy.budget(cost, active, others);
                (verdict != BudgetVerdict::Exhausted).then_some(others + 1)
            });
    if taken.is_ok() {
        *slot = Some(Counted(&cluster.active_retries));
    }
    verdict
}

/// Holds one unit of a gauge (active requests, retries in flight) while alive.
pub(super) struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    pub(super) fn new(gauge: &'a AtomicUsize) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One attempt: admission, a pooled connection, the request, the response head.
pub(super) async fn try_once(
    cluster: &Cluster,
    endpoint: &Arc<Endpoint>,
    request: Outgoing<'_>,
    body: UpstreamBody,
    replay_limit: u64,
) -> Tried {
    // The one look at the protocol: an HTTP/1.1 cluster has no HTTP/2 connections. Boxed,
    // so the HTTP/1.1 try does not carry the HTTP/2 one's state.
    let body = match cluster.pool.h2() {
        None => body,
        Some(_) => {
            match Box::pin(h2_attempt::try_once_h2(
                cluster,
                endpoint,
                request,
                body,
                replay_limit,
            ))
            .await
            {
                h2_attempt::H2Tried::Tried(tried) => return tried,
                h2_attempt::H2Tried::Http1(body) => body,
            }
        }
    };
    let permit = match cluster.pool.admit() {
        Ok(permit) => permit,
        Err(overflow) => return Tried::Refused(overflow),
    };
    let in_flight = InFlight::new(&endpoint.state);
    // RFC 9110 §9.2.2: a request the upstream closed on without answering may be sent again
    // automatically only when repeating it is harmless.
    let idempotent = request.parts.method.is_idempotent();
    let exchange = async {
        let mut body = body;
        let mut last_stale = None;
        // A reused keep-alive connection may have been closed by the upstream meanwhile; if
        // the request did not get through on it, send it once more on a fresh connection.
        for _ in 0..2 {
            let mut conn = match cluster.pool.checkout(endpoint.address).await {
                Ok(conn) => conn,
                Err(UpstreamError::Overflow(o)) => return Err(Err(o)),
                Err(e) => {
                    return Err(Ok((AttemptFailure::ConnectFailure, e.into(), Some(body))));
                }
            };
            conn.start_request();
            match conn.conn.exchange(request, body).await {
                Ok(response) => return Ok((response, conn)),
                Err((e, again)) => {
                    let reused = conn.reused;
                    conn.discard();
                    let stale = reused
                        && match e {
                            ExchangeError::NotSent(_) => true,
                            ExchangeError::ClosedBeforeAnswer => idempotent,
                            _ => false,
                        };
                    match again {
                        Some(unsent) if stale => {
                            body = unsent;
                            last_stale = Some(e);
                        }
                        Some(unsent) if matches!(e, ExchangeError::NotSent(_)) => {
                            return Err(Ok((
                                AttemptFailure::ConnectFailure,
                                e.into(),
                                Some(unsent),
                            )));
                        }
                        _ => return Err(Ok((AttemptFailure::Reset, e.into(), None))),
                    }
                }
            }
        }
        let cause = match last_stale {
            Some(e) => AttemptError::ClosedTwice(e),
            None => AttemptError::Exchange(ExchangeError::ClosedBeforeAnswer),
        };
        Err(Ok((AttemptFailure::Reset, cause, None)))
    };
    match exchange.await {
        Ok((response, conn)) => Tried::Answered(response, conn, (permit, in_flight)),
        Err(Err(overflow)) => Tried::Refused(overflow),
        Err(Ok((failure, cause, unsent))) => Tried::Failed {
            failure,
            cause,
            unsent,
        },
    }
}
