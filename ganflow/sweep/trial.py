"""One Tune trial: a light driver function that launches the job's own TorchTrainer (Ray's
Train-in-Tune pattern, Train V2). Its evaluations reach Tune through a Ray Train callback and the
trial function, which reports each with a Tune checkpoint that names the ganflow checkpoint beside
it (a few bytes; the weights stay where the run keeps them). PBT clones a trial by handing another
trial that pointer, and the clone starts a new ganflow run from a copy of that checkpoint, its
learning rates perturbed; `Tuner.restore` hands a trial its own pointer, and it resumes its own run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import OmegaConf

from ganflow.job import load_job
from ganflow.ray import driver
from ganflow.run.layout import RunLayout, SweepLayout
from ganflow.store import NotFound, S3Options, Store, open_store, store_options
from ganflow.sweep.spec import override

POINTER = "ganflow_checkpoint.json"  # the Tune checkpoint's one file


def _eval_relay(reports, eval_key: str):
    """A Ray Train callback (it runs in the TorchTrainer's controller) passing each report that
    carries the sweep's metric, with its checkpoint's path, to the trial function through a Ray
    queue: the trial function reports it to Tune, with a checkpoint, which only it can do."""
    from ray.train import UserCallback

    class EvalRelay(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            if metrics and eval_key in metrics[0]:
                reports.put({**metrics[0], "checkpoint_path": checkpoint.path if checkpoint else None})

    return EvalRelay()


def trial_overrides(sweep: Dict[str, Any], params: Dict[str, Any]) -> List[str]:
    return sweep["overrides"] + [override(k, v) for k, v in params.items()] + [
        f"name={sweep['name']}", f"tracking.wandb.group={sweep['name']}", "tracking.wandb.job_type=trial"]


def _read_pointer(checkpoint) -> Optional[Dict[str, Any]]:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        found = Path(d) / POINTER
        return json.loads(found.read_text()) if found.is_file() else None


def run_trial(config: Dict[str, Any], sweep: Dict[str, Any]) -> None:
    """One Tune trial: the base job with this trial's values, trained by its own TorchTrainer.
    Started with its own earlier checkpoint (a restored sweep, a paused trial) it resumes its own
    run; with another trial's (a PBT exploit) it starts a new run from a copy of that checkpoint."""
    import tempfile
    import threading

    from ray import tune
    from ray.util.queue import Queue

    cfg = load_job(sweep["job"], trial_overrides(sweep, config["params"]))
    trial_id = tune.get_context().get_trial_id()
    resume = fork = None
    earlier = _read_pointer(tune.get_checkpoint())
    if earlier and earlier["trial"] == trial_id:
        resume = RunLayout.split_checkpoint(earlier["checkpoint"])[0]
    elif earlier:
        fork = earlier["checkpoint"]
    reports = Queue(maxsize=1, actor_options={"num_cpus": 0})
    ended: Dict[str, Any] = {}

    def fit() -> None:
        try:
            ended["run"] = driver.run(cfg, resume=resume, fork_from=fork, force_takeover=True,  # Tune runs one of each trial
                                     callbacks=[_eval_relay(reports, sweep["eval_key"])])
        except BaseException as err:  # raised again in the trial's own thread, where Tune sees it
            ended["error"] = err
        finally:
            reports.put(None)

    threading.Thread(target=fit, name="ganflow-trial", daemon=True).start()
    log = TrialLog(sweep["location"], trial_id, store_options(cfg.storage))
    store = open_store(cfg.storage.uri, store_options(cfg.storage))
    used = {key: OmegaConf.select(OmegaConf.create(cfg.to_dict()), key) for key in config["params"]}
    logged = False
    while (result := reports.get()) is not None:
        uri = checkpoint_uri(store, result.pop("checkpoint_path"))
        metrics = {**result, "checkpoint": uri or "", "run": RunLayout.split_checkpoint(uri)[0] if uri else "",
                   "forked_from": fork or ""}
        log.append({"step": result["step"], sweep["eval_key"]: result[sweep["eval_key"]], "checkpoint": uri,
                    "run": metrics["run"], "forked_from": fork, "params": used})
        logged = True
        if not uri:
            tune.report(metrics)
            continue
        with tempfile.TemporaryDirectory(prefix="ganflow-pointer-") as d:
            pointer = {"trial": trial_id, "checkpoint": uri, "step": result["step"],
                       "value": result[sweep["eval_key"]]}
            Path(d, POINTER).write_text(json.dumps(pointer))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))  # copied to Tune's storage here
    if "error" in ended:
        raise ended["error"]
    if fork and not logged:  # PBT copied a finished trial's last checkpoint: nothing left to train, and
        # no report to Tune either (PBT would exploit again at the same step), but the copy is this trial's run
        run = ended["run"].uri
        log.append({"step": earlier["step"], sweep["eval_key"]: earlier.get("value"),
                    "checkpoint": f"{run}/{RunLayout.split_checkpoint(fork)[1]}", "run": run, "forked_from": fork, "params": used})


class TrialLog:
    """`<sweep>/trials/<trial_id>.jsonl`: a line per evaluation a trial reported (step, metric,
    checkpoint, run, the values in force). Tune's own per-trial history is rewritten when a trial
    restarts from a checkpoint (PBT, restore); this one only grows, so results come from it."""

    def __init__(self, location: str, trial_id: str, options=None):
        self.store = open_store(location, options or S3Options())
        self.key = SweepLayout.trial_log(trial_id)

    def append(self, record: Dict[str, Any]) -> None:
        self.store.put_bytes(self.key, (self.read_text() + json.dumps(record) + "\n").encode())

    def read_text(self) -> str:
        try:
            return self.store.get_bytes(self.key).decode()
        except NotFound:
            return ""

    def records(self) -> List[Dict[str, Any]]:
        """In the order they were first made: a run resumed from its checkpoint evaluates steps
        again (the later evaluation counts), while PBT's runs of one trial evaluate the same steps
        each on its own (all count: a run whose steps a later fork repeated was still trained)."""
        by_run_step: Dict[Any, Dict[str, Any]] = {}
        for line in self.read_text().splitlines():
            record = json.loads(line)
            by_run_step[record.get("run"), record["step"]] = record
        return list(by_run_step.values())



def checkpoint_uri(store: Store, path: Any) -> Optional[str]:
    """Our URI for the checkpoint path Ray reports (a bucket's as 'bucket/key')."""
    if not path or not isinstance(path, str):
        return None
    return store.uri_from_ray_path(path)

