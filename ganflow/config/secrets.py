"""Credentials never enter a config, a run's files, its checkpoints or W&B: secret-looking keys are
refused when a job is loaded, and everything that leaves the process is redacted."""

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
    """Values of secret-looking environment variables (AWS_SECRET_ACCESS_KEY, WANDB_API_KEY, ...)."""
    return sorted({v for k, v in env.items() if SECRET_KEY.search(k) and len(v) >= 8}, key=len, reverse=True)


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
        value = _strip_userinfo(value)
        for secret in secrets:
            value = value.replace(secret, REDACTED)
    return value
