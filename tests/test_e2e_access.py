"""Reachable on purpose and lock-out-proof: an embedded server on 0.0.0.0 with auth on, its own.

It has to be its own: the lock-out test bans 127.0.0.1 on it, which would stop every other test
sharing a server.
"""

from __future__ import annotations

import json

import pytest
import requests
from conftest import DEMO, free_port

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def open_host(home):
    """`xrerank server start --host 0.0.0.0`, then the demo deployed on it."""
    from conftest import Cli

    run = Cli()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XRERANK_HOME", str(home))
        port = free_port()
        result, started = run.json("server", "start", "--host", "0.0.0.0", "--port", port, "--wait", "240")
        assert result.exit_code == 0, result.stderr
        deployed = run("deploy", DEMO, "--wait", "400")
        assert deployed.exit_code == 0, deployed.stderr
        try:
            yield {
                **started,
                "port": port,
                "credentials": json.loads((home / "server" / "credentials.json").read_text()),
            }
        finally:
            assert run("server", "stop").exit_code == 0


def test_listening_beyond_loopback_without_auth_is_refused(run, in_home):
    result = run("server", "start", "--host", "0.0.0.0", "--port", free_port(), "--no-auth")
    assert result.exit_code == 2 and "--no-auth would let anyone" in result.stderr
    assert run("server", "start", "--host", "not-an-address", "--port", free_port()).exit_code == 2


def test_the_printed_url_is_the_one_other_hosts_use_and_it_answers(open_host):
    app_endpoint = open_host["app_endpoint"]
    assert not app_endpoint.startswith(("http://127.", "http://0.0.0.0")), app_endpoint
    assert requests.get(f"{app_endpoint}/v1/cluster/auth", timeout=5).json() == {"auth": True}
    # and through another loopback address, as a container on this host's network would
    assert requests.get(f"http://127.0.0.2:{open_host['port']}/v1/cluster/auth", timeout=5).ok


def test_the_embedded_servers_own_key_is_one_explicit_call_away(in_home, open_host, monkeypatch):
    from xrerank.client import Reranker, RerankError
    from xrerank.integrations import client_for
    from xrerank.xinference.local import embedded_api_key

    endpoint = f"http://127.0.0.1:{open_host['port']}"
    key = embedded_api_key(endpoint)
    assert key and key.startswith("xf-")
    with Reranker(endpoint, "demo-reranker", api_key=key) as client:
        assert len(client.rerank("What is AI?", ["AI is ...", "Apples are ..."])) == 2
    # the client alone never reads the embedded server's files: no key, no auth
    with pytest.raises(RerankError, match="api_key"), Reranker(endpoint, "demo-reranker", retry_for=0) as bare:
        bare.rerank("q", ["a"])
    monkeypatch.setenv("XRERANK_API_KEY", key)  # ... but it does take the key connect prints
    with Reranker(endpoint, "demo-reranker") as from_env:
        assert len(from_env.rerank("q", ["a", "b"])) == 2
    monkeypatch.delenv("XRERANK_API_KEY")
    with client_for(endpoint, "demo-reranker", None, 30.0) as integration:  # the integrations look it up
        assert len(integration.rerank("q", ["a"])) == 1


def _wrong_key_requests(port: int, count: int) -> list[int]:
    """An app with a stale key, from 127.0.0.1, as every local program shares it."""
    session = requests.Session()
    return [
        session.post(f"http://127.0.0.1:{port}/v1/rerank", json={"model": "demo-reranker", "query": "q",
                     "documents": ["a"]}, headers={"Authorization": "Bearer xf-stale-key-from-an-old-config"},
                     timeout=10).status_code
        for _ in range(count)
    ]  # fmt: skip


def _rerank_status(port: int, key: str) -> int:
    body = {"model": "demo-reranker", "query": "q", "documents": ["a", "b"]}
    headers = {"Authorization": f"Bearer {key}"}
    return requests.post(f"http://127.0.0.1:{port}/v1/rerank", json=body, headers=headers, timeout=30).status_code


def test_ten_stale_keys_no_longer_lock_the_machine_out(open_host):
    """Xinference's default bans the address after 10 failures for an hour; xrerank's servers do not."""
    assert set(_wrong_key_requests(open_host["port"], 10)) == {401}
    assert _rerank_status(open_host["port"], open_host["credentials"]["api_key"]) == 200


def test_a_flood_of_wrong_keys_bans_the_address_and_xrerank_still_works_and_lifts_it(run, in_home, open_host):
    port, key = open_host["port"], open_host["credentials"]["api_key"]
    codes = _wrong_key_requests(port, 110)  # brute-force protection stays: 100 failures in a minute
    assert codes[0] == 401 and codes[-1] == 429
    assert _rerank_status(port, key) == 429  # a correctly keyed app on the same address is banned too
    from xrerank.client import Reranker, RerankError

    with pytest.raises(RerankError, match="banned") as raised:
        Reranker(f"http://127.0.0.1:{port}", "demo-reranker", api_key=key, retry_for=0).rerank("q", ["a"])
    assert raised.value.exit_code == 3 and "xrerank server unban" in str(raised.value)
    # xrerank's own commands reach the server from 127.0.0.2, which the flood did not touch
    result, status = run.json("status", "--model-uid", "demo-reranker")
    assert result.exit_code == 0, result.stderr
    assert run("rerank", "--model-uid", "demo-reranker", "q", "a", "b").exit_code == 0
    result, lifted = run.json("server", "unban")
    assert result.exit_code == 0 and lifted["unbanned"] >= 1
    assert _rerank_status(port, key) == 200  # at once, not in an hour


def test_a_ban_is_one_line_that_says_what_it_is_when_it_ends_and_the_way_out(run, in_home, open_host, monkeypatch):
    port = open_host["port"]
    _wrong_key_requests(port, 110)
    monkeypatch.setenv("XRERANK_SOURCE_ADDRESS", "none")  # as a program without a second address of its own
    try:
        result = run("status")
    finally:
        monkeypatch.delenv("XRERANK_SOURCE_ADDRESS")
        run("server", "unban")
    assert result.exit_code == 3 and result.stderr.count("\n") == 1
    assert "banned" in result.stderr and "ends on its own" in result.stderr and "xrerank server unban" in result.stderr
