"""The token rule, in-process (no socket: the token-required configuration of a service bound
to a public address, without binding one), and the settings' refusals."""

from __future__ import annotations

import warnings

import pytest

from service.app import create_app
from service.errors import ServiceConfigError
from service.runtime import Service
from service.settings import ServiceSettings, is_loopback, token_from_env

with warnings.catch_warnings():  # "use httpx2": the test client still works with httpx
    warnings.filterwarnings("ignore", message="Using `httpx`", category=UserWarning)
    from fastapi.testclient import TestClient

TOKEN = "s3cret-token"
GOOD = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(params=[True, False], ids=["metrics-public", "metrics-private"])
def public_service(request):
    """A service configured as for ``--host 0.0.0.0 --token ...`` (no model loaded)."""
    settings = ServiceSettings(host="0.0.0.0", token=TOKEN, db=":memory:",
                               metrics_public=request.param)
    settings.check()
    service = Service(settings)
    with TestClient(create_app(service), base_url="http://127.0.0.1") as client:
        yield client, settings
    service.close()


REQUESTS = [("GET", "/v1/health"), ("GET", "/v1/memory"), ("GET", "/v1/memory/snapshot"),
            ("POST", "/v1/synthesize"), ("POST", "/v1/cleanup"), ("GET", "/openapi.json"),
            ("GET", "/docs"), ("GET", "/no/such/path")]


def test_every_request_but_metrics_needs_the_token(public_service) -> None:
    client, settings = public_service
    for method, path in REQUESTS:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                        {"Authorization": f"Basic {TOKEN}"}):
            response = client.request(method, path, headers=headers, json={"text": "Hi."})
            assert response.status_code == 401, (method, path, headers)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert "token" in response.json()["error"]
    metrics = client.get("/metrics")
    assert metrics.status_code == (200 if settings.metrics_public else 401)
    assert client.get("/metrics", headers=GOOD).status_code == 200


def test_the_token_opens_every_endpoint(public_service) -> None:
    client, _ = public_service
    assert client.get("/v1/health", headers=GOOD).json()["loaded"] is False
    assert client.get("/v1/memory", headers=GOOD).status_code == 200
    assert client.get("/v1/memory/snapshot", headers=GOOD).status_code == 409
    assert client.post("/v1/synthesize", headers=GOOD, json={"text": ""}).status_code == 422
    assert client.post("/v1/cleanup", headers=GOOD, json={"level": "light"}).status_code == 200
    for scheme in ("bearer", "BEARER", "Bearer "):  # RFC 9110: the scheme is case-insensitive
        answer = client.get("/v1/health", headers={"Authorization": f"{scheme} {TOKEN}"})
        assert answer.status_code == 200, scheme
    spec = client.get("/openapi.json", headers=GOOD).json()
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert spec["security"] == [{"bearer": []}]


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("LOCALHOST", True), ("0.0.0.0", False), ("::", False),
    ("192.168.1.20", False), ("10.0.0.1", False), ("example.com", False), ("", False),
])
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(("settings", "words"), [
    (ServiceSettings(host="0.0.0.0"), "without a token"),
    (ServiceSettings(host="192.168.1.20", token=None), "without a token"),
    (ServiceSettings(host="0.0.0.0", token="  "), "token is empty"),
    (ServiceSettings(port=70000), "port"),
    (ServiceSettings(max_text_chars=0), "--max-text-chars"),
    (ServiceSettings(max_text_chars=10**6), "--max-text-chars"),
    (ServiceSettings(max_body_bytes=0), "max_body_bytes"),
    (ServiceSettings(memory_history=-1), "--memory-history"),
])
def test_settings_refused(settings: ServiceSettings, words: str) -> None:
    with pytest.raises(ServiceConfigError, match=words):
        settings.check()


def test_settings_accepted() -> None:
    ServiceSettings().check()
    ServiceSettings(host="0.0.0.0", token="t").check()
    ServiceSettings(host="127.0.0.2").check()


def test_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLMTTS_TOKEN", "from-env")
    assert token_from_env(None) == "from-env"
    assert token_from_env("given") == "given"
    monkeypatch.setenv("GLMTTS_TOKEN", "")
    assert token_from_env(None) is None


def test_cli_refuses_a_public_address_before_starting(monkeypatch, capsys, tmp_path) -> None:
    from glmtts.cli import main

    monkeypatch.delenv("GLMTTS_TOKEN", raising=False)
    code = main(["serve", "--host", "0.0.0.0", "--port", "9", "--cpu",
                 "--db", str(tmp_path / "never.sqlite3")])
    assert code == 1
    assert "refusing to listen on 0.0.0.0" in capsys.readouterr().err
    assert not (tmp_path / "never.sqlite3").exists()
