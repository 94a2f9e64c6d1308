"""Credentials never enter a config, a run's files, its checkpoints or W&B: secret-looking keys are
refused when a job is loaded, free text taken from the environment (`${oc.env:...}`) is redacted
as it is loaded, and everything that leaves the process is redacted by value: any string equal to
a credential in the environment, or holding one of 8+ characters."""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional
from urllib.parse import urlsplit, urlunsplit

CREDENTIALS_HINT = ("credentials come from the AWS chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                    "AWS_PROFILE, or an instance/pod role")
# Key names that hold secrets. A job config is saved with every run, so it must never carry one.
SECRET_KEY = re.compile(r"(secret|password|passwd|token|credential|access_key|api_key|apikey)", re.IGNORECASE)
REDACTED = "<redacted>"
# Environment variables whose values are credentials (DB_PASS, OPENAI_KEY, SSH_AUTH, ...): wider
# than SECRET_KEY, which also decides which config keys are refused.
SECRET_ENV = re.compile(r"(secret|pass|token|credential|key|auth|private|session|cookie|signature)", re.IGNORECASE)
ENV_INTERPOLATION = re.compile(r"\$\{\s*oc\.env\s*:")
MIN_EQUAL, MIN_INSIDE = 4, 8  # a value equal to a secret of 4+ characters, or holding one of 8+


def secret_key_message(key: str) -> Optional[str]:
    """The error for a secret-looking dotted key (by its last part), else None. Values are never echoed."""
    if SECRET_KEY.search(key.rsplit(".", 1)[-1]):
        return f"{key}: credentials do not belong in a job config (it is saved with every run); " + CREDENTIALS_HINT
    return None


def secret_keys_in(node: Any, prefix: str = "") -> Optional[str]:
    """The error for the first secret-looking key of a nested mapping, else None."""
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            found = secret_key_message(key) or secret_keys_in(v, key)
            if found:
                return found
    return None


def _secret_values(env: Dict[str, str]) -> List[str]:
    """Values of secret-looking environment variables (AWS_SECRET_ACCESS_KEY, WANDB_API_KEY, DB_PASS, ...)."""
    return sorted({v for k, v in env.items() if SECRET_ENV.search(k) and len(v) >= MIN_EQUAL}, key=len, reverse=True)


def from_environment(raw: Any) -> bool:
    """Whether an unresolved config value takes anything from the environment (`${oc.env:NAME}`)."""
    if isinstance(raw, (list, tuple)):
        return any(from_environment(v) for v in raw)
    return isinstance(raw, str) and bool(ENV_INTERPOLATION.search(raw))


def _strip_userinfo(text: str) -> str:
    def clean(m: re.Match) -> str:
        parts = urlsplit(m.group(0))
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=host))

    return re.sub(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/@]+@[^\s]+", clean, text)


def redact(value: Any, env: Optional[Dict[str, str]] = None, _secrets: Optional[List[str]] = None) -> Any:
    """`value` with secret-named keys, credentials in URLs and the values of secret environment
    variables replaced by REDACTED. Everything sent to W&B goes through this."""
    secrets = _secret_values(os.environ if env is None else env) if _secrets is None else _secrets
    if isinstance(value, dict):
        return {k: REDACTED if SECRET_KEY.search(str(k)) else redact(v, _secrets=secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, _secrets=secrets) for v in value]
    if isinstance(value, str):
        if value in secrets:
            return REDACTED
        value = _strip_userinfo(value)
        for secret in secrets:
            if len(secret) >= MIN_INSIDE:
                value = value.replace(secret, REDACTED)
    return value
