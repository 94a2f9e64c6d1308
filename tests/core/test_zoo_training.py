"""The model zoo in training: every model family on 2 DDP workers (gloo, two real processes) ends
where 1 worker on the whole batch does, through lazy regularisation steps, path length, style
mixing and adaptive augmentation; a resumed run is bit-exact; the lazy phases run when they should."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from ganflow.core.fit import fit
from ganflow.core.state import DataMeta
from ganflow.job import batches_for, build_training, load_job
from ganflow.run import checkpoint as ckpt

CPU = torch.device("cpu")
SMALL = ["data.resolution=16", "train.batch_size=8", "train.log_every=1", "train.sample_every=1000",
         "train.checkpoint_every=1000", "optim.g.name=sgd", "optim.d.name=sgd", "optim.g.lr=0.01", "optim.d.lr=0.01"]
# Each case goes through its model's special steps within 5 steps: lazy R1 (and R2) at steps 0, 2, 4,
# path length at 0, 2, 4, the adaptive p moving after 4 D steps, style mixing on every batch.
CASES = {
    "dcgan-wgan-gp-2-critic-steps-diffaugment": ["model.nz=16", "model.ngf=8", "model.ndf=8", "model.g_norm=none",
                                                 "model.d_norm=none", "loss.name=wgan-gp", "loss.n_critic=2",
                                                 "train.augment=color,translation,cutout"],
    "resnet-hinge-cbn-attention": ["model.name=resnet", "model.nz=16", "model.ngf=4", "model.ndf=4", "model.g_norm=none",
                                   "model.attention=8", "loss.name=hinge"],
    "resnet-rpgan-r1-r2-adaptive": ["model.name=resnet", "model.nz=16", "model.ngf=4", "model.ndf=4", "model.g_norm=none",
                                    "model.hierarchical=true", "loss.name=rpgan", "loss.r1_gamma=1", "loss.r2_gamma=1",
                                    "train.augment=color,translation", "train.augment_p=adaptive", "train.augment_target=0.1"],
    "stylegan2-lazy-pl-mixing-adaptive": ["model.name=stylegan2", "model.nz=16", "model.ngf=2", "model.ndf=2",
                                          "model.mapping_layers=2", "model.style_mixing=1.0", "model.mbstd_group=2", "loss.r1_gamma=1",
                                          "loss.d_reg_every=2", "loss.g_reg_every=2", "train.augment=translation",
                                          "train.augment_p=adaptive", "train.augment_target=0.1"],
    "r3gan-rpgan-r1-r2-xflip": ["model.name=r3gan", "model.nz=16", "model.ngf=2", "model.ndf=2", "loss.name=rpgan",
                                "loss.r1_gamma=1", "loss.r2_gamma=1", "data.xflip=true"],
}
STEPS = 5
# the global batch of 8 as 2 workers x 4, as 2 workers x 2 parts x 2 (gradient accumulation), as 1 worker x 4 parts x 2
SPLITS = {"ddp": ["scaling.num_workers=2"], "ddp-accumulated": ["scaling.num_workers=2", "train.batch_per_worker=2"],
          "accumulated": ["train.batch_per_worker=2"]}


def _cfg(case: str, *more: str):
    return load_job(None, SMALL + CASES[case] + list(more))


class _Log:
    def __init__(self):
        self.rows = []

    def __call__(self, end):
        if end.log:
            self.rows.append(dict(end.metrics))


def _train(cfg, rank: int = 0, world: int = 1, steps: int = STEPS, state=None):
    dataset, fresh = build_training(cfg, CPU)
    if state is None and cfg.train.augment_p == "adaptive":
        fresh.gan.augment_p = 0.5  # from 0 p would stay 0 while D does not overfit: start where half the images augment
    state = state or fresh
    G, D = state.G, state.D
    if world > 1:
        G, D = DistributedDataParallel(state.G), DistributedDataParallel(state.D)
    hooks = _Log()
    cfg = cfg.__class__(**{**cfg.__dict__, "train": cfg.train.__class__(**{**cfg.train.__dict__, "steps": steps})})
    fit(cfg, state, batches_for(cfg, dataset, rank, world), hooks, rank=rank, world=world, G=G, D=D)
    return state, hooks.rows


def _worker(rank: int, port: int, out: str) -> None:
    """Every case on two workers, one after another in one pair of processes (start-up paid once)."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    try:
        for case in CASES:
            for split, more in SPLITS.items():
                if "scaling.num_workers=2" in more:
                    state, rows = _train(_cfg(case, *more), rank, 2)
                    if rank == 0:
                        torch.save({"state": state.state_dict(), "rows": rows}, f"{out}/{case}-{split}.pt")
        dist.barrier()  # neither leaves while the other still talks to it (gloo aborts on a closed peer)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.start_processes(_worker, args=(_free_port(), str(out)), nprocs=2, start_method="spawn")
    return out


@pytest.mark.parametrize("split", list(SPLITS))
@pytest.mark.parametrize("case", list(CASES))
def test_a_global_batch_split_across_workers_or_parts_ends_where_one_worker_on_the_whole_batch_does(two_workers, case,
                                                                                                  split):
    if "accumulated" in split and case.startswith("resnet"):
        pytest.skip("spectral norm (every resnet D layer) steps its power iteration at each forward, so parts see another sigma")
    one, one_rows = _train(_cfg(case))
    if "scaling.num_workers=2" in SPLITS[split]:
        two = torch.load(two_workers / f"{case}-{split}.pt", weights_only=True)
    else:
        state, rows = _train(_cfg(case, *SPLITS[split]))
        two = {"state": state.state_dict(), "rows": rows}
    a, b = one.state_dict(), two["state"]
    for part in ("G", "D", "G_ema"):
        for k, v in a[part].items():
            assert torch.allclose(v, b[part][k], atol=2e-5, rtol=0), f"{part}.{k} differs"
    assert a["gan"] == pytest.approx(b["gan"], rel=1e-5)
    for r1, r2 in zip(one_rows, two["rows"]):  # the logged losses, averaged over the workers, agree
        for k in ("loss/d", "loss/g", "penalty/r1", "penalty/r2", "penalty/pl", "augment/p"):
            if k in r1:
                assert r1[k] == pytest.approx(r2[k], rel=1e-4, abs=1e-6), (r1["step"], k)
    if "adaptive" in case:  # p moved by batch x 4 / 500k after the first 4 D steps, the same way on both
        assert one_rows[2]["augment/p"] == 0.5 and abs(one_rows[3]["augment/p"] - 0.5) == pytest.approx(8 * 4 / 500_000, rel=1e-3)
    _, init = build_training(_cfg(case), CPU)
    moved = max((a["G"][k] - v).abs().max().item() for k, v in init.G.state_dict().items() if v.is_floating_point())
    assert moved > 1e-4  # the comparison is of models that trained


@pytest.mark.parametrize("case", ["resnet-rpgan-r1-r2-adaptive", "stylegan2-lazy-pl-mixing-adaptive"])
def test_a_run_resumed_from_its_checkpoint_is_bit_exact(tmp_path, case):
    cfg = _cfg(case)
    straight, _ = _train(cfg)
    first, _ = _train(cfg, steps=3)
    directory = ckpt.write_checkpoint(first.state_dict(), cfg.to_dict(), cfg.hash(), tmp_path / "c", DataMeta((1, 16, 16), 10))
    loaded, _ = ckpt.load_checkpoint(directory)
    _, resumed = build_training(cfg, CPU)
    resumed.load_state_dict(loaded)
    assert resumed.gan == first.gan and resumed.step == 3
    resumed, _ = _train(cfg, state=resumed)
    a, b = straight.state_dict(), resumed.state_dict()
    for part in ("G", "D", "G_ema"):
        for k, v in a[part].items():
            assert torch.equal(v, b[part][k]), f"{part}.{k}"
    assert a["gan"] == b["gan"]


def test_lazy_regularisers_run_every_n_steps_with_adam_rescaled():
    cfg = load_job(None, ["data.resolution=16", "model.name=stylegan2", "model.nz=16", "model.ngf=2", "model.ndf=2",
                          "model.mapping_layers=1", "train.batch_size=8", "loss.r1_gamma=1", "train.log_every=1"])
    assert (cfg.loss.d_reg_every, cfg.loss.g_reg_every, cfg.loss.pl_weight) == (16, 4, 2.0)  # the model's defaults
    _, st = build_training(cfg, CPU)
    c_d, c_g = 16 / 17, 4 / 5
    assert st.opt_d.param_groups[0]["lr"] == pytest.approx(cfg.optim.d.lr * c_d)
    assert st.opt_d.param_groups[0]["betas"] == pytest.approx((0.5**c_d, 0.999**c_d))
    assert st.opt_g.param_groups[0]["lr"] == pytest.approx(cfg.optim.g.lr * c_g)
    _, rows = _train(load_job(None, ["data.resolution=16", "model.name=stylegan2", "model.nz=16", "model.ngf=2",
                                     "model.ndf=2", "model.mapping_layers=1", "train.batch_size=8", "loss.r1_gamma=1",
                                     "loss.d_reg_every=3", "train.log_every=1"]), steps=7)
    assert [r["step"] for r in rows if "penalty/r1" in r] == [1, 4, 7]  # after steps 0, 3, 6
    assert [r["step"] for r in rows if "penalty/pl" in r] == [1, 5]  # after steps 0, 4
    assert all(r["lr/d"] == pytest.approx(cfg.optim.d.lr) for r in rows)  # the configured rate is what is logged
    with pytest.raises(Exception, match="loss.pl_weight"):
        load_job(None, ["model.name=resnet", "loss.pl_weight=2"])


def test_a_resnet_on_labelled_data_is_conditional_and_on_unlabelled_it_is_not(tmp_path):
    _, st = build_training(load_job(None, ["model.name=resnet", "data.resolution=16", "model.ngf=4", "model.ndf=4"]), CPU)
    assert st.G.num_classes == 10 and st.D.num_classes == 10
    ring = load_job(None, ["data.name=ring", "model.name=mlp"])
    assert ring.model.name == "mlp"
    with pytest.raises(Exception, match="model.name"):
        load_job(None, ["data.name=ring", "model.name=resnet"])
