"""What the election process needs to campaign: who it is, which election, and the settings.

The scheduler hands it over on the process's stdin (never its command line, which every local
user can read with `ps`: the Redis password is in it). Settings travel as their field values
and are rebuilt with `model_construct`, so the election process reads nothing of its own
environment: it campaigns exactly as the scheduler was configured, even when the scheduler was
given settings that differ from the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

import orjson
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from shoal.core.kube_settings import KubeSettings
from shoal.core.settings import LogSettings, RedisSettings

ElectionKind = Literal["redis", "kubernetes"]
_Model = TypeVar("_Model", bound=BaseSettings)


@dataclass(frozen=True)
class ElectionSpec:
    identity: str
    kind: ElectionKind
    lock_s: float
    """Life of the Redis lock (SHOAL_LEADER_LOCK_S); the Lease's timings are in `kube`."""
    redis: RedisSettings
    kube: KubeSettings
    log: LogSettings
    parent_silence_s: float = 30.0
    """How long the scheduler may go unheard before the election process steps down: past the
    stalls it should ride out (collections took seconds at load 15-20), short enough that a hung
    scheduler does not keep the lead for long."""

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "identity": self.identity,
                "kind": self.kind,
                "lock_s": self.lock_s,
                "redis": _dump(self.redis),
                "kube": _dump(self.kube),
                "log": _dump(self.log),
                "parent_silence_s": self.parent_silence_s,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes) -> ElectionSpec:
        data = orjson.loads(raw)
        kind = data["kind"]
        if kind not in ("redis", "kubernetes"):
            raise ValueError(f"unknown election kind {kind!r}")
        return cls(
            identity=str(data["identity"]),
            kind=kind,
            lock_s=float(data["lock_s"]),
            redis=_load(RedisSettings, data["redis"]),
            kube=_load(KubeSettings, data["kube"]),
            log=_load(LogSettings, data["log"]),
            parent_silence_s=float(data["parent_silence_s"]),
        )


def _dump(model: BaseSettings) -> dict[str, Any]:
    values: dict[str, Any] = {}
    secrets: list[str] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
            secrets.append(name)
        values[name] = value
    # Which fields were given matters: `KubeClient.from_settings` honours an explicit namespace only.
    return {"values": values, "secrets": secrets, "set": sorted(model.model_fields_set)}


def _load(cls: type[_Model], data: dict[str, Any]) -> _Model:
    secrets = set(data["secrets"])
    values = {
        name: SecretStr(value) if name in secrets and value is not None else value
        for name, value in data["values"].items()
    }
    return cast(_Model, cls.model_construct(_fields_set=set(data["set"]), **values))
