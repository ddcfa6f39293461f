//! The requests brokers send to the active controller and its answers
//! (carried by the quorum's listener as opaque bytes), JSON-encoded: what
//! `node::brokers` serves and sends, and what `node::quorum` sends for
//! producer ids.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::metadata::controller::ApiError;
use crate::protocol::errors::ErrorCode;

/// A broker's heartbeat: who it is, in this run, and where clients reach it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Heartbeat {
    pub id: i32,
    pub incarnation: Uuid,
    pub host: String,
    pub port: i32,
    /// This broker's replicas whose log failed here (KRaft's heartbeat
    /// carries offline log directories): the controller moves their
    /// leads and ISR places off it, and lets them neither lead nor rejoin
    /// an ISR while they are listed.
    #[serde(default)]
    pub offline: Vec<(Uuid, i32)>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ControllerRequest {
    Heartbeat(Heartbeat),
    /// The next block of producer ids for a broker's InitProducerId
    /// (KIP-730's AllocateProducerIds).
    AllocateProducerIds,
    /// CreateTopics (or auto-creation) received by a broker that does not
    /// lead the quorum, forwarded (KIP-590).
    CreateTopic {
        name: String,
        partitions: i32,
        configs: std::collections::BTreeMap<String, String>,
        manual: Option<Vec<Vec<i32>>>,
        /// -1: the controller's default.
        #[serde(default = "default_replication_factor")]
        replication_factor: i16,
        validate_only: bool,
    },
    /// AlterPartition (KIP-497): the leader of a partition asks for a new ISR.
    AlterPartition {
        broker: i32,
        topic_id: Uuid,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    },
    /// ElectLeaders (KIP-460) received by a broker that does not lead the
    /// quorum, forwarded; None: every partition.
    ElectLeaders {
        unclean: bool,
        partitions: Option<Vec<(String, i32)>>,
    },
    /// Controlled shutdown: the broker is stopping; its leaderships move to
    /// other in-sync replicas and it leaves the ISRs (it is fenced) before it
    /// stops serving.
    ControlledShutdown {
        id: i32,
        incarnation: Uuid,
    },
    /// An admin change received by a broker that does not lead the quorum,
    /// forwarded (KIP-590); answered Live once committed.
    Admin(AdminChange),
}

/// An admin change made by the active controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum AdminChange {
    /// DeleteTopics: of the topic `name` (as the client named it), or of
    /// the topic `id` (a request by id: `name` None).
    DeleteTopic { id: Uuid, name: Option<String> },
    /// CreatePartitions; `manual`: checked replica lists of the new ones.
    CreatePartitions {
        name: String,
        count: i32,
        manual: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    },
    /// AlterConfigs / IncrementalAlterConfigs: the topic's new overrides.
    SetTopicConfigs {
        name: String,
        configs: std::collections::BTreeMap<String, String>,
        validate_only: bool,
    },
    /// IncrementalAlterConfigs: `ops` applied to the topic's overrides as
    /// the controller has them.
    AlterTopicConfigs {
        name: String,
        ops: Vec<crate::metadata::topic_config::ConfigOp>,
        validate_only: bool,
    },
    /// AlterPartitionReassignments, one partition: move it to `target`
    /// replicas, or (None) cancel its move.
    Reassign {
        topic: String,
        partition: i32,
        target: Option<Vec<i32>>,
        allow_replication_factor_change: bool,
    },
}

fn default_replication_factor() -> i16 {
    -1
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ControllerAnswer {
    /// Registered and live; or (to AlterPartition, ControlledShutdown) done.
    Live,
    /// Producer ids `[start, end)`, recorded.
    ProducerIds { start: i64, end: i64 },
    /// The topic is created (or, validating only, would be), with this id.
    TopicCreated { id: Uuid },
    /// A topic's overrides as a change made them.
    Configs {
        overrides: std::collections::BTreeMap<String, String>,
    },
    /// An admin change made: `answer` (Live, Configs, TopicDeleted), and
    /// the index after the controller's last applied metadata entry then,
    /// which the asking broker's image must reach before it answers its
    /// client.
    Made {
        through: u64,
        answer: Box<ControllerAnswer>,
    },
    /// DeleteTopics: the topic deleted.
    TopicDeleted { id: Uuid, name: String },
    /// Each partition's election: (topic, partition, error code, message).
    Elected {
        results: Vec<(String, i32, i16, Option<String>)>,
    },
    /// Not done (not the controller any more, the write failed): the Kafka
    /// error code and why.
    Refused { code: i16, message: String },
}

/// The request for a block of producer ids, encoded.
pub(crate) fn producer_ids_request() -> Vec<u8> {
    serde_json::to_vec(&ControllerRequest::AllocateProducerIds).expect("requests encode")
}

/// The controller's answer in `bytes`: a refusal as its Kafka error.
pub(crate) fn answer_of(bytes: &[u8]) -> Result<ControllerAnswer, ApiError> {
    match serde_json::from_slice::<ControllerAnswer>(bytes) {
        Ok(ControllerAnswer::Refused { code, message }) => {
            let code = ErrorCode::try_from_code(code).unwrap_or(ErrorCode::UnknownServerError);
            Err(ApiError::new(code, message))
        }
        Ok(answer) => Ok(answer),
        Err(error) => Err(ApiError::new(
            ErrorCode::UnknownServerError,
            format!("undecodable answer: {error}"),
        )),
    }
}

/// An answer that is not what the request asked for.
pub(crate) fn unexpected(answer: ControllerAnswer) -> ApiError {
    ApiError::new(
        ErrorCode::UnknownServerError,
        format!("the controller answered {answer:?}"),
    )
}

/// The block of producer ids in the controller's `answer`.
pub(crate) fn producer_ids_answer(answer: &[u8]) -> Result<(i64, i64), ApiError> {
    match answer_of(answer)? {
        ControllerAnswer::ProducerIds { start, end } => Ok((start, end)),
        other => Err(unexpected(other)),
    }
}

pub(crate) fn refused(error: ApiError) -> ControllerAnswer {
    ControllerAnswer::Refused {
        code: error.code.code(),
        message: error.message,
    }
}
