"""Character data for language models: the pydoc text, the user's .txt, windows, identity,
and the loss and bits per character of a model trained on them (a stand-in model until the
transformer family exists: embedding -> linear, logits (B, T, V))."""

import hashlib
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from skiplab import ModelSpec
from skiplab.cli import main
from skiplab.datasets import Dataset, TextDataset, dataset_ref, load_dataset, load_pydoc, load_text
from skiplab.datasets.text import MIN_CHARACTERS, from_text, pydoc_text
from skiplab.fit import check_fits, model_fields_from
from skiplab.run.config import RunSpec, TrainConfig
from skiplab.run.loop import evaluate, train_model
from skiplab.spec import SpecError
from skiplab.store import Store


@pytest.fixture(scope="module")
def pydoc():
    return load_pydoc()


def test_pydoc_numbers_split_and_symbols(pydoc):
    text = pydoc_text()
    # the text every Python ships; its size changes little between versions (docs/data.md: about 465,000)
    assert 400_000 < pydoc.characters == len(text) < 600_000
    assert pydoc.vocab == pydoc.classes == len(set(text)) and 90 < pydoc.vocab < 120
    assert pydoc.symbols == "".join(sorted(set(text)))
    assert len(pydoc.train_tokens) == int(0.9 * len(text))  # first 90% train, the rest validates
    decoded = "".join(pydoc.symbols[i] for i in torch.cat([pydoc.train_tokens, pydoc.test_tokens]).tolist())
    assert decoded == text  # contiguous: train then test is the whole text, in order
    assert pydoc.train_tokens.dtype == torch.int64
    assert pydoc.sha256 == hashlib.sha256(text.encode()).hexdigest()


def test_windows_are_shifted_pairs(pydoc):
    w = pydoc.windows(64)
    assert isinstance(w, Dataset) and w.classes == pydoc.vocab
    assert w.x_train.shape == ((len(pydoc.train_tokens) - 1) // 64, 64) == w.y_train.shape
    assert w.x_test.shape == ((len(pydoc.test_tokens) - 1) // 64, 64)
    assert w.x_train.dtype == w.y_train.dtype == torch.int64
    assert torch.equal(w.x_train[:, 1:], w.y_train[:, :-1])  # y is x shifted by one
    assert torch.equal(w.x_train[1:, 0], w.y_train[:-1, -1])  # stride T: window i+1 starts where i's y ends
    assert torch.equal(w.x_train[0], pydoc.train_tokens[:64])
    assert torch.equal(w.y_test[-1], pydoc.test_tokens[len(w.y_test) * 64 - 63:len(w.y_test) * 64 + 1])


def test_context_longer_than_validation_text_is_one_line():
    data = from_text("t", "abcdefghij" * 200)  # 2,000 characters: 200 validate
    with pytest.raises(ValueError, match=r"^dataset: context: 512 is longer than the validation text \(200 "):
        data.windows(512)
    assert len(data.windows(199).y_test) == 1


def test_model_fields_and_for_model(pydoc):
    assert pydoc.model_fields() == {"vocab": pydoc.vocab, "classes": pydoc.vocab}
    num = Dataset("n", torch.zeros(4, 1, 3), torch.zeros(4, dtype=torch.long), torch.zeros(2, 1, 3),
                  torch.zeros(2, dtype=torch.long), classes=5)
    assert num.model_fields() == {"input_shape": (1, 3), "classes": 5}
    assert num.for_model(SimpleNamespace(context=8)) is num
    assert pydoc.for_model(SimpleNamespace(context=32)).x_test.shape[1] == 32
    # only what the user left out and ModelSpec has: a numeric model's given classes stay
    assert model_fields_from(num, {"classes": 7}) == {"input_shape": (1, 3)}


def test_sha_is_in_the_ref_and_a_changed_text_is_refused(pydoc, tmp_path):
    ref = dataset_ref("pydoc")
    assert ref == f"pydoc@{pydoc.sha256[:16]}"
    assert load_dataset(ref).sha256 == pydoc.sha256
    other = "0" * 16
    with pytest.raises(ValueError, match=rf"^dataset: the pydoc text on this Python has sha256 "
                                         rf"{pydoc.sha256[:16]}\.\.\., the run was made with {other}"):
        load_dataset(f"pydoc@{other}")
    f = tmp_path / "my.txt"
    f.write_text("hello world, " * 100, encoding="utf-8")
    ref = dataset_ref(str(f))
    assert ref == f"{f.resolve()}@{hashlib.sha256(f.read_bytes()).hexdigest()[:16]}"
    f.write_text("goodbye now, " * 100, encoding="utf-8")
    with pytest.raises(ValueError, match="the run was made with"):
        load_dataset(ref)
    # numeric data keeps its plain reference
    assert dataset_ref("mnist1d") == "mnist1d"


def test_user_text(tmp_path):
    f = tmp_path / "mine.txt"
    f.write_text("ünïcode text. " * 100, encoding="utf-8")
    d = load_text(f)
    assert isinstance(d, TextDataset) and d.name == "mine.txt" and d.characters == 1400
    assert set(d.symbols) == set("ünïcode text.")


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"", "is empty"),
    (b"abc\x00def" * 200, "is binary"),
    (b"\xff\xfe abc" * 200, "is not UTF-8"),
    (b"short text", f"needs at least {MIN_CHARACTERS:,}"),
    ("".join(map(chr, range(0x4E00, 0x4E00 + 10_001))).encode(), "at most 10,000"),
])
def test_bad_text_is_one_line_exit_2(tmp_path, capsys, content, message):
    f = tmp_path / "bad.txt"
    if content is not None:
        f.write_bytes(content)
    with pytest.raises(ValueError, match=f"^dataset: .*{message}"):
        load_text(f)
    assert main(["train", "--dataset", str(f), "--seeds", "1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("skiplab: error: dataset: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()  # nothing stored


def test_a_numeric_model_on_text_is_refused_before_training(tmp_path, capsys, pydoc):
    with pytest.raises(SpecError, match=r"^dataset: 'pydoc' is a token sequence; only --model transformer"):
        check_fits(ModelSpec(model="mlp", classes=pydoc.vocab), pydoc)
    assert main(["train", "--dataset", "pydoc", "--model", "mlp", "--seeds", "1",
                 "--out", str(tmp_path / "o")]) == 2
    assert "is a token sequence" in capsys.readouterr().err


def _lm_spec(vocab, context=16):
    """A small character language model of the transformer family."""
    return ModelSpec(model="transformer", depth=1, width=16, heads=2, context=context, vocab=vocab, classes=vocab)


def test_check_fits_on_text(pydoc):
    with pytest.raises(SpecError, match=rf"^vocab: the model embeds 50 symbols, the dataset 'pydoc' has {pydoc.vocab}$"):
        check_fits(_lm_spec(50), pydoc)
    with pytest.raises(SpecError, match=r"^context: 99999 is longer than the validation text"):
        check_fits(_lm_spec(pydoc.vocab, context=99_999), pydoc)
    check_fits(_lm_spec(pydoc.vocab), pydoc)


class StandIn(nn.Module):
    """Embedding -> linear: logits (B, T, V), a bigram model."""

    def __init__(self, spec, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.spec = spec
        self.emb = nn.Embedding(spec.vocab, 16)
        self.out = nn.Linear(16, spec.vocab)

    def forward(self, x, return_aux=False):
        logits = self.out(self.emb(x))
        return (logits, []) if return_aux else logits


class Uniform(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab

    def forward(self, x):
        return torch.zeros(*x.shape, self.vocab)


def test_uniform_predictor_has_log2_v_bpc(pydoc):
    w = pydoc.windows(32)
    loss, acc = evaluate(Uniform(pydoc.vocab), w.x_test, w.y_test, batch=100)
    assert loss / math.log(2) == pytest.approx(math.log2(pydoc.vocab), rel=1e-6)
    # argmax of equal logits is symbol 0: accuracy is that symbol's share of the positions
    assert acc == pytest.approx((w.y_test == 0).float().mean().item())


def test_training_a_token_model_reports_bpc():
    text = ("the cat sat on the mat. " * 60 + "a dog ran to the log. " * 60)[:2600]
    data = from_text("tiny", text)
    spec = RunSpec(_lm_spec(data.vocab), TrainConfig(epochs=20, batch_size=16, evals=2, lr=1e-2),
                   dataset="tiny", seed=0)
    model, r = train_model(spec, data)
    assert r.status == "complete"
    w = data.windows(16)
    te_loss, te_acc = evaluate(model, w.x_test, w.y_test)
    assert r.val_bpc == pytest.approx(te_loss / math.log(2)) and r.test_accuracy == pytest.approx(te_acc)
    assert r.train_bpc == pytest.approx(r.train_loss / math.log(2))
    assert r.val_bpc < 0.5 * math.log2(data.vocab)  # the model learns this repetitive text
    assert r.tokens_per_second > 0
    bpc = [(s, v) for s, split, name, v in r.curves if (split, name) == ("test", "bpc")]
    assert len(bpc) == 2 and bpc[-1][1] == pytest.approx(r.val_bpc)
    assert r.steps == 20 * math.ceil(len(w.y_train) / 16)


@pytest.mark.parametrize("argv", [["gradients", "--dataset", "pydoc"],
                                  ["experiment", "degradation", "--quick", "--dataset", "pydoc"]])
def test_commands_that_take_numeric_data_refuse_text_in_one_line(tmp_path, capsys, argv):
    out = ["--out", str(tmp_path / "o")] if argv[0] == "experiment" else []
    assert main(argv + out) == 2
    err = capsys.readouterr().err
    assert err.startswith("skiplab: error: dataset: 'pydoc' is a token sequence") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_a_classifier_run_also_reports_its_speed_and_no_bpc():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 1, 4, generator=g)
    y = (x[:, 0, 0] > 0).long()
    data = Dataset("toy", x[:64], y[:64], x[64:], y[64:], classes=2)
    spec = RunSpec(ModelSpec(model="mlp", depth=1, width=8, input_shape=(1, 4), classes=2),
                   TrainConfig(epochs=1, batch_size=32, evals=1), dataset="toy")
    _, r = train_model(spec, data)
    assert r.val_bpc is None and r.train_bpc is None  # judged by accuracy
    assert r.tokens_per_second > 0  # samples per second: one prediction per sample
    assert not any(name == "bpc" for _, _, name, _ in r.curves)


def test_train_a_transformer_on_a_text_file_from_the_command_line(tmp_path, capsys):
    text = tmp_path / "story.txt"
    text.write_text("once upon a time a small model read a short story. " * 40)
    argv = ["train", "--model", "transformer", "--dataset", str(text), "--depth", "1", "--width", "8", "--heads", "2",
            "--context", "16", "--epochs", "1", "--seeds", "2", "--workers", "1", "--out", str(tmp_path / "o"),
            "--json"]
    assert main(argv) == 0
    capsys.readouterr()
    with Store(tmp_path / "o") as store:
        rows = store.runs()
    assert len(rows) == 2 and all(r["result"]["val_bpc"] > 0 for r in rows)
    assert rows[0]["spec"]["dataset"].endswith("story.txt@" + hashlib.sha256(text.read_bytes()).hexdigest()[:16])
    assert main(["runs", "list", "--out", str(tmp_path / "o")]) == 0
    assert "val bpc" in capsys.readouterr().out
