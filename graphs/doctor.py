"""`synthgraph doctor`: is this installation able to make data?

Each check returns a dict with at least `ok`; the LLM check is the one that
decides the exit code, because nothing runs without a usable model.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from synthgraph.agents.local_model import (
    EMBEDDED_MODEL,
    LocalModelError,
    file_sha256,
    local_endpoint,
    resolve_model_path,
    verified_sha256,
)
from synthgraph.tools.settings import ROLES, Settings, get_settings


def check_config(settings: Settings) -> dict[str, Any]:
    return {
        "ok": True,
        "endpoint": settings.base_url or "embedded",
        "api_key_set": settings.api_key is not None,
        "models": {role: settings.model_for(role) for role in ROLES}
        if not settings.embedded
        else "embedded",
        "structured_method": settings.structured_method,
        "max_concurrency": settings.max_concurrency,
        "requests_per_minute": settings.requests_per_minute,
        "timeout": settings.timeout,
        "max_retries": settings.max_retries,
        "data_dir": str(settings.data_dir.resolve()),
        "cache_dir": str(settings.cache_dir),
    }


def check_llm(settings: Settings) -> dict[str, Any]:
    result: dict[str, Any] = {"ok": False, "embedded": settings.embedded, "model_sha256": None}
    try:
        if settings.embedded:
            path = resolve_model_path(settings)
            result["model_path"] = str(path)
            result["model_sha256"] = verified_sha256(path) or file_sha256(path)
            result["model_verified"] = settings.local_model is None and (
                result["model_sha256"] == EMBEDDED_MODEL.sha256
            )
            started = time.monotonic()
            endpoint = local_endpoint(path, settings)
            result.update(base_url=endpoint.base_url, model=endpoint.model)
            result["startup_seconds"] = round(time.monotonic() - started, 2)
            result["server"] = server_report(endpoint.server)
            response = httpx.get(f"{endpoint.base_url}/models", timeout=settings.timeout)
        else:
            result.update(base_url=settings.base_url, model=settings.model_for("generator"))
            headers = (
                {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"}
                if settings.api_key
                else {}
            )
            response = httpx.get(
                f"{settings.base_url}/models", headers=headers, timeout=settings.timeout
            )
        result["status"] = response.status_code
        result["ok"] = response.status_code == 200
        if not result["ok"]:
            result["error"] = f"GET /models answered {response.status_code}"
    except (LocalModelError, httpx.HTTPError, OSError) as error:
        result["error"] = str(error)
    return result


def server_report(entry: dict[str, Any]) -> dict[str, Any]:
    """What serves the embedded model: llama-server's binary, build, slots and model."""
    return {
        "kind": "llama-server",
        "binary": entry["binary"],
        "version": entry["version"],
        # None: a binary given by SYNTHGRAPH_LLAMA_SERVER, built elsewhere.
        "build_options": entry["build_options"],
        "slots": entry["slots"],
        "ctx_per_slot": entry["ctx_per_slot"],
        "threads": entry["threads"],
        "pid": entry["pid"],
        "model_sha256": entry["model_sha256"],
        "log": entry["log"],
    }


def check_embeddings() -> dict[str, Any]:
    try:
        from synthgraph.tools.embeddings import get_embeddings

        embeddings = get_embeddings()
        vector = embeddings.encode(["synthgraph doctor"])[0]
        return {
            "ok": True,
            "model_path": str(embeddings.model_path),
            "dimension": int(vector.shape[0]),
        }
    except Exception as error:  # a report, not a crash: every failure is listed
        return {"ok": False, "error": f"{type(error).__name__}: {error}"}


def check_chroma(settings: Settings) -> dict[str, Any]:
    try:
        from synthgraph.tools.embeddings import get_chroma_client

        client = get_chroma_client(settings)
        client.heartbeat()
        where = settings.chroma_url or str(settings.chroma_dir.resolve())
        return {
            "ok": True,
            "mode": "http" if settings.chroma_url else "persistent",
            "location": where,
        }
    except Exception as error:
        return {"ok": False, "error": f"{type(error).__name__}: {error}"}


def check_torch() -> dict[str, Any]:
    try:
        import torch

        return {
            "ok": True,
            "version": torch.__version__,
            "threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(),
        }
    except Exception as error:
        return {"ok": False, "error": f"{type(error).__name__}: {error}"}


def run_checks(settings: Settings | None = None) -> dict[str, Any]:
    settings = settings or get_settings()
    return {
        "config": check_config(settings),
        "llm": check_llm(settings),
        "embeddings": check_embeddings(),
        "chroma": check_chroma(settings),
        "torch": check_torch(),
    }
