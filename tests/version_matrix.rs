//! Every API at every version the broker advertises: a valid request gets a
//! response that decodes at that version (classic and flexible encodings alike)
//! and says what it should. A field set outside its version, a wrong header
//! version or a missing tagged-field section shows up here as a decode failure
//! or a closed connection.

mod common;

use bytes::Bytes;
use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request as incremental;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable};
use kafka_protocol::records::Compression;
use sluice::protocol::encode;
use sluice::server::handlers::produce::PRODUCE_MIN_SERVED;
use sluice::server::registry::APIS;

use common::wire::*;
use common::TestBroker;

fn versions(key: ApiKey) -> std::ops::RangeInclusive<i16> {
    let api = APIS.iter().find(|a| a.key == key).expect("advertised");
    let min = if key == ApiKey::Produce {
        PRODUCE_MIN_SERVED
    } else {
        api.min
    };
    min..=api.max
}

fn one_record_batch(value: &str) -> Bytes {
    let record = encode::record(
        0,
        1_700_000_000_000,
        None,
        Some(Bytes::from(value.to_string())),
        None,
    );
    encode::encode_batch(&[record], Compression::None)
}

/// Sends `request` and decodes the answer as `R` (`Conn::call` checks the
/// correlation id and that the whole frame decodes).
fn exchange<Q: Encodable, R: Decodable>(conn: &mut Conn, key: ApiKey, version: i16, request: Q) {
    let _: R = conn.call(key, version, &request);
}

/// Every (API, version) the registry advertises is dispatched and answered:
/// a request with default fields (Produce with acks=-1, so that it is
/// answered) gets a response with its correlation id that decodes at that
/// version, on the same connection (so nothing closed it).
#[test]
fn every_registered_api_and_version_is_answered() {
    let broker = TestBroker::start();
    let conn = &mut Conn::open(&broker.addr);
    for api in APIS {
        for version in api.min..=api.max {
            let key = api.key;
            if key == ApiKey::Produce && version < PRODUCE_MIN_SERVED {
                // Outside the codec: a hand-made v0-2 request of no topics.
                let correlation_id = 90_000 + i32::from(version);
                let mut frame = vec![0u8; 4];
                frame.extend_from_slice(&0i16.to_be_bytes()); // api key
                frame.extend_from_slice(&version.to_be_bytes());
                frame.extend_from_slice(&correlation_id.to_be_bytes());
                frame.extend_from_slice(&(-1i16).to_be_bytes()); // no client id
                frame.extend_from_slice(&(-1i16).to_be_bytes()); // acks
                frame.extend_from_slice(&10_000i32.to_be_bytes()); // timeout
                frame.extend_from_slice(&0i32.to_be_bytes()); // no topics
                let length = (frame.len() - 4) as i32;
                frame[..4].copy_from_slice(&length.to_be_bytes());
                conn.send_raw(&frame);
                let response = conn.recv_frame();
                assert_eq!(
                    &response[..4],
                    &correlation_id.to_be_bytes(),
                    "Produce v{version}"
                );
                continue;
            }
            match key {
                ApiKey::Produce => exchange::<_, ProduceResponse>(
                    conn,
                    key,
                    version,
                    ProduceRequest::default().with_acks(-1),
                ),
                ApiKey::Fetch => {
                    exchange::<_, FetchResponse>(conn, key, version, FetchRequest::default())
                }
                ApiKey::ListOffsets => exchange::<_, ListOffsetsResponse>(
                    conn,
                    key,
                    version,
                    ListOffsetsRequest::default(),
                ),
                ApiKey::Metadata => {
                    exchange::<_, MetadataResponse>(conn, key, version, MetadataRequest::default())
                }
                ApiKey::OffsetCommit => exchange::<_, OffsetCommitResponse>(
                    conn,
                    key,
                    version,
                    OffsetCommitRequest::default(),
                ),
                ApiKey::OffsetFetch => exchange::<_, OffsetFetchResponse>(
                    conn,
                    key,
                    version,
                    OffsetFetchRequest::default(),
                ),
                ApiKey::FindCoordinator => exchange::<_, FindCoordinatorResponse>(
                    conn,
                    key,
                    version,
                    FindCoordinatorRequest::default(),
                ),
                ApiKey::JoinGroup => exchange::<_, JoinGroupResponse>(
                    conn,
                    key,
                    version,
                    JoinGroupRequest::default(),
                ),
                ApiKey::Heartbeat => exchange::<_, HeartbeatResponse>(
                    conn,
                    key,
                    version,
                    HeartbeatRequest::default(),
                ),
                ApiKey::LeaveGroup => exchange::<_, LeaveGroupResponse>(
                    conn,
                    key,
                    version,
                    LeaveGroupRequest::default(),
                ),
                ApiKey::SyncGroup => exchange::<_, SyncGroupResponse>(
                    conn,
                    key,
                    version,
                    SyncGroupRequest::default(),
                ),
                ApiKey::DescribeGroups => exchange::<_, DescribeGroupsResponse>(
                    conn,
                    key,
                    version,
                    DescribeGroupsRequest::default(),
                ),
                ApiKey::ListGroups => exchange::<_, ListGroupsResponse>(
                    conn,
                    key,
                    version,
                    ListGroupsRequest::default(),
                ),
                ApiKey::ApiVersions => exchange::<_, ApiVersionsResponse>(
                    conn,
                    key,
                    version,
                    ApiVersionsRequest::default(),
                ),
                ApiKey::CreateTopics => exchange::<_, CreateTopicsResponse>(
                    conn,
                    key,
                    version,
                    CreateTopicsRequest::default(),
                ),
                ApiKey::DeleteTopics => exchange::<_, DeleteTopicsResponse>(
                    conn,
                    key,
                    version,
                    DeleteTopicsRequest::default(),
                ),
                ApiKey::DeleteRecords => exchange::<_, DeleteRecordsResponse>(
                    conn,
                    key,
                    version,
                    DeleteRecordsRequest::default(),
                ),
                ApiKey::InitProducerId => exchange::<_, InitProducerIdResponse>(
                    conn,
                    key,
                    version,
                    InitProducerIdRequest::default()
                        .with_producer_id(ProducerId(-1))
                        .with_producer_epoch(-1),
                ),
                ApiKey::DescribeConfigs => exchange::<_, DescribeConfigsResponse>(
                    conn,
                    key,
                    version,
                    DescribeConfigsRequest::default(),
                ),
                ApiKey::AlterConfigs => exchange::<_, AlterConfigsResponse>(
                    conn,
                    key,
                    version,
                    AlterConfigsRequest::default(),
                ),
                ApiKey::CreatePartitions => exchange::<_, CreatePartitionsResponse>(
                    conn,
                    key,
                    version,
                    CreatePartitionsRequest::default(),
                ),
                ApiKey::IncrementalAlterConfigs => exchange::<_, IncrementalAlterConfigsResponse>(
                    conn,
                    key,
                    version,
                    IncrementalAlterConfigsRequest::default(),
                ),
                ApiKey::DescribeCluster => exchange::<_, DescribeClusterResponse>(
                    conn,
                    key,
                    version,
                    DescribeClusterRequest::default(),
                ),
                ApiKey::DeleteGroups => exchange::<_, DeleteGroupsResponse>(
                    conn,
                    key,
                    version,
                    DeleteGroupsRequest::default(),
                ),
                ApiKey::OffsetDelete => exchange::<_, OffsetDeleteResponse>(
                    conn,
                    key,
                    version,
                    OffsetDeleteRequest::default(),
                ),
                ApiKey::AddPartitionsToTxn => exchange::<_, AddPartitionsToTxnResponse>(
                    conn,
                    key,
                    version,
                    AddPartitionsToTxnRequest::default(),
                ),
                ApiKey::AddOffsetsToTxn => exchange::<_, AddOffsetsToTxnResponse>(
                    conn,
                    key,
                    version,
                    AddOffsetsToTxnRequest::default(),
                ),
                ApiKey::EndTxn => {
                    exchange::<_, EndTxnResponse>(conn, key, version, EndTxnRequest::default())
                }
                ApiKey::TxnOffsetCommit => exchange::<_, TxnOffsetCommitResponse>(
                    conn,
                    key,
                    version,
                    TxnOffsetCommitRequest::default(),
                ),
                ApiKey::WriteTxnMarkers => exchange::<_, WriteTxnMarkersResponse>(
                    conn,
                    key,
                    version,
                    WriteTxnMarkersRequest::default(),
                ),
                ApiKey::DescribeProducers => exchange::<_, DescribeProducersResponse>(
                    conn,
                    key,
                    version,
                    DescribeProducersRequest::default(),
                ),
                ApiKey::DescribeTransactions => exchange::<_, DescribeTransactionsResponse>(
                    conn,
                    key,
                    version,
                    DescribeTransactionsRequest::default(),
                ),
                ApiKey::ListTransactions => exchange::<_, ListTransactionsResponse>(
                    conn,
                    key,
                    version,
                    ListTransactionsRequest::default(),
                ),
                ApiKey::OffsetForLeaderEpoch => exchange::<_, OffsetForLeaderEpochResponse>(
                    conn,
                    key,
                    version,
                    OffsetForLeaderEpochRequest::default(),
                ),
                ApiKey::ElectLeaders => exchange::<_, ElectLeadersResponse>(
                    conn,
                    key,
                    version,
                    ElectLeadersRequest::default().with_topic_partitions(Some(vec![])),
                ),
                ApiKey::DescribeQuorum => exchange::<_, DescribeQuorumResponse>(
                    conn,
                    key,
                    version,
                    DescribeQuorumRequest::default(),
                ),
                ApiKey::AlterPartitionReassignments => {
                    exchange::<_, AlterPartitionReassignmentsResponse>(
                        conn,
                        key,
                        version,
                        AlterPartitionReassignmentsRequest::default(),
                    )
                }
                ApiKey::ListPartitionReassignments => {
                    exchange::<_, ListPartitionReassignmentsResponse>(
                        conn,
                        key,
                        version,
                        ListPartitionReassignmentsRequest::default(),
                    )
                }
                other => panic!("{other:?} is in the registry but not in this test: add it here"),
            }
        }
    }
    // What was just exercised is exactly what the broker tells clients.
    let wire: ApiVersionsResponse =
        conn.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    let mut told: Vec<(i16, i16, i16)> = wire
        .api_keys
        .iter()
        .map(|a| (a.api_key, a.min_version, a.max_version))
        .collect();
    told.sort_unstable();
    let mut exercised: Vec<(i16, i16, i16)> =
        APIS.iter().map(|a| (a.key as i16, a.min, a.max)).collect();
    exercised.sort_unstable();
    assert_eq!(
        told, exercised,
        "ApiVersions advertises what the registry serves"
    );
}

/// Produce, Fetch, ListOffsets and Metadata at every version against one topic.
#[test]
fn data_path_apis_at_every_version() {
    let broker = TestBroker::start();
    let mut conn = Conn::open(&broker.addr);
    let topic = common::topic("matrix");
    create_topic(&mut conn, &topic, 1, &[]);

    let topic_id = metadata(&mut conn, Some(&[&topic]), false).topics[0].topic_id;
    let mut expected_offset = 0i64;
    for version in versions(ApiKey::Produce) {
        let mut request = produce_request(&topic, 0, one_record_batch(&format!("v{version}")));
        if version >= 13 {
            // By topic id (KIP-516).
            request.topic_data[0].topic_id = topic_id;
        }
        let response: ProduceResponse = conn.call(ApiKey::Produce, version, &request);
        let p = &response.responses[0].partition_responses[0];
        assert_eq!(
            (p.error_code, p.base_offset),
            (NONE, expected_offset),
            "Produce v{version}"
        );
        expected_offset += 1;
    }

    assert!(!topic_id.is_nil(), "Metadata v12 carries the topic id");
    for version in versions(ApiKey::Metadata) {
        let response: MetadataResponse = conn.call(
            ApiKey::Metadata,
            version,
            &metadata_request(Some(&[&topic]), true),
        );
        assert_eq!(response.brokers.len(), 1, "Metadata v{version}");
        assert_eq!(
            response.brokers[0].port,
            broker
                .addr
                .rsplit(':')
                .next()
                .unwrap()
                .parse::<i32>()
                .unwrap()
        );
        let t = &response.topics[0];
        assert_eq!(
            (t.error_code, t.partitions.len()),
            (NONE, 1),
            "Metadata v{version}"
        );
        assert_eq!(
            t.topic_id.is_nil(),
            version < 10,
            "topic ids from v10 (v{version})"
        );
    }

    for version in versions(ApiKey::Fetch) {
        let request = sessionless(
            version,
            &topic,
            topic_id,
            &[(0, 0, 1 << 20)],
            100,
            1,
            1 << 20,
        );
        let response = fetch(&mut conn, version, &request);
        let p = &response.responses[0].partitions[0];
        assert_eq!(p.error_code, NONE, "Fetch v{version}");
        assert_eq!(p.high_watermark, expected_offset, "Fetch v{version}");
        let records = p.records.clone().unwrap_or_default();
        let batches = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut records.clone())
            .expect("records decode");
        let values: Vec<_> = batches
            .iter()
            .flat_map(|b| b.records.iter())
            .map(|r| r.value.clone().unwrap())
            .collect();
        assert_eq!(
            values.len() as i64,
            expected_offset,
            "Fetch v{version} returns every record"
        );
        assert_eq!(values[0], Bytes::from_static(b"v3"));
    }

    for version in versions(ApiKey::ListOffsets) {
        let lookup = |conn: &mut Conn, timestamp: i64| {
            let request = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(topic_name(&topic))
                    .with_partitions(vec![ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(timestamp)])]);
            let response: ListOffsetsResponse = conn.call(ApiKey::ListOffsets, version, &request);
            let p = response.topics[0].partitions[0].clone();
            (p.error_code, p.offset)
        };
        assert_eq!(
            lookup(&mut conn, -1),
            (NONE, expected_offset),
            "latest, ListOffsets v{version}"
        );
        assert_eq!(
            lookup(&mut conn, -2),
            (NONE, 0),
            "earliest, ListOffsets v{version}"
        );
        assert_eq!(
            lookup(&mut conn, 1_600_000_000_000),
            (NONE, 0),
            "by time, ListOffsets v{version}"
        );
        if version >= 7 {
            // Every record has the same timestamp: the max is at the last offset that has it.
            let (error, offset) = lookup(&mut conn, -3);
            assert_eq!(error, NONE);
            assert!(
                (0..expected_offset).contains(&offset),
                "max timestamp offset {offset}, ListOffsets v{version}"
            );
        }
    }
}

/// Admin and bootstrap APIs at every version.
#[test]
fn admin_apis_at_every_version() {
    let broker = TestBroker::start();
    let mut conn = Conn::open(&broker.addr);

    for version in versions(ApiKey::ApiVersions) {
        let mut request = ApiVersionsRequest::default();
        if version >= 3 {
            request.client_software_name = str_bytes("matrix");
            request.client_software_version = str_bytes("1.0");
        }
        let response: ApiVersionsResponse = conn.call(ApiKey::ApiVersions, version, &request);
        assert_eq!(response.error_code, NONE, "ApiVersions v{version}");
        assert_eq!(response.api_keys.len(), APIS.len());
    }

    for version in versions(ApiKey::FindCoordinator) {
        let mut request = FindCoordinatorRequest::default();
        if version >= 4 {
            request.coordinator_keys = vec![str_bytes("group-a"), str_bytes("group-b")];
        } else {
            request.key = str_bytes("group-a");
        }
        let response: FindCoordinatorResponse =
            conn.call(ApiKey::FindCoordinator, version, &request);
        if version >= 4 {
            assert_eq!(response.coordinators.len(), 2, "one answer per key");
            assert!(response
                .coordinators
                .iter()
                .all(|c| c.error_code == NONE && c.node_id.0 == 1));
        } else {
            assert_eq!(
                (response.error_code, response.node_id.0),
                (NONE, 1),
                "FindCoordinator v{version}"
            );
        }
    }

    let mut created = Vec::new();
    for version in versions(ApiKey::CreateTopics) {
        let name = common::topic(&format!("create-v{version}"));
        let request = create_topics_request(&name, 2, 1, &[("retention.ms", "3600000")]);
        let response: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, version, &request);
        assert_eq!(
            response.topics[0].error_code, NONE,
            "CreateTopics v{version}"
        );
        if version >= 5 {
            assert_eq!(response.topics[0].num_partitions, 2);
        }
        if version >= 7 {
            assert!(!response.topics[0].topic_id.is_nil());
        }
        created.push(name);
    }

    for version in versions(ApiKey::DescribeConfigs) {
        let request = DescribeConfigsRequest::default()
            .with_resources(vec![DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(str_bytes(&created[0]))
                .with_configuration_keys(None)])
            .with_include_synonyms(version >= 1);
        let response: DescribeConfigsResponse =
            conn.call(ApiKey::DescribeConfigs, version, &request);
        let result = &response.results[0];
        assert_eq!(result.error_code, NONE, "DescribeConfigs v{version}");
        let retention = result
            .configs
            .iter()
            .find(|c| c.name.as_str() == "retention.ms")
            .expect("retention.ms");
        assert_eq!(retention.value.as_deref(), Some("3600000"));
        assert_eq!(retention.config_source, 1, "a topic override");
        if version >= 1 {
            assert_eq!(retention.synonyms.len(), 2, "topic override and default");
        }
        if version >= 3 {
            assert_eq!(retention.config_type, 5, "LONG");
        }
    }

    for version in versions(ApiKey::AlterConfigs) {
        let value = format!("{}", 1000 + i64::from(version));
        let request =
            AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(str_bytes(&created[0]))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(str_bytes("retention.ms"))
                    .with_value(Some(str_bytes(&value)))])]);
        let response: AlterConfigsResponse = conn.call(ApiKey::AlterConfigs, version, &request);
        assert_eq!(
            response.responses[0].error_code, NONE,
            "AlterConfigs v{version}"
        );
    }

    for version in versions(ApiKey::IncrementalAlterConfigs) {
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            incremental::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(str_bytes(&created[0]))
                .with_configs(vec![incremental::AlterableConfig::default()
                    .with_name(str_bytes("segment.ms"))
                    .with_config_operation(0)
                    .with_value(Some(str_bytes("60000")))]),
        ]);
        let response: IncrementalAlterConfigsResponse =
            conn.call(ApiKey::IncrementalAlterConfigs, version, &request);
        assert_eq!(
            response.responses[0].error_code, NONE,
            "IncrementalAlterConfigs v{version}"
        );
    }

    for (i, version) in versions(ApiKey::CreatePartitions).enumerate() {
        let request = CreatePartitionsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(topic_name(&created[0]))
                .with_count(3 + i as i32)]);
        let response: CreatePartitionsResponse =
            conn.call(ApiKey::CreatePartitions, version, &request);
        assert_eq!(
            response.results[0].error_code, NONE,
            "CreatePartitions v{version}"
        );
    }

    for version in versions(ApiKey::DeleteRecords) {
        let topic = &created[1];
        for i in 0..3 {
            assert_eq!(
                produce(&mut conn, topic, 0, one_record_batch(&format!("r{i}"))).error_code,
                NONE
            );
        }
        let target = latest_offset(&mut conn, topic, 0) - 1;
        let request = DeleteRecordsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(target)])]);
        let response: DeleteRecordsResponse = conn.call(ApiKey::DeleteRecords, version, &request);
        let p = &response.topics[0].partitions[0];
        assert_eq!(
            (p.error_code, p.low_watermark),
            (NONE, target),
            "DeleteRecords v{version}"
        );
    }

    for version in versions(ApiKey::InitProducerId) {
        let mut request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000);
        if version >= 3 {
            request.producer_id = ProducerId(-1);
            request.producer_epoch = -1;
        }
        let response: InitProducerIdResponse = conn.call(ApiKey::InitProducerId, version, &request);
        assert_eq!(response.error_code, NONE, "InitProducerId v{version}");
        assert!(response.producer_id.0 >= 0 && response.producer_epoch == 0);
    }

    for version in versions(ApiKey::DescribeCluster) {
        let response: DescribeClusterResponse = conn.call(
            ApiKey::DescribeCluster,
            version,
            &DescribeClusterRequest::default(),
        );
        assert_eq!(response.error_code, NONE, "DescribeCluster v{version}");
        assert!(!response.cluster_id.is_empty());
        assert_eq!(response.brokers.len(), 1);
    }

    for version in versions(ApiKey::DeleteTopics) {
        let name = &common::topic(&format!("delete-v{version}"));
        create_topic(&mut conn, name, 1, &[]);
        let request = if version >= 6 {
            DeleteTopicsRequest::default().with_topics(vec![
                DeleteTopicState::default().with_name(Some(topic_name(name)))
            ])
        } else {
            DeleteTopicsRequest::default().with_topic_names(vec![topic_name(name)])
        }
        .with_timeout_ms(10_000);
        let response: DeleteTopicsResponse = conn.call(ApiKey::DeleteTopics, version, &request);
        assert_eq!(
            response.responses[0].error_code, NONE,
            "DeleteTopics v{version}"
        );
        let after = metadata(&mut conn, Some(&[name]), false);
        assert_eq!(
            after.topics[0].error_code, UNKNOWN_TOPIC_OR_PARTITION,
            "{name} is gone"
        );
    }
}
