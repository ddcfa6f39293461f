//! DescribeConfigs: every config of a topic with its value and source (topic
//! override, broker setting, or default), as Kafka reports them; and the
//! broker's own settings.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use crate::metadata::topic_config::{ConfigDef, ConfigKind, CONFIG_DEFS};
use crate::node::Node;
use crate::protocol::errors::ErrorCode;
use crate::server::connection::RequestContext;
use crate::server::handlers::str_bytes;

pub const RESOURCE_TOPIC: i8 = 2;

/// Why AlterConfigs/IncrementalAlterConfigs refuse a resource that is not a
/// topic: broker configs are set at start-up; other types (a consumer group,
/// KIP-848's group configs) are not configurable here, as on a Kafka 3 broker.
pub(crate) fn not_alterable(resource_type: i8) -> String {
    const BROKER: i8 = 4;
    const BROKER_LOGGER: i8 = 8;
    const GROUP: i8 = 32;
    match resource_type {
        BROKER | BROKER_LOGGER => {
            "broker configs are static (dynamic broker configs are not supported); set them at start-up".to_string()
        }
        GROUP => "Unexpected resource type GROUP".to_string(),
        other => format!("Unexpected resource type {other}"),
    }
}
pub const RESOURCE_BROKER: i8 = 4;

/// Config sources as Kafka numbers them.
pub const SOURCE_TOPIC: i8 = 1;
pub const SOURCE_STATIC_BROKER: i8 = 4;
pub const SOURCE_DEFAULT: i8 = 5;

/// Where the effective value of topic config `name` comes from.
pub fn config_source(
    broker: &Node,
    topic_overrides: Option<&BTreeMap<String, String>>,
    name: &str,
) -> i8 {
    if topic_overrides.is_some_and(|o| o.contains_key(name)) {
        SOURCE_TOPIC
    } else if broker.config.topic_default_overrides.contains_key(name) {
        SOURCE_STATIC_BROKER
    } else {
        SOURCE_DEFAULT
    }
}

/// Where a topic config's value could come from, most specific first (Kafka's
/// synonyms): the topic override, the broker setting, the default.
fn synonyms(
    broker: &Node,
    overrides: &BTreeMap<String, String>,
    def: &ConfigDef,
) -> Vec<DescribeConfigsSynonym> {
    let mut out = Vec::new();
    let synonym = |value: String, source: i8| {
        DescribeConfigsSynonym::default()
            .with_name(str_bytes(def.name))
            .with_value(Some(str_bytes(value)))
            .with_source(source)
    };
    if let Some(value) = overrides.get(def.name) {
        out.push(synonym(value.clone(), SOURCE_TOPIC));
    }
    if let Some(value) = broker.config.topic_default_overrides.get(def.name) {
        out.push(synonym(value.clone(), SOURCE_STATIC_BROKER));
    }
    out.push(synonym(def.default.to_string(), SOURCE_DEFAULT));
    out
}

pub async fn handle(
    ctx: &RequestContext,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let broker = &ctx.conn.shard.node;
    let mut results = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let wanted = |name: &str| {
            resource
                .configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
        };
        let result = DescribeConfigsResult::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        let version = ctx.api_version;
        let include_synonyms = request.include_synonyms;
        let entry = |name: &str,
                     value: String,
                     source: i8,
                     kind: Option<ConfigKind>,
                     synonyms: Vec<DescribeConfigsSynonym>| {
            let mut entry = DescribeConfigsResourceResult::default()
                .with_name(str_bytes(name))
                .with_value(Some(str_bytes(value)))
                .with_config_source(source)
                .with_read_only(false)
                .with_is_sensitive(false);
            if version >= 1 && include_synonyms {
                entry.synonyms = synonyms;
            }
            if version >= 3 {
                entry.config_type = kind.map_or(0, |k| k as i8);
            }
            entry
        };
        match resource.resource_type {
            RESOURCE_TOPIC => {
                let Some(topic) = broker
                    .image()
                    .user_topic(resource.resource_name.as_str())
                    .cloned()
                else {
                    results.push(result.with_error_code(ErrorCode::UnknownTopicOrPartition.code()));
                    continue;
                };
                let configs = CONFIG_DEFS
                    .iter()
                    .filter(|def| wanted(def.name))
                    .map(|def| {
                        let source = config_source(broker, Some(&topic.overrides), def.name);
                        let synonyms = synonyms(broker, &topic.overrides, def);
                        entry(
                            def.name,
                            topic.config.show(def),
                            source,
                            Some(def.kind),
                            synonyms,
                        )
                    })
                    .collect();
                results.push(result.with_configs(configs));
            }
            RESOURCE_BROKER => {
                let config = &broker.config;
                let mut settings = vec![
                    ("node.id", config.node_id.to_string()),
                    ("num.partitions", config.num_partitions.to_string()),
                    (
                        "auto.create.topics.enable",
                        config.auto_create_topics.to_string(),
                    ),
                    (
                        "socket.request.max.bytes",
                        config.socket_request_max_bytes.to_string(),
                    ),
                    ("log.dirs", config.data_dir.display().to_string()),
                ];
                for def in CONFIG_DEFS {
                    settings.push((def.name, config.topic_defaults.show(def)));
                }
                let configs = settings
                    .into_iter()
                    .filter(|(name, _)| wanted(name))
                    .map(|(name, value)| entry(name, value, SOURCE_STATIC_BROKER, None, Vec::new()))
                    .collect();
                results.push(result.with_configs(configs));
            }
            _ => results.push(
                result
                    .with_error_code(ErrorCode::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(
                        "only topic and broker resources are supported",
                    ))),
            ),
        }
    }
    DescribeConfigsResponse::default().with_results(results)
}
