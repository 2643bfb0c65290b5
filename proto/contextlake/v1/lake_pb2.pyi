from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_UNSPECIFIED: _ClassVar[Status]
    STATUS_RUNNING: _ClassVar[Status]
    STATUS_SUCCEEDED: _ClassVar[Status]
    STATUS_FAILED: _ClassVar[Status]
    STATUS_ABANDONED: _ClassVar[Status]
STATUS_UNSPECIFIED: Status
STATUS_RUNNING: Status
STATUS_SUCCEEDED: Status
STATUS_FAILED: Status
STATUS_ABANDONED: Status

class Step(_message.Message):
    __slots__ = ("index", "step_id", "parent_step_id", "kind", "name", "input", "output", "error", "actor", "started_at_us", "duration_ms", "tokens_in", "tokens_out", "cost_usd", "attributes", "input_ref", "output_ref")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_STEP_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_US_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_IN_FIELD_NUMBER: _ClassVar[int]
    TOKENS_OUT_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    INPUT_REF_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_REF_FIELD_NUMBER: _ClassVar[int]
    index: int
    step_id: str
    parent_step_id: str
    kind: str
    name: str
    input: str
    output: str
    error: str
    actor: str
    started_at_us: int
    duration_ms: float
    tokens_in: int
    tokens_out: int
    cost_usd: float
    attributes: str
    input_ref: str
    output_ref: str
    def __init__(self, index: _Optional[int] = ..., step_id: _Optional[str] = ..., parent_step_id: _Optional[str] = ..., kind: _Optional[str] = ..., name: _Optional[str] = ..., input: _Optional[str] = ..., output: _Optional[str] = ..., error: _Optional[str] = ..., actor: _Optional[str] = ..., started_at_us: _Optional[int] = ..., duration_ms: _Optional[float] = ..., tokens_in: _Optional[int] = ..., tokens_out: _Optional[int] = ..., cost_usd: _Optional[float] = ..., attributes: _Optional[str] = ..., input_ref: _Optional[str] = ..., output_ref: _Optional[str] = ...) -> None: ...

class Trajectory(_message.Message):
    __slots__ = ("trajectory_id", "task", "agent", "agent_version", "model", "session_id", "on_behalf_of", "parent_id", "fork_step", "status", "started_at_us", "ended_at_us", "success", "reward", "scores", "tokens_in", "tokens_out", "cost_usd", "tags", "meta", "expires_at_us", "steps", "tenant", "task_hash", "n_steps", "ingested_at_us", "retracted_at_us", "retract_reason")
    class ScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TRAJECTORY_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ON_BEHALF_OF_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    FORK_STEP_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_US_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_US_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    TOKENS_IN_FIELD_NUMBER: _ClassVar[int]
    TOKENS_OUT_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_US_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TASK_HASH_FIELD_NUMBER: _ClassVar[int]
    N_STEPS_FIELD_NUMBER: _ClassVar[int]
    INGESTED_AT_US_FIELD_NUMBER: _ClassVar[int]
    RETRACTED_AT_US_FIELD_NUMBER: _ClassVar[int]
    RETRACT_REASON_FIELD_NUMBER: _ClassVar[int]
    trajectory_id: str
    task: str
    agent: str
    agent_version: str
    model: str
    session_id: str
    on_behalf_of: str
    parent_id: str
    fork_step: int
    status: Status
    started_at_us: int
    ended_at_us: int
    success: bool
    reward: float
    scores: _containers.ScalarMap[str, float]
    tokens_in: int
    tokens_out: int
    cost_usd: float
    tags: _containers.RepeatedScalarFieldContainer[str]
    meta: str
    expires_at_us: int
    steps: _containers.RepeatedCompositeFieldContainer[Step]
    tenant: str
    task_hash: str
    n_steps: int
    ingested_at_us: int
    retracted_at_us: int
    retract_reason: str
    def __init__(self, trajectory_id: _Optional[str] = ..., task: _Optional[str] = ..., agent: _Optional[str] = ..., agent_version: _Optional[str] = ..., model: _Optional[str] = ..., session_id: _Optional[str] = ..., on_behalf_of: _Optional[str] = ..., parent_id: _Optional[str] = ..., fork_step: _Optional[int] = ..., status: _Optional[_Union[Status, str]] = ..., started_at_us: _Optional[int] = ..., ended_at_us: _Optional[int] = ..., success: _Optional[bool] = ..., reward: _Optional[float] = ..., scores: _Optional[_Mapping[str, float]] = ..., tokens_in: _Optional[int] = ..., tokens_out: _Optional[int] = ..., cost_usd: _Optional[float] = ..., tags: _Optional[_Iterable[str]] = ..., meta: _Optional[str] = ..., expires_at_us: _Optional[int] = ..., steps: _Optional[_Iterable[_Union[Step, _Mapping]]] = ..., tenant: _Optional[str] = ..., task_hash: _Optional[str] = ..., n_steps: _Optional[int] = ..., ingested_at_us: _Optional[int] = ..., retracted_at_us: _Optional[int] = ..., retract_reason: _Optional[str] = ...) -> None: ...

class Reject(_message.Message):
    __slots__ = ("index", "field", "reason", "trajectory_id")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TRAJECTORY_ID_FIELD_NUMBER: _ClassVar[int]
    index: int
    field: str
    reason: str
    trajectory_id: str
    def __init__(self, index: _Optional[int] = ..., field: _Optional[str] = ..., reason: _Optional[str] = ..., trajectory_id: _Optional[str] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("agent", "agent_version", "model", "session_id", "status", "success", "since_us", "until_us", "min_reward", "tags")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    SINCE_US_FIELD_NUMBER: _ClassVar[int]
    UNTIL_US_FIELD_NUMBER: _ClassVar[int]
    MIN_REWARD_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    agent: str
    agent_version: str
    model: str
    session_id: str
    status: _containers.RepeatedScalarFieldContainer[Status]
    success: bool
    since_us: int
    until_us: int
    min_reward: float
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, agent: _Optional[str] = ..., agent_version: _Optional[str] = ..., model: _Optional[str] = ..., session_id: _Optional[str] = ..., status: _Optional[_Iterable[_Union[Status, str]]] = ..., success: _Optional[bool] = ..., since_us: _Optional[int] = ..., until_us: _Optional[int] = ..., min_reward: _Optional[float] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class StartTrajectoryRequest(_message.Message):
    __slots__ = ("trajectory",)
    TRAJECTORY_FIELD_NUMBER: _ClassVar[int]
    trajectory: Trajectory
    def __init__(self, trajectory: _Optional[_Union[Trajectory, _Mapping]] = ...) -> None: ...

class StartTrajectoryResponse(_message.Message):
    __slots__ = ("trajectory_id", "lsn")
    TRAJECTORY_ID_FIELD_NUMBER: _ClassVar[int]
    LSN_FIELD_NUMBER: _ClassVar[int]
    trajectory_id: str
    lsn: int
    def __init__(self, trajectory_id: _Optional[str] = ..., lsn: _Optional[int] = ...) -> None: ...

class AppendStepsRequest(_message.Message):
    __slots__ = ("trajectory_id", "steps")
    TRAJECTORY_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    trajectory_id: str
    steps: _containers.RepeatedCompositeFieldContainer[Step]
    def __init__(self, trajectory_id: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[Step, _Mapping]]] = ...) -> None: ...

class AppendStepsResponse(_message.Message):
    __slots__ = ("accepted", "rejects", "lsn")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTS_FIELD_NUMBER: _ClassVar[int]
    LSN_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    rejects: _containers.RepeatedCompositeFieldContainer[Reject]
    lsn: int
    def __init__(self, accepted: _Optional[int] = ..., rejects: _Optional[_Iterable[_Union[Reject, _Mapping]]] = ..., lsn: _Optional[int] = ...) -> None: ...

class StreamStepsRequest(_message.Message):
    __slots__ = ("trajectory_id", "steps")
    TRAJECTORY_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    trajectory_id: str
    steps: _containers.RepeatedCompositeFieldContainer[Step]
    def __init__(self, trajectory_id: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[Step, _Mapping]]] = ...) -> None: ...

class StreamStepsResponse(_message.Message):
    __slots__ = ("accepted", "rejects", "lsn", "messages")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTS_FIELD_NUMBER: _ClassVar[int]
    LSN_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    rejects: _containers.RepeatedCompositeFieldContainer[Reject]
    lsn: int
    messages: int
    def __init__(self, accepted: _Optional[int] = ..., rejects: _Optional[_Iterable[_Union[Reject, _Mapping]]] = ..., lsn: _Optional[int] = ..., messages: _Optional[int] = ...) -> None: ...

class FinishTrajectoryRequest(_message.Message):
    __slots__ = ("trajectory_id", "status", "success", "reward", "scores", "ended_at_us")
    class ScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TRAJECTORY_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_US_FIELD_NUMBER: _ClassVar[int]
    trajectory_id: str
    status: Status
    success: bool
    reward: float
    scores: _containers.ScalarMap[str, float]
    ended_at_us: int
    def __init__(self, trajectory_id: _Optional[str] = ..., status: _Optional[_Union[Status, str]] = ..., success: _Optional[bool] = ..., reward: _Optional[float] = ..., scores: _Optional[_Mapping[str, float]] = ..., ended_at_us: _Optional[int] = ...) -> None: ...

class FinishTrajectoryResponse(_message.Message):
    __slots__ = ("lsn",)
    LSN_FIELD_NUMBER: _ClassVar[int]
    lsn: int
    def __init__(self, lsn: _Optional[int] = ...) -> None: ...

class IngestArrowRequest(_message.Message):
    __slots__ = ("arrow_ipc",)
    ARROW_IPC_FIELD_NUMBER: _ClassVar[int]
    arrow_ipc: bytes
    def __init__(self, arrow_ipc: _Optional[bytes] = ...) -> None: ...

class IngestArrowResponse(_message.Message):
    __slots__ = ("accepted", "steps", "rejects", "lsn")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    REJECTS_FIELD_NUMBER: _ClassVar[int]
    LSN_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    steps: int
    rejects: _containers.RepeatedCompositeFieldContainer[Reject]
    lsn: int
    def __init__(self, accepted: _Optional[int] = ..., steps: _Optional[int] = ..., rejects: _Optional[_Iterable[_Union[Reject, _Mapping]]] = ..., lsn: _Optional[int] = ...) -> None: ...

class Vector(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class GetContextRequest(_message.Message):
    __slots__ = ("text", "vector", "k", "filter", "agent", "min_lsn")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    MIN_LSN_FIELD_NUMBER: _ClassVar[int]
    text: str
    vector: Vector
    k: int
    filter: Filter
    agent: str
    min_lsn: int
    def __init__(self, text: _Optional[str] = ..., vector: _Optional[_Union[Vector, _Mapping]] = ..., k: _Optional[int] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., agent: _Optional[str] = ..., min_lsn: _Optional[int] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("label", "confidence", "reason", "cluster_id")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    label: str
    confidence: float
    reason: str
    cluster_id: int
    def __init__(self, label: _Optional[str] = ..., confidence: _Optional[float] = ..., reason: _Optional[str] = ..., cluster_id: _Optional[int] = ...) -> None: ...

class Neighbour(_message.Message):
    __slots__ = ("trajectory", "similarity")
    TRAJECTORY_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    trajectory: Trajectory
    similarity: float
    def __init__(self, trajectory: _Optional[_Union[Trajectory, _Mapping]] = ..., similarity: _Optional[float] = ...) -> None: ...

class GetContextResponse(_message.Message):
    __slots__ = ("verdict", "neighbours", "context", "context_id", "version", "answer_json")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOURS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ANSWER_JSON_FIELD_NUMBER: _ClassVar[int]
    verdict: Verdict
    neighbours: _containers.RepeatedCompositeFieldContainer[Neighbour]
    context: str
    context_id: str
    version: int
    answer_json: str
    def __init__(self, verdict: _Optional[_Union[Verdict, _Mapping]] = ..., neighbours: _Optional[_Iterable[_Union[Neighbour, _Mapping]]] = ..., context: _Optional[str] = ..., context_id: _Optional[str] = ..., version: _Optional[int] = ..., answer_json: _Optional[str] = ...) -> None: ...

class ReportOutcomeRequest(_message.Message):
    __slots__ = ("context_id", "used", "success", "reward", "trajectory_id")
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    TRAJECTORY_ID_FIELD_NUMBER: _ClassVar[int]
    context_id: str
    used: bool
    success: bool
    reward: float
    trajectory_id: str
    def __init__(self, context_id: _Optional[str] = ..., used: _Optional[bool] = ..., success: _Optional[bool] = ..., reward: _Optional[float] = ..., trajectory_id: _Optional[str] = ...) -> None: ...

class ReportOutcomeResponse(_message.Message):
    __slots__ = ("lsn", "stored", "hit_threshold")
    LSN_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    HIT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    lsn: int
    stored: bool
    hit_threshold: float
    def __init__(self, lsn: _Optional[int] = ..., stored: _Optional[bool] = ..., hit_threshold: _Optional[float] = ...) -> None: ...

class GetTrajectoryRequest(_message.Message):
    __slots__ = ("trajectory_id", "as_of", "full_payloads", "min_lsn")
    TRAJECTORY_ID_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    FULL_PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    MIN_LSN_FIELD_NUMBER: _ClassVar[int]
    trajectory_id: str
    as_of: str
    full_payloads: bool
    min_lsn: int
    def __init__(self, trajectory_id: _Optional[str] = ..., as_of: _Optional[str] = ..., full_payloads: _Optional[bool] = ..., min_lsn: _Optional[int] = ...) -> None: ...

class GetTrajectoryResponse(_message.Message):
    __slots__ = ("trajectory", "version")
    TRAJECTORY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    trajectory: Trajectory
    version: int
    def __init__(self, trajectory: _Optional[_Union[Trajectory, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class ListTrajectoriesRequest(_message.Message):
    __slots__ = ("filter", "page_size", "page_token", "as_of", "min_lsn", "include_retracted")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    MIN_LSN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_RETRACTED_FIELD_NUMBER: _ClassVar[int]
    filter: Filter
    page_size: int
    page_token: str
    as_of: str
    min_lsn: int
    include_retracted: bool
    def __init__(self, filter: _Optional[_Union[Filter, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., as_of: _Optional[str] = ..., min_lsn: _Optional[int] = ..., include_retracted: _Optional[bool] = ...) -> None: ...

class ListTrajectoriesResponse(_message.Message):
    __slots__ = ("trajectories", "next_page_token", "version")
    TRAJECTORIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    trajectories: _containers.RepeatedCompositeFieldContainer[Trajectory]
    next_page_token: str
    version: int
    def __init__(self, trajectories: _Optional[_Iterable[_Union[Trajectory, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("tenant", "trajectories", "steps", "payloads", "version", "submitted_lsn", "applied_lsn", "pending_steps", "auth")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TRAJECTORIES_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_LSN_FIELD_NUMBER: _ClassVar[int]
    APPLIED_LSN_FIELD_NUMBER: _ClassVar[int]
    PENDING_STEPS_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    trajectories: int
    steps: int
    payloads: int
    version: int
    submitted_lsn: int
    applied_lsn: int
    pending_steps: int
    auth: str
    def __init__(self, tenant: _Optional[str] = ..., trajectories: _Optional[int] = ..., steps: _Optional[int] = ..., payloads: _Optional[int] = ..., version: _Optional[int] = ..., submitted_lsn: _Optional[int] = ..., applied_lsn: _Optional[int] = ..., pending_steps: _Optional[int] = ..., auth: _Optional[str] = ...) -> None: ...

class Version(_message.Message):
    __slots__ = ("version", "created_at_us", "operation", "tags", "tables", "detail")
    class TablesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_US_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    version: int
    created_at_us: int
    operation: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    tables: _containers.ScalarMap[str, int]
    detail: str
    def __init__(self, version: _Optional[int] = ..., created_at_us: _Optional[int] = ..., operation: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., tables: _Optional[_Mapping[str, int]] = ..., detail: _Optional[str] = ...) -> None: ...

class VersionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VersionsResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[Version]
    def __init__(self, versions: _Optional[_Iterable[_Union[Version, _Mapping]]] = ...) -> None: ...

class TagRequest(_message.Message):
    __slots__ = ("name", "ref", "force", "delete")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    name: str
    ref: str
    force: bool
    delete: bool
    def __init__(self, name: _Optional[str] = ..., ref: _Optional[str] = ..., force: _Optional[bool] = ..., delete: _Optional[bool] = ...) -> None: ...

class TagResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: Version
    def __init__(self, version: _Optional[_Union[Version, _Mapping]] = ...) -> None: ...

class RestoreRequest(_message.Message):
    __slots__ = ("ref",)
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: str
    def __init__(self, ref: _Optional[str] = ...) -> None: ...

class RestoreResponse(_message.Message):
    __slots__ = ("version", "restored")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RESTORED_FIELD_NUMBER: _ClassVar[int]
    version: Version
    restored: int
    def __init__(self, version: _Optional[_Union[Version, _Mapping]] = ..., restored: _Optional[int] = ...) -> None: ...

class ReclusterRequest(_message.Message):
    __slots__ = ("force",)
    FORCE_FIELD_NUMBER: _ClassVar[int]
    force: bool
    def __init__(self, force: _Optional[bool] = ...) -> None: ...

class ReclusterResponse(_message.Message):
    __slots__ = ("clusters", "trajectories", "version")
    CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    TRAJECTORIES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    clusters: int
    trajectories: int
    version: int
    def __init__(self, clusters: _Optional[int] = ..., trajectories: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...

class RetractRequest(_message.Message):
    __slots__ = ("trajectory_ids", "reason", "purge")
    TRAJECTORY_IDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PURGE_FIELD_NUMBER: _ClassVar[int]
    trajectory_ids: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    purge: bool
    def __init__(self, trajectory_ids: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ..., purge: _Optional[bool] = ...) -> None: ...

class RetractResponse(_message.Message):
    __slots__ = ("retracted", "version")
    RETRACTED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    retracted: int
    version: int
    def __init__(self, retracted: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...
