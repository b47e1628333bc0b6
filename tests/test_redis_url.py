"""SHOAL_REDIS_URL parsing: every deployment form, and a clear refusal of anything it cannot honour."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shoal.core.redis_url import RedisTarget, parse_redis_url
from shoal.core.settings import RedisSettings


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", RedisTarget("single", (("127.0.0.1", 6379),))),
        ("redis://redis.example", RedisTarget("single", (("redis.example", 6379),))),
        ("rediss://r.example:6380/3", RedisTarget("single", (("r.example", 6380),), tls=True, db=3)),
        ("redis://r:1/?db=2", RedisTarget("single", (("r", 1),), db=2)),
        (
            "redis://shoal:p%40ss%3Aw%2Frd@r:7/1",
            RedisTarget("single", (("r", 7),), db=1, username="shoal", password="p@ss:w/rd"),
        ),
        ("redis://:secret@r", RedisTarget("single", (("r", 6379),), password="secret")),
        ("redis://[::1]:7000", RedisTarget("single", (("::1", 7000),))),
        ("unix:///run/redis.sock?db=4", RedisTarget("single", (), db=4, unix_path="/run/redis.sock")),
        (
            "redis+cluster://a:7000,b:7001,[::1]:7002",
            RedisTarget("cluster", (("a", 7000), ("b", 7001), ("::1", 7002))),
        ),
        (
            "rediss+cluster://u:p@a:7000/0",
            RedisTarget("cluster", (("a", 7000),), tls=True, username="u", password="p"),
        ),
        (
            "redis+sentinel://s1,s2:26380/mymaster",
            RedisTarget("sentinel", (("s1", 26379), ("s2", 26380)), service="mymaster"),
        ),
        (
            "rediss+sentinel://:pw@s1:26379/mymaster/2",
            RedisTarget("sentinel", (("s1", 26379),), tls=True, db=2, service="mymaster", password="pw"),
        ),
    ],
)
def test_every_deployment_form_parses(url: str, expected: RedisTarget) -> None:
    assert parse_redis_url(url) == expected


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://r:6379", "must start with one of"),
        ("redis+clusters://a:1", "must start with one of"),
        ("redis://a:1,b:2", "names one server"),
        ("redis://r:0", "bad port"),
        ("redis://r:65536", "bad port"),
        ("redis://r:\uff16\uff13\uff17\uff19", "ASCII"),  # fullwidth digits
        ("redis://r:6379/x", "bad Redis database"),
        ("redis://r/1?db=2", "once"),
        ("redis://r?ssl_cert_reqs=none", "unknown Redis URL parameter(s) ssl_cert_reqs"),
        ("redis+cluster://a:1/2", "only database 0"),
        ("redis+sentinel://s1:26379", "must name the primary"),
        ("redis+sentinel://s1:26379/", "must name the primary"),
        ("redis://", "names no host"),
        ("redis+cluster://a:1,,b:2", "empty host"),
        ("redis://r:6379/0 ", "without spaces"),
        ("unix://host/run/redis.sock", "no host"),
        ("redis://r#frag", "fragment"),
    ],
)
def test_bad_urls_are_refused_with_a_reason(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says.replace("(", r"\(").replace(")", r"\)")):
        parse_redis_url(url)


def test_describe_hides_the_password() -> None:
    target = parse_redis_url("rediss+sentinel://shoal:hunter2@s1:26379,s2:26379/mymaster/1")
    assert target.describe() == "rediss+sentinel://shoal:***@s1:26379,s2:26379/mymaster/1"
    assert "hunter2" not in target.describe()


def test_the_settings_refuse_a_bad_url_and_a_password_given_twice() -> None:
    with pytest.raises(ValidationError, match="names one server"):
        RedisSettings(redis_url="redis://a:1,b:2")
    with pytest.raises(ValidationError, match="different Redis passwords"):
        RedisSettings(redis_url="redis://:pw@r:6379", redis_password="pw2")
    assert RedisSettings(redis_url="redis://:pw@r:6379", redis_password="pw").redis_target.password == "pw"
    with pytest.raises(ValidationError, match="go together"):
        RedisSettings(redis_tls_cert_file="/tls/client.crt")


def test_credentials_from_the_settings_fill_in_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_REDIS_URL", "redis+cluster://a:7000,b:7001")
    monkeypatch.setenv("SHOAL_REDIS_USERNAME", "shoal-worker")
    monkeypatch.setenv("SHOAL_REDIS_PASSWORD", "with@and:and/")
    target = RedisSettings().redis_target
    assert (target.mode, target.username, target.password) == ("cluster", "shoal-worker", "with@and:and/")
