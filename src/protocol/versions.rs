//! The one registry of the APIs and versions Sluice serves. ApiVersions answers
//! from it and the dispatcher checks every request against it.

use kafka_protocol::messages::ApiKey;

/// An API and the version range we serve.
#[derive(Debug, Clone, Copy)]
pub struct ApiSupport {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
}

const fn api(key: ApiKey, min: i16, max: i16) -> ApiSupport {
    ApiSupport { key, min, max }
}

/// Produce advertises minimum 0, as Kafka 4 does: librdkafka refuses a broker
/// whose Produce range starts higher. Versions 0-2 (message format v0/v1) are
/// then answered with UNSUPPORTED_VERSION by the handler.
pub const PRODUCE_MIN_SERVED: i16 = 3;

pub static SUPPORTED_APIS: &[ApiSupport] = &[
    api(ApiKey::Produce, 0, 11),
    api(ApiKey::Fetch, 4, 16),
    api(ApiKey::ListOffsets, 1, 8),
    api(ApiKey::Metadata, 0, 12),
    api(ApiKey::FindCoordinator, 0, 4),
    api(ApiKey::ApiVersions, 0, 3),
    api(ApiKey::CreateTopics, 2, 7),
    api(ApiKey::DeleteTopics, 1, 6),
    api(ApiKey::DeleteRecords, 0, 2),
    api(ApiKey::InitProducerId, 0, 5),
    api(ApiKey::DescribeConfigs, 1, 4),
    api(ApiKey::AlterConfigs, 0, 2),
    api(ApiKey::CreatePartitions, 0, 3),
    api(ApiKey::IncrementalAlterConfigs, 0, 1),
    api(ApiKey::DescribeCluster, 0, 1),
    api(ApiKey::JoinGroup, 0, 9),
    api(ApiKey::SyncGroup, 0, 5),
    api(ApiKey::Heartbeat, 0, 4),
    api(ApiKey::LeaveGroup, 0, 5),
    // OffsetCommit 0-1 and OffsetFetch 0 (ZooKeeper-era) are gone from Kafka 4 and the codec.
    api(ApiKey::OffsetCommit, 2, 9),
    api(ApiKey::OffsetFetch, 1, 9),
    api(ApiKey::ListGroups, 0, 5),
    api(ApiKey::DescribeGroups, 0, 5),
    api(ApiKey::DeleteGroups, 0, 2),
    api(ApiKey::OffsetDelete, 0, 0),
];

/// The served range of `api_key`, if we serve it at all.
pub fn supported(api_key: i16) -> Option<ApiSupport> {
    SUPPORTED_APIS
        .iter()
        .copied()
        .find(|a| a.key as i16 == api_key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;

    /// We must never advertise a version the codec crate cannot decode.
    #[test]
    fn served_versions_are_within_the_codec() {
        for api in SUPPORTED_APIS {
            let codec = api.key.valid_versions();
            let min = if api.key == ApiKey::Produce {
                PRODUCE_MIN_SERVED
            } else {
                api.min
            };
            assert!(
                codec.min <= min && api.max <= codec.max,
                "{:?}: {}..{} vs codec {}",
                api.key,
                api.min,
                api.max,
                codec
            );
        }
    }
}
