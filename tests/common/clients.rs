//! librdkafka clients for the tests, configured one way everywhere: acks=all
//! producers, assign-only consumers, an admin client; `extra` settings go last
//! and override the defaults.
#![allow(dead_code)]

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::FutureProducer;

use super::TestBroker;

fn config(broker: &TestBroker, defaults: &[(&str, &str)], extra: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &broker.addr);
    for (k, v) in defaults.iter().chain(extra) {
        config.set(*k, *v);
    }
    config
}

pub fn admin(broker: &TestBroker) -> AdminClient<DefaultClientContext> {
    config(broker, &[], &[]).create().expect("admin client")
}

/// An acks=all producer.
pub fn producer(broker: &TestBroker, extra: &[(&str, &str)]) -> FutureProducer {
    config(
        broker,
        &[("acks", "all"), ("message.timeout.ms", "30000")],
        extra,
    )
    .create()
    .expect("producer")
}

/// A consumer for `assign` (its group id is never joined), no auto commit.
pub fn consumer(broker: &TestBroker, extra: &[(&str, &str)]) -> BaseConsumer {
    config(
        broker,
        &[
            ("group.id", "unused-assign-only"),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "false"),
        ],
        extra,
    )
    .create()
    .expect("consumer")
}

/// Creates a topic through the admin client and checks it succeeded.
pub async fn create_topic(
    broker: &TestBroker,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) {
    let mut new_topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        new_topic = new_topic.set(k, v);
    }
    let results = admin(broker)
        .create_topics([&new_topic], &AdminOptions::new())
        .await
        .expect("create_topics");
    assert_eq!(results.len(), 1);
    assert!(results[0].is_ok(), "create {name}: {:?}", results[0]);
}
