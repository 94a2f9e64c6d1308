"""`ganflow dashboard PROJECT`: a saved W&B workspace for a team's ganflow runs (wandb-workspaces).

Sections follow the metric names the worker logs (`loss/*`, `d/*`, `grad_norm/*`, `samples`,
`eval/*`, `throughput/*`, `lr/*`); the runs table pins the hyperparameters people sweep. Saving
needs the network; offline the workspace is written to a JSON file to push later.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

# the config keys a team compares runs by (W&B shows the nested config with dotted names)
KEY_HYPERPARAMETERS = ["model.name", "model.ngf", "model.ndf", "loss.name", "loss.r1_gamma", "optim.g.lr",
                       "optim.d.lr", "train.batch_size", "train.augment", "scaling.num_workers"]
EVAL_VALUES = ["eval/fid", "eval/kid", "eval/is", "eval/precision", "eval/recall", "eval/min_class_share",
               "eval/modes", "eval/high_quality"]
RUN_SUMMARY = ["final_step", "best/step", "throughput/imgs_per_s"]


def config_column(key: str) -> str:
    """The runs-table column of a nested config value: W&B stores `{"optim": {"value": {...}}}`."""
    top, _, rest = key.partition(".")
    return f"config:{top}.value.{rest}" if rest else f"config:{top}.value"


def build_workspace(project: str, entity: str, name: str = "ganflow", eval_values: Optional[List[str]] = None):
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    evals = eval_values or EVAL_VALUES

    def lines(title: str, keys: List[str]) -> "wr.LinePlot":
        return wr.LinePlot(title=title, x="Step", y=keys)

    sections = [
        ws.Section(name="Losses", is_open=True, panels=[
            lines("D and G loss", ["loss/d", "loss/g"]),
            lines("penalties", ["penalty/gp", "penalty/r1"]),
        ]),
        ws.Section(name="Discriminator outputs", is_open=True, panels=[
            lines("D logits on real and fake", ["d/real_logit", "d/fake_logit"]),
            lines("gradient norms", ["grad_norm/d", "grad_norm/g"]),
        ]),
        ws.Section(name="Samples", is_open=True, panels=[
            wr.MediaBrowser(title="samples (fixed latents)", media_keys=["samples"], num_columns=1),
        ]),
        ws.Section(name="Evaluation", is_open=True, panels=[lines(key.split("/", 1)[1], [key]) for key in evals]),
        ws.Section(name="Throughput", panels=[
            lines("images per second (all workers)", ["throughput/imgs_per_s"]),
            lines("learning rates", ["lr/g", "lr/d"]),
        ]),
        ws.Section(name="Runs", panels=[
            wr.ParallelCoordinatesPlot(title="hyperparameters vs best value", columns=[
                *(wr.ParallelCoordinatesPlotColumn(metric=wr.Config(k)) for k in KEY_HYPERPARAMETERS),
                *(wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(k)) for k in evals[:1]),
            ]),
        ]),
    ]
    columns = [config_column(k) for k in KEY_HYPERPARAMETERS] + [f"summary:{k}" for k in RUN_SUMMARY + evals]
    return ws.Workspace(entity=entity, project=project, name=name, sections=sections,
                        runset_settings=ws.RunsetSettings(pinned_columns=columns))


def workspace_json(workspace) -> str:
    """The workspace as W&B stores it (the view spec `save()` would upload)."""
    return json.dumps(workspace._spec, indent=1, sort_keys=True)


def write_spec(workspace, out: Path) -> Path:
    from ganflow.store.atomic import write_atomic

    write_atomic(out, workspace_json(workspace).encode())
    return out
