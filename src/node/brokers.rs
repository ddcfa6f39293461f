//! What brokers ask of the active controller, carried as controller requests
//! over the quorum's listener: registering and staying alive there (KRaft's
//! BrokerRegistration and BrokerHeartbeat), and blocks of producer ids
//! (KIP-730's AllocateProducerIds).
//!
//! Every broker heartbeats the quorum's leader every
//! `broker.heartbeat.interval.ms` (itself, when it leads). The leader's
//! controller records a `RegisterBroker` when a broker is new or comes back
//! as a new run (another incarnation, or another address), and an
//! `UnfenceBroker` when a fenced one heartbeats again. It keeps, in memory
//! only (as Kafka does), when it last heard from each broker; one silent for
//! `broker.session.timeout.ms` is fenced with a `FenceBroker` record, which
//! takes it out of every node's Metadata. A controller that has just taken
//! the lead gives every broker a whole session from then, since it has heard
//! none of them yet.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::metadata::controller::ApiError;
use crate::metadata::records::MetadataRecord;
use crate::node::controller_rpc::{refused, ControllerAnswer, ControllerRequest, Heartbeat};
use crate::node::quorum::MetadataQuorum;
use crate::node::shard::Shard;
use crate::node::Node;
use crate::protocol::errors::ErrorCode;

/// How long a forwarded request may take at the active controller
/// (controller.quorum.request.timeout.ms's default is 2 s; creating a topic
/// with many partitions takes longer).
const CONTROLLER_REQUEST_TIMEOUT_MS: u64 = 30_000;

/// When the active controller last heard from each broker.
#[derive(Default)]
struct Sessions {
    last_seen: RefCell<HashMap<i32, Instant>>,
    /// Brokers whose offline replicas are being moved off them.
    moving_offline: RefCell<std::collections::HashSet<i32>>,
    /// Since when this node leads (None: it does not).
    leading_since: Cell<Option<Instant>>,
}

/// Starts this broker's part (on the controller shard, once its controller
/// exists): answers other brokers' heartbeats when it leads, fences brokers
/// whose sessions expire, and heartbeats the leader itself. A voter alone
/// registers before this returns, so that its first Metadata answer already
/// comes from the image.
pub async fn start(shard: &Rc<Shard>, quorum: Rc<MetadataQuorum>) {
    let sessions = Rc::new(Sessions::default());
    let handler_shard = shard.clone();
    let handler_sessions = sessions.clone();
    let caller = quorum.clone();
    *shard.call_controller.borrow_mut() = Some(Rc::new(move |request: Vec<u8>| {
        let quorum = caller.clone();
        Box::pin(async move {
            let timeout = Duration::from_millis(CONTROLLER_REQUEST_TIMEOUT_MS);
            quorum.call_controller(request, timeout).await
        })
    }));
    quorum.serve_controller_requests(Rc::new(move |request: Vec<u8>| {
        let shard = handler_shard.clone();
        let sessions = handler_sessions.clone();
        Box::pin(async move {
            if shard.try_controller().is_none() {
                let closed =
                    ApiError::new(ErrorCode::NotController, "this broker is shutting down");
                return serde_json::to_vec(&refused(closed)).expect("answers encode");
            }
            let answer = match serde_json::from_slice::<ControllerRequest>(&request) {
                Ok(ControllerRequest::Heartbeat(heartbeat)) => {
                    heartbeat_received(&shard, &sessions, heartbeat).await
                }
                Ok(ControllerRequest::CreateTopic {
                    name,
                    partitions,
                    configs,
                    manual,
                    replication_factor,
                    validate_only,
                }) => {
                    let created = crate::node::topics::create_topic(
                        &shard,
                        &name,
                        partitions,
                        configs,
                        manual,
                        replication_factor,
                        validate_only,
                    )
                    .await;
                    match created {
                        Ok(topic) => ControllerAnswer::TopicCreated { id: topic.id },
                        Err(error) => refused(error),
                    }
                }
                Ok(ControllerRequest::AlterPartition {
                    broker,
                    topic_id,
                    partition,
                    leader_epoch,
                    partition_epoch,
                    isr,
                }) => {
                    let altered = shard
                        .controller()
                        .alter_isr(
                            broker,
                            topic_id,
                            partition,
                            leader_epoch,
                            partition_epoch,
                            isr,
                        )
                        .await;
                    match altered {
                        Ok(()) => ControllerAnswer::Live,
                        Err(error) => refused(error),
                    }
                }
                Ok(ControllerRequest::ElectLeaders {
                    unclean,
                    partitions,
                }) => match shard.controller().elect_leaders(unclean, partitions).await {
                    Ok(results) => elected(results),
                    Err(error) => refused(error),
                },
                Ok(ControllerRequest::ControlledShutdown { id, incarnation }) => {
                    sessions.last_seen.borrow_mut().remove(&id);
                    let record = MetadataRecord::FenceBroker { id, incarnation };
                    match shard.controller().record_broker(record).await {
                        Ok(()) => ControllerAnswer::Live,
                        Err(error) => refused(error),
                    }
                }
                Ok(ControllerRequest::Admin(change)) => {
                    match crate::node::forward::make_admin_change(&shard, change).await {
                        Ok(answer) => ControllerAnswer::Made {
                            through: shard.controller().applied_end(),
                            answer: Box::new(answer),
                        },
                        Err(error) => refused(error),
                    }
                }
                Ok(ControllerRequest::AllocateProducerIds) => {
                    match shard.controller().grant_producer_id_block().await {
                        Ok((start, end)) => ControllerAnswer::ProducerIds { start, end },
                        Err(error) => refused(error),
                    }
                }
                Err(error) => refused(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("undecodable request: {error}"),
                )),
            };
            serde_json::to_vec(&answer).expect("answers encode")
        })
    }));
    if shard.node.config.quorum_voters.len() == 1 {
        // Registered before this returns (the first Metadata answer comes
        // from the image). The image holds the registration as soon as its
        // entry is applied here; the write itself completes only once the
        // other shards took the new image's roles, which they do once every
        // shard has started, after this returns: so the image is awaited,
        // not the answer (awaiting it stalled every start by its timeout).
        let (registering, with) = (shard.clone(), quorum.clone());
        compio::runtime::spawn(async move {
            if let Err(why) = send_heartbeat(&registering, &with).await {
                tracing::warn!(%why, "registering this broker");
            }
        })
        .detach();
        let node = &shard.node;
        let registered = || {
            node.image()
                .brokers
                .get(&node.config.node_id)
                .is_some_and(|b| b.incarnation == node.incarnation && !b.fenced)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !registered() && Instant::now() < deadline {
            compio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    compio::runtime::spawn(heartbeat_loop(shard.clone(), quorum.clone())).detach();
    compio::runtime::spawn(session_loop(shard.clone(), quorum, sessions)).detach();
}

fn this_broker(shard: &Shard) -> Heartbeat {
    let node = &shard.node;
    Heartbeat {
        id: node.config.node_id,
        incarnation: node.incarnation,
        host: node.config.advertised_host.clone(),
        port: node.advertised_port(),
        offline: offline_here(node),
    }
}

/// The partitions this broker holds a replica of whose log failed here
/// (storage errors take a log offline: `storage::log`).
fn offline_here(node: &Node) -> Vec<(Uuid, i32)> {
    let me = node.config.node_id;
    let image = node.image();
    let mut offline = Vec::new();
    for topic in image.topics.values() {
        for (index, (state, placement)) in
            topic.partitions.iter().zip(&topic.placements).enumerate()
        {
            if state.is_offline() && placement.replicas.contains(&me) {
                offline.push((topic.id, index as i32));
            }
        }
    }
    offline
}

async fn send_heartbeat(shard: &Rc<Shard>, quorum: &MetadataQuorum) -> Result<(), String> {
    let request = ControllerRequest::Heartbeat(this_broker(shard));
    let bytes = serde_json::to_vec(&request).expect("requests encode");
    let timeout = Duration::from_millis(shard.node.config.broker_heartbeat_interval_ms.max(1000));
    let answer = quorum
        .call_controller(bytes, timeout)
        .await
        .map_err(|e| e.to_string())?;
    match serde_json::from_slice::<ControllerAnswer>(&answer) {
        Ok(ControllerAnswer::Live) => Ok(()),
        Ok(ControllerAnswer::Refused { message, .. }) => Err(message),
        Ok(other) => Err(format!("the controller answered {other:?}")),
        Err(error) => Err(format!("undecodable answer: {error}")),
    }
}

/// Heartbeats the leader every `broker.heartbeat.interval.ms` until shutdown;
/// says so in the log when the broker becomes live and when it stops being.
async fn heartbeat_loop(shard: Rc<Shard>, quorum: Rc<MetadataQuorum>) {
    let interval = Duration::from_millis(shard.node.config.broker_heartbeat_interval_ms);
    let mut live = false;
    while !shard.node.shutdown.is_triggered() {
        if shard.node.stopping.load(Ordering::Acquire) {
            return;
        }
        match send_heartbeat(&shard, &quorum).await {
            Ok(()) if !live => {
                live = true;
                tracing::info!(
                    controller = shard.node.active_controller.load(Ordering::Relaxed),
                    "registered with the active controller"
                );
            }
            Ok(()) => {}
            Err(why) if live => {
                live = false;
                tracing::warn!(%why, "a heartbeat to the active controller failed");
            }
            Err(why) => tracing::debug!(%why, "a heartbeat to the active controller failed"),
        }
        compio::time::sleep(interval).await;
    }
}

/// Elections' outcomes as a controller answer.
pub(crate) fn elected(results: Vec<(String, i32, Result<(), ApiError>)>) -> ControllerAnswer {
    ControllerAnswer::Elected {
        results: results
            .into_iter()
            .map(|(topic, partition, outcome)| match outcome {
                Ok(()) => (topic, partition, 0, None),
                Err(e) => (topic, partition, e.code.code(), Some(e.message)),
            })
            .collect(),
    }
}

/// Controlled shutdown, on the controller shard: heartbeats stop, the
/// active controller fences this broker (moving its leaderships to other
/// in-sync replicas, taking it out of the ISRs), and this waits until its
/// own image shows it, or `patience` passes.
pub async fn controlled_shutdown(shard: &Rc<Shard>, patience: Duration) -> Result<(), String> {
    let node = &shard.node;
    node.stopping.store(true, Ordering::Release);
    if node.active_controller.load(Ordering::Relaxed) < 0 {
        return Err("no active controller is known".into());
    }
    let request = ControllerRequest::ControlledShutdown {
        id: node.config.node_id,
        incarnation: node.incarnation,
    };
    let bytes = serde_json::to_vec(&request).expect("requests encode");
    let deadline = Instant::now() + patience;
    loop {
        let answer = crate::node::replication::call_controller(shard, bytes.clone()).await;
        match answer {
            Ok(ControllerAnswer::Live) => break,
            Ok(other) if Instant::now() >= deadline => {
                return Err(format!("the controller answered {other:?}"))
            }
            Err(why) if Instant::now() >= deadline => return Err(why),
            _ => compio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let me = node.config.node_id;
    while Instant::now() < deadline {
        if node.image().brokers.get(&me).is_none_or(|b| b.fenced) {
            return Ok(());
        }
        compio::time::sleep(Duration::from_millis(10)).await;
    }
    Err("the fence did not reach this broker's image in time".into())
}

/// The controller's side of a heartbeat: the session renewed, and the
/// registration or unfencing recorded when the image does not show this
/// run of the broker live.
async fn heartbeat_received(
    shard: &Rc<Shard>,
    sessions: &Rc<Sessions>,
    heartbeat: Heartbeat,
) -> ControllerAnswer {
    let controller = shard.controller();
    if let Err(error) = controller.check_leader() {
        return refused(error);
    }
    let registered = shard.node.image().brokers.get(&heartbeat.id).cloned();
    // Another run of this id still live (its session not expired): two
    // processes share the id, or a restarted broker is early. Refused until
    // the old session expires, as Kafka does.
    if let Some(b) = registered
        .as_ref()
        .filter(|b| b.incarnation != heartbeat.incarnation && !b.fenced)
    {
        let session = Duration::from_millis(shard.node.config.broker_session_timeout_ms);
        let heard = sessions
            .last_seen
            .borrow()
            .get(&heartbeat.id)
            .copied()
            .or(sessions.leading_since.get());
        if heard.is_some_and(|at| at.elapsed() < session) {
            return refused(ApiError::new(
                ErrorCode::DuplicateBrokerRegistration,
                format!(
                    "broker {} is registered by another run ({}) whose session has not expired",
                    heartbeat.id, b.incarnation
                ),
            ));
        }
    }
    sessions
        .last_seen
        .borrow_mut()
        .insert(heartbeat.id, Instant::now());
    let record = match registered {
        Some(b)
            if b.incarnation == heartbeat.incarnation
                && b.host == heartbeat.host
                && b.port == heartbeat.port =>
        {
            if !b.fenced {
                return offline_replicas(shard, sessions, &heartbeat);
            }
            tracing::info!(
                broker = heartbeat.id,
                "unfencing a broker that heartbeats again"
            );
            MetadataRecord::UnfenceBroker {
                id: heartbeat.id,
                incarnation: heartbeat.incarnation,
            }
        }
        _ => {
            tracing::info!(
                broker = heartbeat.id,
                host = %heartbeat.host,
                port = heartbeat.port,
                "registering a broker"
            );
            MetadataRecord::RegisterBroker {
                id: heartbeat.id,
                host: heartbeat.host.clone(),
                port: heartbeat.port,
                incarnation: heartbeat.incarnation,
            }
        }
    };
    match controller.record_broker(record).await {
        Ok(()) => offline_replicas(shard, sessions, &heartbeat),
        Err(error) => refused(error),
    }
}

/// Notes the replicas a live broker reports offline (their log failed
/// there: they may not lead or rejoin an ISR) and, in the background,
/// moves each it leads or is in sync for off it: out of the ISR, another
/// in-sync replica leading. The heartbeat is answered at once (a failed
/// disk may hold many partitions; one change failing stops no other).
fn offline_replicas(
    shard: &Rc<Shard>,
    sessions: &Rc<Sessions>,
    heartbeat: &Heartbeat,
) -> ControllerAnswer {
    let controller = shard.controller();
    controller.note_offline(heartbeat.id, &heartbeat.offline);
    if heartbeat.offline.is_empty() || !sessions.moving_offline.borrow_mut().insert(heartbeat.id) {
        return ControllerAnswer::Live;
    }
    let (sessions, broker, offline) = (sessions.clone(), heartbeat.id, heartbeat.offline.clone());
    compio::runtime::spawn(async move {
        for (topic_id, partition) in offline {
            if let Err(error) = controller.replica_offline(broker, topic_id, partition).await {
                tracing::warn!(broker, %topic_id, partition, error = %error.message, "moving an offline replica out of the ISR");
            }
        }
        sessions.moving_offline.borrow_mut().remove(&broker);
    })
    .detach();
    ControllerAnswer::Live
}

/// On the leader, fences each broker silent for a whole session; everywhere,
/// keeps `Node::active_controller` current. Runs until shutdown.
async fn session_loop(shard: Rc<Shard>, quorum: Rc<MetadataQuorum>, sessions: Rc<Sessions>) {
    let config = &shard.node.config;
    let session = Duration::from_millis(config.broker_session_timeout_ms);
    let tick = Duration::from_millis((config.broker_heartbeat_interval_ms / 2).clamp(5, 500));
    let me = config.node_id;
    let mut last_rebalance = Instant::now();
    let mut first = true;
    while !shard.node.shutdown.is_triggered() {
        // The first round at once: a node alone creates the internal
        // topics right after registering itself.
        if !std::mem::take(&mut first) {
            compio::time::sleep(tick).await;
        }
        let leader = quorum.leader();
        shard
            .node
            .active_controller
            .store(leader.unwrap_or(-1), Ordering::Relaxed);
        // Sessions count from when this node may act as the controller: a
        // new leader still applying its predecessor's entries refuses
        // heartbeats meanwhile, and must not fence the brokers it refused.
        let ready = shard
            .try_controller()
            .is_some_and(|c| c.check_leader().is_ok());
        if leader != Some(me) || !ready {
            sessions.leading_since.set(None);
            continue;
        }
        let since = match sessions.leading_since.get() {
            Some(since) => since,
            None => {
                let now = Instant::now();
                sessions.leading_since.set(Some(now));
                sessions.last_seen.borrow_mut().clear();
                now
            }
        };
        // auto.leader.rebalance.enable: leadership goes back to each
        // partition's preferred replica once it is live and in sync again.
        let interval = Duration::from_secs(config.leader_imbalance_check_interval_seconds);
        if !interval.is_zero() && last_rebalance.elapsed() >= interval {
            last_rebalance = Instant::now();
            if let Some(controller) = shard.try_controller() {
                match controller.elect_leaders(false, None).await {
                    Ok(results) => {
                        let moved = results.iter().filter(|r| r.2.is_ok()).count();
                        if moved > 0 {
                            tracing::info!(
                                partitions = moved,
                                "leadership moved back to preferred replicas"
                            );
                        }
                    }
                    Err(error) => {
                        tracing::debug!(error = %error.message, "preferred leader election")
                    }
                }
            }
        }
        crate::node::coordinators::create_internal_topics(&shard).await;
        if shard.node.image().cluster_id.is_none() {
            if let Some(controller) = shard.try_controller() {
                if let Err(error) = controller.record_cluster_id().await {
                    tracing::debug!(error = %error.message, "recording the cluster id");
                }
            }
        }
        let expired: Vec<(i32, Uuid, Duration)> = {
            let last_seen = sessions.last_seen.borrow();
            shard
                .node
                .image()
                .live_brokers()
                .filter(|&(id, _)| id != me)
                .filter_map(|(id, broker)| {
                    let silent = last_seen.get(&id).copied().unwrap_or(since).elapsed();
                    (silent > session).then_some((id, broker.incarnation, silent))
                })
                .collect()
        };
        for (id, incarnation, silent) in expired {
            // Heard from meanwhile (the list was made before any await)?
            let heard = sessions.last_seen.borrow().get(&id).copied();
            if heard.is_some_and(|at| at.elapsed() <= session) {
                continue;
            }
            tracing::warn!(
                broker = id,
                silent_ms = silent.as_millis() as u64,
                "fencing a broker: no heartbeat within broker.session.timeout.ms"
            );
            let record = MetadataRecord::FenceBroker { id, incarnation };
            let Some(controller) = shard.try_controller() else {
                return;
            };
            if let Err(error) = controller.record_broker(record).await {
                tracing::warn!(broker = id, error = %error.message, "fencing a broker failed");
            }
        }
    }
}
