"""What a run is: :class:`TrainConfig` (how to train), :class:`RunSpec` (model, data,
training settings and seed: a run's identity, ``spec_hash``) and :class:`RunResult` (what a
run gives back, as stored), with the checks a configuration gets before any training
(precision, device)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import torch

from ..spec import ModelSpec
from ..validate import SpecError, boolean, choice, integer, number
from .optim import OPTIMIZERS

SCHEDULES = ("constant", "cosine")
ENGINES = ("batched", "loop")  # skiplab.run.batched
DEVICES = ("cpu", "cuda", "auto")
PRECISIONS = ("fp32", "bf16")  # the forward's arithmetic: fp32, or bf16 autocast (CUDA)


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Defaults reach the MNIST-1D paper's CNN baseline (94%) with
    ``cnn1d``/``add`` at its default depth and width (docs/training.md)."""

    optimizer: str = "adam"  # adam | adamw | sgd (momentum 0.9, Nesterov)
    lr: float = 3e-3  # peak learning rate
    schedule: str = "cosine"  # constant | cosine (decay to 0 over the run, Loshchilov & Hutter 1608.03983)
    batch_size: int = 128
    epochs: float = 30  # passes over the training set; a fraction trains on that share of one pass's steps
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    evals: int = 10  # evaluations on the test set over the run (curves)
    device: str = "cpu"  # cpu | cuda | auto; not part of a run's identity
    # Linear learning-rate warm-up over this many steps (from lr / warmup up to lr), then the
    # schedule over the remaining steps (Xiong et al., arXiv 2002.04745: Post-LN needs it).
    # 0 = none; then it is left out of a run's identity, so runs stored before it existed
    # keep their spec hash.
    warmup: int = 0
    # How the seeds of one configuration train (skiplab.run.batched): "batched", S seeds as one
    # vmapped computation where it applies, else "loop", one at a time. The two agree within
    # 1e-4, so like device it is not part of a run's identity, and the default is left out
    # of to_dict.
    engine: str = "batched"
    # torch.compile the training step's forward (and so its backward): the loss function in
    # the loop engine, the vmapped loss in the batched one. It changes results only by
    # rounding, so like the engine it is not part of a run's identity (absent from to_dict
    # when False). Where compiling fails, the run trains eagerly and says why (trained_by).
    compile: bool = False
    # The forward's arithmetic: "fp32", or "bf16" (torch.autocast to bfloat16, the loss in
    # fp32; CUDA only). bf16 changes results, so it is part of a run's identity; the default
    # is left out of to_dict, so runs stored before it existed keep their spec hash.
    precision: str = "fp32"

    def __post_init__(self) -> None:
        choice("optimizer", self.optimizer, OPTIMIZERS)
        choice("schedule", self.schedule, SCHEDULES)
        choice("device", self.device, DEVICES)
        choice("engine", self.engine, ENGINES)
        boolean("compile", self.compile)
        choice("precision", self.precision, PRECISIONS)
        if self.precision == "bf16" and self.device == "cpu" and not _BF16_ON_CPU:
            raise SpecError(BF16_CPU)
        for name in ("batch_size", "evals"):
            integer(name, getattr(self, name), 1)
        number("epochs", self.epochs, 0.0, strict=True)
        if isinstance(self.epochs, float) and self.epochs.is_integer():  # 3.0 and 3 name the same run
            object.__setattr__(self, "epochs", int(self.epochs))
        integer("warmup", self.warmup, 0)
        number("lr", self.lr, 0.0, strict=True)
        number("weight_decay", self.weight_decay)
        number("grad_clip", self.grad_clip)


@dataclass(frozen=True)
class RunSpec:
    """One training run: model, data, training settings and seed."""

    model: ModelSpec
    train: TrainConfig = field(default_factory=TrainConfig)
    dataset: str = "mnist1d"  # a dataset name or path (skiplab.datasets.load_dataset)
    seed: int = 0
    group: str = ""  # free label (e.g. "equal-width"), part of the identity
    label: str = "label"  # label column, for .csv datasets

    def to_dict(self) -> dict[str, Any]:
        train = dataclasses.asdict(self.train)
        if not train["warmup"]:  # the default: absent, as in every run stored before warm-up existed
            del train["warmup"]
        if train["engine"] == "batched":  # the default: absent, as in every run stored before engines existed
            del train["engine"]
        if not train["compile"]:  # the default: absent, as in every run stored before it existed
            del train["compile"]
        if train["precision"] == "fp32":  # likewise (bf16 stays: it is part of the identity)
            del train["precision"]
        return {"model": self.model.to_dict(), "train": train,
                "dataset": self.dataset, "seed": self.seed, "group": self.group, "label": self.label}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunSpec":
        return cls(model=ModelSpec.from_dict(d["model"]), train=TrainConfig(**d["train"]),
                   dataset=d["dataset"], seed=d["seed"], group=d.get("group", ""), label=d.get("label", "label"))

    @property
    def spec_hash(self) -> str:
        """Identity of the configuration, without the seed, the device, the engine and
        compilation (where and how a run executes does not change what it is; bf16
        precision does, and is kept)."""
        d = self.to_dict()
        del d["seed"], d["train"]["device"]
        d["train"].pop("engine", None)
        d["train"].pop("compile", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class RunResult:
    status: str  # complete | diverged
    seed: int
    train_accuracy: float | None
    test_accuracy: float | None
    train_loss: float | None
    test_loss: float | None
    steps: int
    seconds: float
    params: int
    message: str = ""
    # Strategy diagnostics of the trained model, e.g. the composite residual gain of
    # hyper-connections and mHC after the last block (skiplab.gradients.stream_gains).
    diagnostics: dict[str, Any] = field(default_factory=dict)
    curves: list[tuple[int, str, str, float]] = field(default_factory=list)  # (step, split, name, value)
    # Language models (a text dataset): cross-entropy in bits per character, nats / ln 2.
    # Optional, so results stored before they existed still load.
    val_bpc: float | None = None
    train_bpc: float | None = None
    # Training positions predicted per second of training (evaluations excluded): samples x
    # positions per sample (a classification sample is one position).
    tokens_per_second: float | None = None
    # The engine that trained it: "batched", "loop", or "loop: <why batching did not apply>"
    # (skiplab.run.batched); None when train_run was called directly.
    trained_by: str | None = None
    # With TrainConfig.compile: seconds torch.compile took, measured as the first training
    # step's wall time minus the median of the next steps' (up to 20); the first step also
    # runs once, and a later recompile (a smaller last batch) is not counted. Batched: the
    # batch's, the same for each of its seeds. None without compile; optional, so results
    # stored before it existed still load.
    compile_seconds: float | None = None

    def summary(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        del d["curves"]
        return d


# -- Accelerator options: the decisions, each testable on the CPU --------------------------
BF16_CPU = ("precision: bf16 autocast is offered on CUDA only (on this project's CPU it trained the study's MLPs "
            "at 0.7 to 1.0x fp32's speed: docs/scaling.md, \"Accelerator options\"); use --precision fp32, or --device cuda")
_BF16_ON_CPU = False  # tests: let the bf16 autocast path run on the CPU, to exercise it


def check_precision(cfg: TrainConfig, device: torch.device) -> None:
    """bf16 autocast runs on CUDA only (SpecError otherwise, before any training)."""
    if cfg.precision == "bf16" and device.type != "cuda" and not _BF16_ON_CPU:
        raise SpecError(BF16_CPU)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SpecError("device: cuda was asked for but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(device)


__all__ = ["TrainConfig", "RunSpec", "RunResult", "check_precision", "resolve_device", "SCHEDULES", "ENGINES", "DEVICES",
           "PRECISIONS", "BF16_CPU"]
