"""The job config: schema, loading (YAML + dotted overrides), each section's own checks, and
secret handling. Imports nothing else of ganflow; `ganflow.job` adds what the registries know."""

from ganflow.config.load import WANDB_NAME, ConfigError, check_fields, from_dict, load, redacted, with_values
from ganflow.config.schema import (DataConfig, EvalConfig, JobConfig, LossConfig, ModelConfig, OptimConfig,
                                   OptimizerConfig, ScalingConfig, ScheduleConfig, StorageConfig, TrackingConfig, TrainConfig,
                                   WandbConfig)
from ganflow.config.secrets import CREDENTIALS_HINT, REDACTED, SECRET_KEY, redact

__all__ = ["CREDENTIALS_HINT", "REDACTED", "SECRET_KEY", "WANDB_NAME", "ConfigError", "DataConfig", "EvalConfig",
           "JobConfig", "LossConfig", "ModelConfig", "OptimConfig", "OptimizerConfig", "ScalingConfig", "ScheduleConfig",
           "StorageConfig", "TrackingConfig", "TrainConfig", "WandbConfig", "check_fields", "from_dict", "load",
           "redact", "redacted", "with_values"]
