"""Record figures of the 9 round-1 strategies before the stream redesign (issue 12). Ran once at
commit 192ae2f with the round-1 API (ModelSpec had a `growth` field); kept for provenance:
`python tests/data/record_round1_figures.py tests/data/round1_figures.json` on that commit."""
import json, sys
import torch
from skiplab.cost import model_cost
from skiplab.datasets import Dataset
from skiplab.model import build_model
from skiplab.run.config import RunSpec, TrainConfig
from skiplab.run.loop import train_run
from skiplab.spec import ModelSpec

SKIPS = ["plain", "add", "rezero", "layerscale", "highway", "dense", "concat-prev", "concat-double", "concat-half"]
cases = []
for model, shape in (("mlp", (12,)), ("cnn1d", (2, 9)), ("cnn2d", (2, 5, 4))):
    for norm in ("none", "batch", "layer"):
        for skip in SKIPS:
            for depth in (0, 1, 3):
                for bias in (True, False):
                    growth = 3 if skip == "dense" and bias else None
                    spec = ModelSpec(model=model, depth=depth, width=6, skip=skip, norm=norm, bias=bias,
                                     growth=growth, input_shape=shape, classes=4, kernel_size=3,
                                     aux_every=1 if depth == 3 and norm == "batch" else 0,
                                     activation="gelu" if norm == "layer" else "relu",
                                     init="kaiming" if not bias else "torch")
                    c = model_cost(spec, batch=5)
                    torch.manual_seed(0)
                    x = torch.randn(5, *shape, generator=torch.Generator().manual_seed(1))
                    m = build_model(spec, seed=3).train()
                    out = m(x)
                    params = torch.cat([p.detach().flatten() for p in m.parameters()])
                    cases.append({"spec": {k: v for k, v in spec.to_dict().items()},
                                  "params": c["params"], "flops": {k: c["flops"][k] for k in ("matmul", "merge", "aux_matmul")},
                                  "activation_bytes": c["activation_bytes"], "concat_bytes": c["concat_bytes"],
                                  "per_block": c["per_block"],
                                  "param_sum": float(params.double().sum()), "param_sq": float(params.double().pow(2).sum()),
                                  "out_sum": float(out.detach().double().sum()), "out_abs": float(out.detach().double().abs().sum())})
# tiny training runs: a fixed synthetic dataset
g = torch.Generator().manual_seed(7)
xtr = torch.randn(96, 12, generator=g); ytr = (xtr[:, :4].argmax(1))
xte = torch.randn(48, 12, generator=g); yte = (xte[:, :4].argmax(1))
data = Dataset("tiny", xtr, ytr, xte, yte, 4)
runs = []
for skip in SKIPS:
    spec = ModelSpec(model="mlp", depth=3, width=8, skip=skip, norm="batch", input_shape=(12,), classes=4,
                     growth=4 if skip == "dense" else None)
    r = train_run(RunSpec(spec, TrainConfig(epochs=2, batch_size=32, evals=1), "tiny", seed=1), data)
    runs.append({"spec": spec.to_dict(), "test_accuracy": r.test_accuracy, "train_loss": r.train_loss,
                 "test_loss": r.test_loss})
json.dump({"note": "recorded with skiplab at commit 192ae2f (round 1), before the stream redesign; /tmp/record.py",
           "cases": cases, "runs": runs}, open(sys.argv[1], "w"), indent=0)
print(len(cases), "cases", len(runs), "runs")
