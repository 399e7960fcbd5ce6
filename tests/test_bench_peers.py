"""The bench's peers (bench/peers.py): a peer is served, measured over its OpenAI API and
compared; one that cannot be installed or started is skipped with one line, the bench goes on."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench import peers
from bench.generation import _against_peers
from bench.peers import Peer, run_peer

# A server speaking the two endpoints the bench uses, streaming one fixed reply word by word.
FAKE_SERVER = textwrap.dedent(
    """
    import json, sys
    from aiohttp import web

    async def models(request):
        return web.json_response({"object": "list", "data": [
            {"id": "fake", "object": "model", "created": 0, "owned_by": "me"}]})

    async def chat(request):
        body = await request.json()
        assert body["stream"] and body["temperature"] == 0
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for word in ["Reset ", "it ", "from ", "the ", "login ", "page."]:
            chunk = {"id": "1", "object": "chat.completion.chunk", "created": 0,
                     "model": "fake", "choices": [{"index": 0, "delta": {"content": word},
                     "finish_reason": None}]}
            await response.write(f"data: {json.dumps(chunk)}\\n\\n".encode())
        await response.write(b"data: [DONE]\\n\\n")
        return response

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
    """
)

CONVERSATIONS = [[{"role": "user", "content": f"Question {i}?"}] for i in range(4)]


@pytest.fixture(autouse=True)
def _peers_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers, "PEERS_DIR", tmp_path / "peers")


def test_a_served_peer_is_measured_at_each_n(tmp_path: Path) -> None:
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE_SERVER)
    peer = Peer(
        "fake",
        install=lambda _log: script,
        command=lambda path, port, n: [sys.executable, str(path), str(port)],
    )
    result = run_peer(peer, [1, 4], CONVERSATIONS, tmp_path)
    assert result is not None
    runs = result["runs"]
    assert set(runs) == {"1", "4"}
    assert runs["4"]["outputs"] == ["Reset it from the login page."] * 4
    # Tokens counted by the model's tokenizer over the returned text.
    assert runs["1"]["tokens"] * 4 == runs["4"]["tokens"] > 4
    assert runs["4"]["ttft_p95_s"] <= runs["4"]["total_p95_s"]


def test_a_peer_that_cannot_be_installed_is_skipped_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def install(log: Path) -> Path:
        raise subprocess.CalledProcessError(1, ["cmake"])

    peer = Peer("broken", install=install, command=lambda *_: ["true"])
    assert run_peer(peer, [1], CONVERSATIONS, tmp_path) is None
    lines = capsys.readouterr().out.rstrip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("  broken: skipped, it could not be installed")


def test_a_peer_that_exits_while_starting_gives_no_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    peer = Peer(
        "crashing",
        install=lambda _log: tmp_path,
        command=lambda *_: [sys.executable, "-c", "raise SystemExit(3)"],
    )
    assert run_peer(peer, [1, 8], CONVERSATIONS, tmp_path) is None
    out = capsys.readouterr().out
    assert "crashing N=[1]: failed (exited with status 3 while starting" in out
    assert "crashing N=[8]: failed" in out


def test_parley_is_compared_with_the_best_peer_at_each_n() -> None:
    def row(tok_per_s: float, ttft: float) -> dict[str, float]:
        return {"tok_per_s": tok_per_s, "ttft_p95_s": ttft}

    table = {
        "parley-int8": {"1": row(30, 0.2), "8": row(120, 1.0)},
        "llama-server-q4_1": {"1": row(40, 0.1), "8": row(60, 2.0)},
        "llama-server-q8_0": {"1": row(60, 0.3), "8": row(100, 3.0)},
        "vllm-cpu-fp32": {"8": row(80, 0.5)},
    }
    ratios = _against_peers(table, [1, 8])
    assert ratios["parley-int8/best-peer"] == {
        "1": {"ratio": 0.5, "peer": "llama-server-q8_0", "ttft_p95_s": 0.2, "peer_ttft_p95_s": 0.1},
        "8": {"ratio": 1.2, "peer": "llama-server-q8_0", "ttft_p95_s": 1.0, "peer_ttft_p95_s": 0.5},
    }
