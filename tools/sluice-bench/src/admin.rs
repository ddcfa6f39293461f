//! The broker under test: a real one given by --bootstrap, or librdkafka's
//! in-process mock cluster (--baseline-mock); topic creation and watermarks.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use crate::config::Workload;

/// Where a workload runs.
pub enum Target {
    Broker {
        bootstrap: String,
    },
    /// The mock cluster lives as long as this value; its brokers listen on
    /// loopback ports inside this process.
    Mock {
        cluster: MockCluster<'static, DefaultProducerContext>,
        bootstrap: String,
    },
}

impl Target {
    pub fn mock(brokers: i32) -> Result<Target> {
        let cluster = MockCluster::new(brokers)
            .map_err(|e| anyhow!("starting the librdkafka mock cluster: {e}"))?;
        let bootstrap = cluster.bootstrap_servers();
        Ok(Target::Mock { cluster, bootstrap })
    }

    pub fn bootstrap(&self) -> &str {
        match self {
            Target::Broker { bootstrap } | Target::Mock { bootstrap, .. } => bootstrap,
        }
    }

    /// "target" for the broker under test, "mock" for the baseline.
    pub fn label(&self) -> &'static str {
        match self {
            Target::Broker { .. } => "target",
            Target::Mock { .. } => "mock",
        }
    }
}

/// A client configuration with the bootstrap servers and the user's -X
/// properties (applied last, so they win).
pub fn base_config(bootstrap: &str, extra: &[(String, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    for (k, v) in extra {
        c.set(k, v);
    }
    c
}

/// Makes sure the workload's topic exists and its partitions have leaders;
/// returns the partition count (the existing one if the topic was there).
pub fn ensure_topic(target: &Target, w: &Workload) -> Result<i32> {
    let bootstrap = target.bootstrap();
    let mut cfg = base_config(bootstrap, &w.extra);
    cfg.set("client.id", "sluice-bench-admin");
    let admin: AdminClient<DefaultClientContext> = cfg
        .create()
        .map_err(|e| anyhow!("creating an admin client for {bootstrap}: {e}"))?;
    // Metadata for all topics: asking for the one topic would let a broker
    // with auto-creation create it with its default partition count.
    let existing = topic_partitions(&admin, &w.topic, w.timeout)
        .with_context(|| format!("cannot reach a broker at {bootstrap}"))?;
    if let Some(n) = existing {
        if n != w.partitions {
            eprintln!(
                "sluice-bench: topic {} exists with {n} partitions (--partitions {} ignored)",
                w.topic, w.partitions
            );
        }
        return Ok(n);
    }
    match target {
        Target::Mock { cluster, .. } => {
            // The mock cluster has no CreateTopics handler; it has its own call.
            if let Err(e) = cluster.create_topic(&w.topic, w.partitions, 1) {
                bail!("creating topic {} on the mock cluster: {e}", w.topic);
            }
        }
        Target::Broker { .. } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .context("tokio runtime for admin requests")?;
            let topic = NewTopic::new(&w.topic, w.partitions, TopicReplication::Fixed(1));
            let opts = AdminOptions::new().request_timeout(Some(w.timeout));
            let results = rt
                .block_on(admin.create_topics([&topic], &opts))
                .map_err(|e| anyhow!("CreateTopics {}: {e}", w.topic))?;
            for r in results {
                match r {
                    Ok(_) => {}
                    // Someone else created it meanwhile: fine.
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((t, code)) => bail!("CreateTopics {t}: {code}"),
                }
            }
        }
    }
    let deadline = Instant::now() + w.timeout;
    loop {
        if let Some(n) = topic_partitions(&admin, &w.topic, w.timeout)? {
            return Ok(n);
        }
        if Instant::now() > deadline {
            bail!(
                "topic {} does not appear in metadata after creation",
                w.topic
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Partition count of a topic whose partitions all have a leader; None if
/// the topic is absent or not ready yet.
fn topic_partitions(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    timeout: Duration,
) -> Result<Option<i32>> {
    let md = admin
        .inner()
        .fetch_metadata(None, timeout)
        .map_err(|e| anyhow!("Metadata: {e}"))?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    if t.error().is_some() || t.partitions().is_empty() {
        return Ok(None);
    }
    if t.partitions().iter().any(|p| p.leader() < 0) {
        return Ok(None);
    }
    Ok(Some(t.partitions().len() as i32))
}

fn admin_client(bootstrap: &str, w: &Workload) -> Result<AdminClient<DefaultClientContext>> {
    let mut cfg = base_config(bootstrap, &w.extra);
    cfg.set("client.id", "sluice-bench-admin");
    cfg.create()
        .map_err(|e| anyhow!("creating an admin client for {bootstrap}: {e}"))
}

/// The partition count of the workload's topic if it exists (with leaders).
pub fn existing_partitions(target: &Target, w: &Workload) -> Result<Option<i32>> {
    let admin = admin_client(target.bootstrap(), w)?;
    topic_partitions(&admin, &w.topic, w.timeout)
        .with_context(|| format!("cannot reach a broker at {}", target.bootstrap()))
}

/// The address (host:port) of each partition's leader, from Metadata.
pub fn leaders(target: &Target, w: &Workload) -> Result<HashMap<i32, String>> {
    let admin = admin_client(target.bootstrap(), w)?;
    let md = admin
        .inner()
        .fetch_metadata(Some(&w.topic), w.timeout)
        .map_err(|e| anyhow!("Metadata for {}: {e}", w.topic))?;
    let brokers: HashMap<i32, String> = md
        .brokers()
        .iter()
        .map(|b| (b.id(), format!("{}:{}", b.host(), b.port())))
        .collect();
    let topic = md
        .topics()
        .iter()
        .find(|t| t.name() == w.topic)
        .with_context(|| format!("topic {} is not in the metadata", w.topic))?;
    topic
        .partitions()
        .iter()
        .map(|p| {
            let address = brokers.get(&p.leader()).with_context(|| {
                format!(
                    "{}/{}: leader {} is not a known broker",
                    w.topic,
                    p.id(),
                    p.leader()
                )
            })?;
            Ok((p.id(), address.clone()))
        })
        .collect()
}

/// Deletes the workload's topic on a real broker (the mock has no DeleteTopics).
pub fn delete_topic(target: &Target, w: &Workload) -> Result<()> {
    let Target::Broker { .. } = target else {
        return Ok(());
    };
    let admin = admin_client(target.bootstrap(), w)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .context("tokio runtime for admin requests")?;
    let opts = AdminOptions::new().request_timeout(Some(w.timeout));
    let results = rt
        .block_on(admin.delete_topics(&[&w.topic], &opts))
        .map_err(|e| anyhow!("DeleteTopics {}: {e}", w.topic))?;
    for r in results {
        if let Err((t, code)) = r {
            bail!("DeleteTopics {t}: {code}");
        }
    }
    Ok(())
}

/// (partition, low, high) watermarks of every partition of a topic.
pub fn watermarks(bootstrap: &str, w: &Workload, partitions: i32) -> Result<Vec<(i32, i64, i64)>> {
    let mut cfg = base_config(bootstrap, &w.extra);
    cfg.set("client.id", "sluice-bench-watermarks");
    cfg.set("group.id", "sluice-bench-watermarks");
    let consumer: BaseConsumer = cfg
        .create()
        .map_err(|e| anyhow!("creating a consumer for {bootstrap}: {e}"))?;
    (0..partitions)
        .map(|p| {
            let (lo, hi) = consumer
                .fetch_watermarks(&w.topic, p, w.timeout)
                .map_err(|e| anyhow!("ListOffsets {}/{p}: {e}", w.topic))?;
            Ok((p, lo, hi))
        })
        .collect()
}
