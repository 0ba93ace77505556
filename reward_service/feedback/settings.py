"""Everything ``reward-service feedback serve`` can be told, from one validated source.

Environment variables (prefix ``FEEDBACK_``) configure a deployment; flags of the same name
override them. A bad value stops the app before it binds, with the setting named.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class FeedbackSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FEEDBACK_", extra="ignore")

    db: str = Field(
        "feedback.db",
        description="SQLAlchemy URL of the labeling database; a plain path is a SQLite file.",
    )
    host: str = Field("127.0.0.1", description="Bind address; 0.0.0.0 inside a container.")
    port: int = Field(8100, ge=0, le=65535, description="Bind port.")
    reward_url: str | None = Field(
        None,
        description="Reward service URL: serve the tasks its model is least sure about first.",
    )
    reward_model: str | None = Field(
        None, description="Model the reward service scores with (default: its default model)."
    )
    reward_api_key_file: Path | None = Field(
        None, description="File holding a bearer key for the reward service, if it needs one."
    )
    rescore_seconds: float = Field(
        300.0,
        ge=0,
        description="How often to rescore open tasks when the reward service publishes a new "
        "model version or new tasks arrive (0: only at start-up).",
    )
    gold_every: int = Field(
        10, ge=0, description="Serve one unseen gold task every N tasks (0: never mix them in)."
    )
    secure_cookies: bool = Field(
        False, description="Mark the session cookie Secure; turn on behind HTTPS."
    )
    max_body_bytes: int = Field(
        65536, ge=1024, description="Largest request body accepted before 413."
    )
    log_level: str = Field("info", description="Log level: debug, info, warning or error.")
