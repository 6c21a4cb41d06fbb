"""The one settings object: environment variables, `.env`, defaults.

Every knob that is not per-run lives here. Per-run knobs travel in LangGraph's
runtime context (see `synthgraph.graphs.context`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

Role = Literal["generator", "judge", "weak", "strong"]
ROLES: tuple[Role, ...] = ("generator", "judge", "weak", "strong")
StructuredMethod = Literal["auto", "json_schema", "json_mode", "function_calling"]
Executor = Literal["thread", "async", "ray"]
"""How a job's inputs run: a thread pool, tasks on one event loop, or blocks on a Ray cluster."""


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "synthgraph"


class Settings(BaseSettings):
    """synthgraph configuration. Env prefix `SYNTHGRAPH_`; `OPENAI_*` honoured."""

    model_config = SettingsConfigDict(
        env_prefix="SYNTHGRAPH_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    # --- endpoint -------------------------------------------------------
    base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SYNTHGRAPH_BASE_URL", "OPENAI_BASE_URL", "base_url"),
        description="OpenAI-compatible endpoint. Unset: the embedded local model.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("SYNTHGRAPH_API_KEY", "OPENAI_API_KEY", "api_key"),
    )
    model: str = Field(default="gpt-4o-mini", description="Model for roles not set below.")
    generator_model: str | None = None
    judge_model: str | None = None
    weak_model: str | None = None
    strong_model: str | None = None
    # Separate endpoints per role are optional; unset means `base_url`.
    weak_base_url: str | None = None
    strong_base_url: str | None = None
    structured_method: StructuredMethod = Field(
        default="auto",
        description="auto: json_schema (remote endpoints and the embedded llama-server).",
    )

    # --- sampling and limits --------------------------------------------
    temperature: float = 0.7
    max_tokens: int = 512
    max_concurrency: int = 4
    requests_per_minute: float | None = None
    timeout: float = 120.0
    max_retries: int = 5
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    structured_retries: int = 2
    executor: Executor = Field(
        default="async",
        description="thread: a pool of threads; async: one event loop, for the jobs whose "
        "graphs have async nodes (others use threads); ray: blocks of inputs on a Ray cluster "
        "(`ray_address`), for jobs that support it (personas; others run async).",
    )
    ray_address: str | None = Field(
        default=None,
        description="A Ray cluster for `--executor ray` (e.g. ray://head:10001 or auto); "
        "unset: Ray starts on this machine.",
    )
    minhash_url: str | None = Field(
        default=None,
        description="A Redis URL for the dedup MinHash index, shared by processes and machines; "
        "unset: an .npz per namespace in data_dir.",
    )

    # --- cache, spending and caps ---------------------------------------
    cache: bool | None = Field(
        default=None,
        description="Reuse replies to identical requests; unset: on for remote endpoints, "
        "off for the embedded model.",
    )
    cache_url: str | None = Field(
        default=None, description="A Redis URL for the response cache; unset: SQLite in data_dir."
    )
    checkpoint_url: str | None = Field(
        default=None,
        description="A postgresql:// URL for LangGraph checkpoints, shared by runs; "
        "unset: checkpoint.sqlite in each run folder.",
    )
    prices_file: Path | None = Field(
        default=None,
        description='JSON {"model": {"input": USD, "output": USD}} per 1M tokens, over the defaults.',
    )
    max_cost: float | None = Field(default=None, ge=0, description="USD a run may spend.")
    max_total_tokens: int | None = Field(
        default=None, ge=0, description="Prompt plus completion tokens a run may spend."
    )
    batch_size: int = Field(
        default=256, ge=1, description="--batch: most requests in one batch (and inputs at once)."
    )
    batch_quiet_seconds: float = Field(
        default=0.5, gt=0, description="--batch: submit once no request came for this long."
    )
    batch_poll_seconds: float = Field(
        default=60.0, gt=0, description="--batch: the longest wait between two polls of a batch."
    )

    # --- embedded local model -------------------------------------------
    local_model: Path | None = Field(
        default=None, description="Any GGUF file; unset: the bundled Qwen2.5-Coder-0.5B."
    )
    strong_local_model: bool = Field(
        default=False,
        description="Embedded only: serve role `strong` from Qwen2.5-Coder-1.5B (the `local-strong` extra).",
    )
    local_host: str = "127.0.0.1"
    local_port: int | None = None
    local_ctx: int = Field(default=4096, description="Context per slot (tokens).")
    local_slots: int = Field(
        default=8, ge=1, description="Requests the embedded llama-server decodes at once."
    )
    local_threads: int | None = None
    llama_server: Path | None = Field(
        default=None, description="A llama-server binary; unset: built from source once."
    )
    local_startup_timeout: float = 180.0

    # --- storage ----------------------------------------------------------
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    data_dir: Path = Path("data")
    chroma_path: Path | None = None
    chroma_url: str | None = None
    workspace_dir: Path | None = Field(
        default=None, description="Root that agent tools may read and write; unset: data_dir."
    )
    embedding_model: Path | None = Field(
        default=None, description="A sentence-transformers folder; unset: bundled MiniLM."
    )

    @property
    def embedded(self) -> bool:
        """True when no endpoint is configured and the local model serves."""
        return self.base_url is None

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def workspace(self) -> Path:
        return self.workspace_dir or self.data_dir

    @property
    def cache_path(self) -> Path:
        return self.data_dir / "cache" / "responses.sqlite"

    @property
    def chroma_dir(self) -> Path:
        return self.chroma_path or (self.data_dir / "chroma")

    @property
    def api_key_value(self) -> str:
        """The key to send; endpoints without keys still want one in the header."""
        return self.api_key.get_secret_value() if self.api_key else "not-needed"

    def model_for(self, role: Role) -> str:
        return getattr(self, f"{role}_model") or self.model

    def base_url_for(self, role: Role) -> str | None:
        specific = {"weak": self.weak_base_url, "strong": self.strong_base_url}.get(role)
        return specific or self.base_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once. Tests call `get_settings.cache_clear()`."""
    return Settings()
