"""A random-init Hugging Face GPT-2, 2 layers of width 32, for the pydoc characters:
``skiplab compare examples/tiny_gpt2.py:make_model --skip add,rezero,dwa,hyper,mhc
--dataset pydoc --seeds 3 --out DIR`` (docs/rewire.md). Needs
``transformers``. GPT-2 is trained with its own loss (labels = the input ids, shifted
inside the model)."""

from transformers import GPT2Config, GPT2LMHeadModel


def pydoc_symbols() -> int:
    from pydoc_data.topics import topics

    return len(set("".join(topics.values())))


def make_model():
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=pydoc_symbols(), n_positions=64,
                        bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config)
