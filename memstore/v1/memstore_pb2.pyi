from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Durability(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DURABILITY_UNSPECIFIED: _ClassVar[Durability]
    CACHE: _ClassVar[Durability]
    PERSISTENT: _ClassVar[Durability]

class LocalStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOCAL_MISS: _ClassVar[LocalStatus]
    LOCAL_FOUND: _ClassVar[LocalStatus]
    LOCAL_REMOTE: _ClassVar[LocalStatus]

class Tier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIER_NONE: _ClassVar[Tier]
    HOT: _ClassVar[Tier]
    WARM: _ClassVar[Tier]
    COLD: _ClassVar[Tier]
    POOL: _ClassVar[Tier]

class PrefetchMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WAIT_COMPLETE: _ClassVar[PrefetchMode]
    BEST_EFFORT: _ClassVar[PrefetchMode]
    TIMEOUT: _ClassVar[PrefetchMode]
DURABILITY_UNSPECIFIED: Durability
CACHE: Durability
PERSISTENT: Durability
LOCAL_MISS: LocalStatus
LOCAL_FOUND: LocalStatus
LOCAL_REMOTE: LocalStatus
TIER_NONE: Tier
HOT: Tier
WARM: Tier
COLD: Tier
POOL: Tier
WAIT_COMPLETE: PrefetchMode
BEST_EFFORT: PrefetchMode
TIMEOUT: PrefetchMode

class RetentionHint(_message.Message):
    __slots__ = ("ttl_seconds", "priority", "session")
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ttl_seconds: float
    priority: int
    session: str
    def __init__(self, ttl_seconds: _Optional[float] = ..., priority: _Optional[int] = ..., session: _Optional[str] = ...) -> None: ...

class EndSessionRequest(_message.Message):
    __slots__ = ("session", "pause", "resume_in_seconds")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    PAUSE_FIELD_NUMBER: _ClassVar[int]
    RESUME_IN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    session: str
    pause: bool
    resume_in_seconds: float
    def __init__(self, session: _Optional[str] = ..., pause: _Optional[bool] = ..., resume_in_seconds: _Optional[float] = ...) -> None: ...

class EndSessionResponse(_message.Message):
    __slots__ = ("released",)
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    released: int
    def __init__(self, released: _Optional[int] = ...) -> None: ...

class CreateNamespaceRequest(_message.Message):
    __slots__ = ("name", "durability", "warm_codec", "cold_codec", "value_layout", "shared", "identity")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_FIELD_NUMBER: _ClassVar[int]
    WARM_CODEC_FIELD_NUMBER: _ClassVar[int]
    COLD_CODEC_FIELD_NUMBER: _ClassVar[int]
    VALUE_LAYOUT_FIELD_NUMBER: _ClassVar[int]
    SHARED_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    durability: Durability
    warm_codec: str
    cold_codec: str
    value_layout: ArrayInfo
    shared: bool
    identity: str
    def __init__(self, name: _Optional[str] = ..., durability: _Optional[_Union[Durability, str]] = ..., warm_codec: _Optional[str] = ..., cold_codec: _Optional[str] = ..., value_layout: _Optional[_Union[ArrayInfo, _Mapping]] = ..., shared: _Optional[bool] = ..., identity: _Optional[str] = ...) -> None: ...

class CreateNamespaceResponse(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: CreateNamespaceRequest
    def __init__(self, namespace: _Optional[_Union[CreateNamespaceRequest, _Mapping]] = ...) -> None: ...

class ArrayInfo(_message.Message):
    __slots__ = ("dtype", "shape")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class PutItem(_message.Message):
    __slots__ = ("key", "size", "array", "offset", "length", "parent")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ARRAY_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    size: int
    array: ArrayInfo
    offset: int
    length: int
    parent: bytes
    def __init__(self, key: _Optional[bytes] = ..., size: _Optional[int] = ..., array: _Optional[_Union[ArrayInfo, _Mapping]] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ..., parent: _Optional[bytes] = ...) -> None: ...

class PutChunk(_message.Message):
    __slots__ = ("namespace", "items", "hint", "data")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    items: _containers.RepeatedCompositeFieldContainer[PutItem]
    hint: RetentionHint
    data: bytes
    def __init__(self, namespace: _Optional[str] = ..., items: _Optional[_Iterable[_Union[PutItem, _Mapping]]] = ..., hint: _Optional[_Union[RetentionHint, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class PutResponse(_message.Message):
    __slots__ = ("stored",)
    STORED_FIELD_NUMBER: _ClassVar[int]
    stored: int
    def __init__(self, stored: _Optional[int] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("namespace", "keys", "no_promote")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    NO_PROMOTE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    no_promote: bool
    def __init__(self, namespace: _Optional[str] = ..., keys: _Optional[_Iterable[bytes]] = ..., no_promote: _Optional[bool] = ...) -> None: ...

class GetItem(_message.Message):
    __slots__ = ("index", "found", "size", "array", "offset", "length")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ARRAY_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    index: int
    found: bool
    size: int
    array: ArrayInfo
    offset: int
    length: int
    def __init__(self, index: _Optional[int] = ..., found: _Optional[bool] = ..., size: _Optional[int] = ..., array: _Optional[_Union[ArrayInfo, _Mapping]] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class GetChunk(_message.Message):
    __slots__ = ("items", "data")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[GetItem]
    data: bytes
    def __init__(self, items: _Optional[_Iterable[_Union[GetItem, _Mapping]]] = ..., data: _Optional[bytes] = ...) -> None: ...

class KeysRequest(_message.Message):
    __slots__ = ("namespace", "keys", "hint")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    hint: RetentionHint
    def __init__(self, namespace: _Optional[str] = ..., keys: _Optional[_Iterable[bytes]] = ..., hint: _Optional[_Union[RetentionHint, _Mapping]] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, deleted: _Optional[_Iterable[bool]] = ...) -> None: ...

class ExistsResponse(_message.Message):
    __slots__ = ("exists",)
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    exists: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, exists: _Optional[_Iterable[bool]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TierStats(_message.Message):
    __slots__ = ("name", "items", "bytes", "capacity_bytes", "hits", "misses", "demotions", "evictions", "promotions", "checksum_failures", "failed_demotions", "compression_ratio", "map_bytes", "published", "errors")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    DEMOTIONS_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    PROMOTIONS_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FAILURES_FIELD_NUMBER: _ClassVar[int]
    FAILED_DEMOTIONS_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_RATIO_FIELD_NUMBER: _ClassVar[int]
    MAP_BYTES_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    name: str
    items: int
    bytes: int
    capacity_bytes: int
    hits: int
    misses: int
    demotions: int
    evictions: int
    promotions: int
    checksum_failures: int
    failed_demotions: int
    compression_ratio: float
    map_bytes: int
    published: int
    errors: int
    def __init__(self, name: _Optional[str] = ..., items: _Optional[int] = ..., bytes: _Optional[int] = ..., capacity_bytes: _Optional[int] = ..., hits: _Optional[int] = ..., misses: _Optional[int] = ..., demotions: _Optional[int] = ..., evictions: _Optional[int] = ..., promotions: _Optional[int] = ..., checksum_failures: _Optional[int] = ..., failed_demotions: _Optional[int] = ..., compression_ratio: _Optional[float] = ..., map_bytes: _Optional[int] = ..., published: _Optional[int] = ..., errors: _Optional[int] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("tiers", "namespaces", "pinned", "policy", "hot_segment", "cold_reader_slots", "tenants", "scope")
    TIERS_FIELD_NUMBER: _ClassVar[int]
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    HOT_SEGMENT_FIELD_NUMBER: _ClassVar[int]
    COLD_READER_SLOTS_FIELD_NUMBER: _ClassVar[int]
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    tiers: _containers.RepeatedCompositeFieldContainer[TierStats]
    namespaces: int
    pinned: int
    policy: str
    hot_segment: str
    cold_reader_slots: int
    tenants: _containers.RepeatedCompositeFieldContainer[TenantUsage]
    scope: str
    def __init__(self, tiers: _Optional[_Iterable[_Union[TierStats, _Mapping]]] = ..., namespaces: _Optional[int] = ..., pinned: _Optional[int] = ..., policy: _Optional[str] = ..., hot_segment: _Optional[str] = ..., cold_reader_slots: _Optional[int] = ..., tenants: _Optional[_Iterable[_Union[TenantUsage, _Mapping]]] = ..., scope: _Optional[str] = ...) -> None: ...

class TenantUsage(_message.Message):
    __slots__ = ("tenant", "hot_bytes", "warm_bytes", "cold_bytes", "records", "hot_limit", "warm_limit", "cold_limit", "records_limit", "hot_items", "warm_items", "cold_items")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    HOT_BYTES_FIELD_NUMBER: _ClassVar[int]
    WARM_BYTES_FIELD_NUMBER: _ClassVar[int]
    COLD_BYTES_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    HOT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    WARM_LIMIT_FIELD_NUMBER: _ClassVar[int]
    COLD_LIMIT_FIELD_NUMBER: _ClassVar[int]
    RECORDS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    HOT_ITEMS_FIELD_NUMBER: _ClassVar[int]
    WARM_ITEMS_FIELD_NUMBER: _ClassVar[int]
    COLD_ITEMS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    hot_bytes: int
    warm_bytes: int
    cold_bytes: int
    records: int
    hot_limit: int
    warm_limit: int
    cold_limit: int
    records_limit: int
    hot_items: int
    warm_items: int
    cold_items: int
    def __init__(self, tenant: _Optional[str] = ..., hot_bytes: _Optional[int] = ..., warm_bytes: _Optional[int] = ..., cold_bytes: _Optional[int] = ..., records: _Optional[int] = ..., hot_limit: _Optional[int] = ..., warm_limit: _Optional[int] = ..., cold_limit: _Optional[int] = ..., records_limit: _Optional[int] = ..., hot_items: _Optional[int] = ..., warm_items: _Optional[int] = ..., cold_items: _Optional[int] = ...) -> None: ...

class OpenLocalRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class OpenLocalResponse(_message.Message):
    __slots__ = ("segment_path", "segment_size", "boot_id", "layout_version", "server_pid")
    SEGMENT_PATH_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_SIZE_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVER_PID_FIELD_NUMBER: _ClassVar[int]
    segment_path: str
    segment_size: int
    boot_id: str
    layout_version: int
    server_pid: int
    def __init__(self, segment_path: _Optional[str] = ..., segment_size: _Optional[int] = ..., boot_id: _Optional[str] = ..., layout_version: _Optional[int] = ..., server_pid: _Optional[int] = ...) -> None: ...

class Location(_message.Message):
    __slots__ = ("status", "slot", "offset", "length", "header_len", "generation")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    HEADER_LEN_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    status: LocalStatus
    slot: int
    offset: int
    length: int
    header_len: int
    generation: int
    def __init__(self, status: _Optional[_Union[LocalStatus, str]] = ..., slot: _Optional[int] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ..., header_len: _Optional[int] = ..., generation: _Optional[int] = ...) -> None: ...

class LocalGetResponse(_message.Message):
    __slots__ = ("locations",)
    LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    locations: _containers.RepeatedCompositeFieldContainer[Location]
    def __init__(self, locations: _Optional[_Iterable[_Union[Location, _Mapping]]] = ...) -> None: ...

class LocalPutBeginRequest(_message.Message):
    __slots__ = ("namespace", "items", "lease_ms")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    items: _containers.RepeatedCompositeFieldContainer[PutItem]
    lease_ms: int
    def __init__(self, namespace: _Optional[str] = ..., items: _Optional[_Iterable[_Union[PutItem, _Mapping]]] = ..., lease_ms: _Optional[int] = ...) -> None: ...

class Reserved(_message.Message):
    __slots__ = ("ok", "token", "offset", "slot")
    OK_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    token: int
    offset: int
    slot: int
    def __init__(self, ok: _Optional[bool] = ..., token: _Optional[int] = ..., offset: _Optional[int] = ..., slot: _Optional[int] = ...) -> None: ...

class LocalPutBeginResponse(_message.Message):
    __slots__ = ("reserved",)
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    reserved: _containers.RepeatedCompositeFieldContainer[Reserved]
    def __init__(self, reserved: _Optional[_Iterable[_Union[Reserved, _Mapping]]] = ...) -> None: ...

class LocalPutCommitRequest(_message.Message):
    __slots__ = ("commit", "abort", "checksums")
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    ABORT_FIELD_NUMBER: _ClassVar[int]
    CHECKSUMS_FIELD_NUMBER: _ClassVar[int]
    commit: _containers.RepeatedScalarFieldContainer[int]
    abort: _containers.RepeatedScalarFieldContainer[int]
    checksums: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, commit: _Optional[_Iterable[int]] = ..., abort: _Optional[_Iterable[int]] = ..., checksums: _Optional[_Iterable[int]] = ...) -> None: ...

class LocalPutCommitResponse(_message.Message):
    __slots__ = ("committed",)
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    committed: int
    def __init__(self, committed: _Optional[int] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("tiers",)
    TIERS_FIELD_NUMBER: _ClassVar[int]
    tiers: _containers.RepeatedScalarFieldContainer[Tier]
    def __init__(self, tiers: _Optional[_Iterable[_Union[Tier, str]]] = ...) -> None: ...

class PrefetchRequest(_message.Message):
    __slots__ = ("namespace", "keys", "mode", "timeout_ms", "hint", "prefix")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    mode: PrefetchMode
    timeout_ms: int
    hint: bool
    prefix: bytes
    def __init__(self, namespace: _Optional[str] = ..., keys: _Optional[_Iterable[bytes]] = ..., mode: _Optional[_Union[PrefetchMode, str]] = ..., timeout_ms: _Optional[int] = ..., hint: _Optional[bool] = ..., prefix: _Optional[bytes] = ...) -> None: ...

class PrefetchResponse(_message.Message):
    __slots__ = ("in_hot", "done")
    IN_HOT_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    in_hot: int
    done: bool
    def __init__(self, in_hot: _Optional[int] = ..., done: _Optional[bool] = ...) -> None: ...

class PinRequest(_message.Message):
    __slots__ = ("namespace", "keys", "unpin")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    UNPIN_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    unpin: bool
    def __init__(self, namespace: _Optional[str] = ..., keys: _Optional[_Iterable[bytes]] = ..., unpin: _Optional[bool] = ...) -> None: ...

class PinResponse(_message.Message):
    __slots__ = ("changed",)
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    changed: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, changed: _Optional[_Iterable[bool]] = ...) -> None: ...

class DeleteNamespaceRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteNamespaceResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: int
    def __init__(self, removed: _Optional[int] = ...) -> None: ...

class MemoryRecord(_message.Message):
    __slots__ = ("namespace", "key", "value_json", "text", "metadata_json", "tags", "embedding", "created_at", "updated_at", "ttl", "expires_at", "valid_from", "valid_to", "version", "deleted", "score")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    VALID_FROM_FIELD_NUMBER: _ClassVar[int]
    VALID_TO_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    namespace: _containers.RepeatedScalarFieldContainer[str]
    key: str
    value_json: str
    text: str
    metadata_json: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    embedding: _containers.RepeatedScalarFieldContainer[float]
    created_at: float
    updated_at: float
    ttl: float
    expires_at: float
    valid_from: float
    valid_to: float
    version: int
    deleted: bool
    score: float
    def __init__(self, namespace: _Optional[_Iterable[str]] = ..., key: _Optional[str] = ..., value_json: _Optional[str] = ..., text: _Optional[str] = ..., metadata_json: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., embedding: _Optional[_Iterable[float]] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ..., ttl: _Optional[float] = ..., expires_at: _Optional[float] = ..., valid_from: _Optional[float] = ..., valid_to: _Optional[float] = ..., version: _Optional[int] = ..., deleted: _Optional[bool] = ..., score: _Optional[float] = ...) -> None: ...

class MemoryWrite(_message.Message):
    __slots__ = ("record", "if_version", "dedup")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    IF_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEDUP_FIELD_NUMBER: _ClassVar[int]
    record: MemoryRecord
    if_version: int
    dedup: bool
    def __init__(self, record: _Optional[_Union[MemoryRecord, _Mapping]] = ..., if_version: _Optional[int] = ..., dedup: _Optional[bool] = ...) -> None: ...

class MemoryPutRequest(_message.Message):
    __slots__ = ("writes",)
    WRITES_FIELD_NUMBER: _ClassVar[int]
    writes: _containers.RepeatedCompositeFieldContainer[MemoryWrite]
    def __init__(self, writes: _Optional[_Iterable[_Union[MemoryWrite, _Mapping]]] = ...) -> None: ...

class MemoryPutResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, versions: _Optional[_Iterable[int]] = ...) -> None: ...

class MemoryKey(_message.Message):
    __slots__ = ("namespace", "key")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    namespace: _containers.RepeatedScalarFieldContainer[str]
    key: str
    def __init__(self, namespace: _Optional[_Iterable[str]] = ..., key: _Optional[str] = ...) -> None: ...

class MemoryGetRequest(_message.Message):
    __slots__ = ("keys", "no_refresh")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    NO_REFRESH_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[MemoryKey]
    no_refresh: bool
    def __init__(self, keys: _Optional[_Iterable[_Union[MemoryKey, _Mapping]]] = ..., no_refresh: _Optional[bool] = ...) -> None: ...

class MemoryGetEntry(_message.Message):
    __slots__ = ("found", "record")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    found: bool
    record: MemoryRecord
    def __init__(self, found: _Optional[bool] = ..., record: _Optional[_Union[MemoryRecord, _Mapping]] = ...) -> None: ...

class MemoryGetResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[MemoryGetEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[MemoryGetEntry, _Mapping]]] = ...) -> None: ...

class MemoryDeleteRequest(_message.Message):
    __slots__ = ("keys", "hard")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    HARD_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[MemoryKey]
    hard: bool
    def __init__(self, keys: _Optional[_Iterable[_Union[MemoryKey, _Mapping]]] = ..., hard: _Optional[bool] = ...) -> None: ...

class MemoryDeleteResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, deleted: _Optional[_Iterable[bool]] = ...) -> None: ...

class MemoryListRequest(_message.Message):
    __slots__ = ("namespace_prefix", "cursor", "limit")
    NAMESPACE_PREFIX_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    namespace_prefix: _containers.RepeatedScalarFieldContainer[str]
    cursor: str
    limit: int
    def __init__(self, namespace_prefix: _Optional[_Iterable[str]] = ..., cursor: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class MemoryListResponse(_message.Message):
    __slots__ = ("records", "next_cursor")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[MemoryRecord]
    next_cursor: str
    def __init__(self, records: _Optional[_Iterable[_Union[MemoryRecord, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class MemoryListNamespacesRequest(_message.Message):
    __slots__ = ("prefix", "suffix", "max_depth")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    SUFFIX_FIELD_NUMBER: _ClassVar[int]
    MAX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    prefix: _containers.RepeatedScalarFieldContainer[str]
    suffix: _containers.RepeatedScalarFieldContainer[str]
    max_depth: int
    def __init__(self, prefix: _Optional[_Iterable[str]] = ..., suffix: _Optional[_Iterable[str]] = ..., max_depth: _Optional[int] = ...) -> None: ...

class MemoryNamespace(_message.Message):
    __slots__ = ("parts",)
    PARTS_FIELD_NUMBER: _ClassVar[int]
    parts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, parts: _Optional[_Iterable[str]] = ...) -> None: ...

class MemoryListNamespacesResponse(_message.Message):
    __slots__ = ("namespaces",)
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    namespaces: _containers.RepeatedCompositeFieldContainer[MemoryNamespace]
    def __init__(self, namespaces: _Optional[_Iterable[_Union[MemoryNamespace, _Mapping]]] = ...) -> None: ...

class MemoryHistoryRequest(_message.Message):
    __slots__ = ("namespace", "key", "after_version")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    AFTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    namespace: _containers.RepeatedScalarFieldContainer[str]
    key: str
    after_version: int
    def __init__(self, namespace: _Optional[_Iterable[str]] = ..., key: _Optional[str] = ..., after_version: _Optional[int] = ...) -> None: ...

class MemoryHistoryResponse(_message.Message):
    __slots__ = ("versions", "next_version")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_VERSION_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[MemoryRecord]
    next_version: int
    def __init__(self, versions: _Optional[_Iterable[_Union[MemoryRecord, _Mapping]]] = ..., next_version: _Optional[int] = ...) -> None: ...

class MemoryRevertRequest(_message.Message):
    __slots__ = ("key", "version")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    key: MemoryKey
    version: int
    def __init__(self, key: _Optional[_Union[MemoryKey, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class MemorySearchRequest(_message.Message):
    __slots__ = ("namespace_prefix", "vector", "query", "filter_json", "top_k", "as_of", "cursor", "alpha", "semantic")
    NAMESPACE_PREFIX_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    FILTER_JSON_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    SEMANTIC_FIELD_NUMBER: _ClassVar[int]
    namespace_prefix: _containers.RepeatedScalarFieldContainer[str]
    vector: _containers.RepeatedScalarFieldContainer[float]
    query: str
    filter_json: str
    top_k: int
    as_of: float
    cursor: int
    alpha: float
    semantic: bool
    def __init__(self, namespace_prefix: _Optional[_Iterable[str]] = ..., vector: _Optional[_Iterable[float]] = ..., query: _Optional[str] = ..., filter_json: _Optional[str] = ..., top_k: _Optional[int] = ..., as_of: _Optional[float] = ..., cursor: _Optional[int] = ..., alpha: _Optional[float] = ..., semantic: _Optional[bool] = ...) -> None: ...

class MemorySearchResponse(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[MemoryRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[MemoryRecord, _Mapping]]] = ...) -> None: ...

class OpenSessionRequest(_message.Message):
    __slots__ = ("session_id", "namespace", "hint_queries", "recent", "kv_namespace", "kv_keys")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    HINT_QUERIES_FIELD_NUMBER: _ClassVar[int]
    RECENT_FIELD_NUMBER: _ClassVar[int]
    KV_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KV_KEYS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    namespace: _containers.RepeatedScalarFieldContainer[str]
    hint_queries: _containers.RepeatedScalarFieldContainer[str]
    recent: int
    kv_namespace: str
    kv_keys: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, session_id: _Optional[str] = ..., namespace: _Optional[_Iterable[str]] = ..., hint_queries: _Optional[_Iterable[str]] = ..., recent: _Optional[int] = ..., kv_namespace: _Optional[str] = ..., kv_keys: _Optional[_Iterable[bytes]] = ...) -> None: ...

class CloseSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class SessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class KVDependencyRequest(_message.Message):
    __slots__ = ("kv_namespace", "kv_keys", "records", "versions")
    KV_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KV_KEYS_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    kv_namespace: str
    kv_keys: _containers.RepeatedScalarFieldContainer[bytes]
    records: _containers.RepeatedCompositeFieldContainer[MemoryKey]
    versions: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, kv_namespace: _Optional[str] = ..., kv_keys: _Optional[_Iterable[bytes]] = ..., records: _Optional[_Iterable[_Union[MemoryKey, _Mapping]]] = ..., versions: _Optional[_Iterable[int]] = ...) -> None: ...

class OpenDataRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class OpenDataResponse(_message.Message):
    __slots__ = ("ticket", "ticket_ttl_ms", "tcp_port", "tcp_host", "tls", "unix_path", "boot_id", "max_frame_data", "max_frame_meta", "max_value")
    TICKET_FIELD_NUMBER: _ClassVar[int]
    TICKET_TTL_MS_FIELD_NUMBER: _ClassVar[int]
    TCP_PORT_FIELD_NUMBER: _ClassVar[int]
    TCP_HOST_FIELD_NUMBER: _ClassVar[int]
    TLS_FIELD_NUMBER: _ClassVar[int]
    UNIX_PATH_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_DATA_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_META_FIELD_NUMBER: _ClassVar[int]
    MAX_VALUE_FIELD_NUMBER: _ClassVar[int]
    ticket: bytes
    ticket_ttl_ms: int
    tcp_port: int
    tcp_host: str
    tls: bool
    unix_path: str
    boot_id: str
    max_frame_data: int
    max_frame_meta: int
    max_value: int
    def __init__(self, ticket: _Optional[bytes] = ..., ticket_ttl_ms: _Optional[int] = ..., tcp_port: _Optional[int] = ..., tcp_host: _Optional[str] = ..., tls: _Optional[bool] = ..., unix_path: _Optional[str] = ..., boot_id: _Optional[str] = ..., max_frame_data: _Optional[int] = ..., max_frame_meta: _Optional[int] = ..., max_value: _Optional[int] = ...) -> None: ...

class DataHello(_message.Message):
    __slots__ = ("ticket",)
    TICKET_FIELD_NUMBER: _ClassVar[int]
    ticket: bytes
    def __init__(self, ticket: _Optional[bytes] = ...) -> None: ...

class DataGet(_message.Message):
    __slots__ = ("namespace", "keys", "no_promote")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    NO_PROMOTE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    no_promote: bool
    def __init__(self, namespace: _Optional[str] = ..., keys: _Optional[_Iterable[bytes]] = ..., no_promote: _Optional[bool] = ...) -> None: ...

class DataPutItem(_message.Message):
    __slots__ = ("key", "size", "array", "parent")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ARRAY_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    size: int
    array: ArrayInfo
    parent: bytes
    def __init__(self, key: _Optional[bytes] = ..., size: _Optional[int] = ..., array: _Optional[_Union[ArrayInfo, _Mapping]] = ..., parent: _Optional[bytes] = ...) -> None: ...

class DataPut(_message.Message):
    __slots__ = ("namespace", "items")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    items: _containers.RepeatedCompositeFieldContainer[DataPutItem]
    def __init__(self, namespace: _Optional[str] = ..., items: _Optional[_Iterable[_Union[DataPutItem, _Mapping]]] = ...) -> None: ...

class DataItem(_message.Message):
    __slots__ = ("found", "size", "array", "deferred")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ARRAY_FIELD_NUMBER: _ClassVar[int]
    DEFERRED_FIELD_NUMBER: _ClassVar[int]
    found: bool
    size: int
    array: ArrayInfo
    deferred: bool
    def __init__(self, found: _Optional[bool] = ..., size: _Optional[int] = ..., array: _Optional[_Union[ArrayInfo, _Mapping]] = ..., deferred: _Optional[bool] = ...) -> None: ...

class DataResult(_message.Message):
    __slots__ = ("code", "message", "items", "stored")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    items: _containers.RepeatedCompositeFieldContainer[DataItem]
    stored: int
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., items: _Optional[_Iterable[_Union[DataItem, _Mapping]]] = ..., stored: _Optional[int] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("namespace", "key", "identity")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    key: bytes
    identity: str
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[bytes] = ..., identity: _Optional[str] = ...) -> None: ...

class IdentityDifference(_message.Message):
    __slots__ = ("field", "asked", "stored")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    ASKED_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    field: str
    asked: str
    stored: str
    def __init__(self, field: _Optional[str] = ..., asked: _Optional[str] = ..., stored: _Optional[str] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("state", "tier", "policy", "seconds_ago", "detail", "nearest_namespace", "differences", "message")
    STATE_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SECONDS_AGO_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    NEAREST_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCES_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    state: str
    tier: str
    policy: str
    seconds_ago: float
    detail: str
    nearest_namespace: str
    differences: _containers.RepeatedCompositeFieldContainer[IdentityDifference]
    message: str
    def __init__(self, state: _Optional[str] = ..., tier: _Optional[str] = ..., policy: _Optional[str] = ..., seconds_ago: _Optional[float] = ..., detail: _Optional[str] = ..., nearest_namespace: _Optional[str] = ..., differences: _Optional[_Iterable[_Union[IdentityDifference, _Mapping]]] = ..., message: _Optional[str] = ...) -> None: ...
