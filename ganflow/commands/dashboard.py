"""`ganflow dashboard PROJECT`: save a W&B workspace for a project's runs (offline: write its spec)."""

from __future__ import annotations

import sys
from pathlib import Path

from ganflow.commands.common import EXIT_FAILURE, die
from ganflow.config import WANDB_NAME, WandbConfig
from ganflow.tracking.dashboard import build_workspace, write_spec
from ganflow.tracking.settings import TrackingError, resolve


def main(args) -> int:
    for flag, value in (("PROJECT", args.project), ("--entity", args.entity)):
        if value is not None and not WANDB_NAME.match(value):
            return die(f"{flag}: {value!r} is not a W&B project or entity name")
    try:
        mode = resolve(WandbConfig(project=args.project, entity=args.entity)).mode
    except TrackingError as err:
        return die(str(err))
    if mode != "online" or args.out:
        out = Path(args.out or f"wandb-workspace-{args.project}.json")
        write_spec(build_workspace(args.project, args.entity or "ENTITY", args.name), out)
        print(out)
        if mode != "online":
            print("W&B is offline (no WANDB_API_KEY, or WANDB_MODE): wrote the workspace spec; "
                  "run this again online to save it to W&B", file=sys.stderr)
        return 0
    try:
        import wandb

        entity = args.entity or wandb.Api().default_entity
        workspace = build_workspace(args.project, entity, args.name).save()
    except Exception as err:  # network, auth, permissions: wandb raises many kinds
        return die(f"dashboard: W&B did not save the workspace ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})",
                    EXIT_FAILURE)
    print(workspace.url)
    return 0
