"""Training recipes: one frozen dataclass per model we ship (and a tiny one for CI).

``arch`` names the Hugging Face architecture a recipe builds (the builders live in
:data:`discovery.zoo.train.BUILDERS`, keyed by the names in :data:`ARCHITECTURES`; this module
stays free of torch so the CLI can list recipes cheaply).
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Architectures a recipe can build: GPT-2 (LayerNorm, GELU, learned positions), Llama (RMSNorm,
#: rotary, grouped-query attention, SwiGLU, no biases) and Pythia / GPT-NeoX (parallel attention
#: and MLP, partial rotary) and Gemma 2 (post-norms, soft-capping, sliding windows, GeGLU).
ARCHITECTURES: tuple[str, ...] = ("gpt2", "llama", "pythia", "gemma2")


@dataclass(frozen=True)
class Recipe:
    """How to build and train one model. ``mix`` weighs task names and "filler" in the corpus."""

    name: str
    n_layer: int
    n_head: int
    n_embd: int
    n_ctx: int = 64
    d_mlp: int = 512  # ignored when attn_only
    attn_only: bool = False  # MLP weights fixed at zero: the model is attention-only
    steps: int = 3000
    batch_size: int = 64
    lr: float = 3e-3
    warmup: int = 200
    weight_decay: float = 0.01
    seed: int = 0
    eval_prompts: int = 200  # held-out prompts per task for the model card
    mix: dict[str, float] = field(default_factory=dict)
    arch: str = "gpt2"  # one of ARCHITECTURES
    n_kv_head: int | None = None  # llama, gemma2: key/value heads (grouped-query attention); None = n_head
    sliding_window: int = 16  # gemma2: window of its local (even) layers
    rotary_pct: float = 0.25  # pythia: fraction of each head's dimensions that rotate

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"recipe {self.name}: unknown arch {self.arch!r}; use one of "
                             f"{', '.join(ARCHITECTURES)}")
        if self.attn_only and self.arch != "gpt2":
            raise ValueError(f"recipe {self.name}: attn_only is only supported for arch 'gpt2', "
                             f"not {self.arch!r}")
        kv = self.n_kv_head or self.n_head
        if self.n_head % kv:
            raise ValueError(f"recipe {self.name}: n_head {self.n_head} not divisible by "
                             f"n_kv_head {kv}")
        if self.n_embd % self.n_head:
            raise ValueError(f"recipe {self.name}: n_embd {self.n_embd} not divisible by n_head {self.n_head}")
        if not self.mix:
            raise ValueError(f"recipe {self.name}: empty corpus mix")

    @property
    def tasks(self) -> list[str]:
        """The tasks this model is trained (and evaluated) on."""
        return [name for name in self.mix if name != "filler"]


ALL_TASKS_MIX = {"ioi": 3.0, "greater_than": 2.0, "induction": 2.0, "successor": 1.0,
                 "pronoun": 1.0, "filler": 1.0}

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("multitask", n_layer=4, n_head=4, n_embd=64, d_mlp=256, n_ctx=48, steps=6000,
               mix=ALL_TASKS_MIX),
        # Same tasks and corpus as multitask, other architectures (issue 13). Llama's SwiGLU width
        # 200 makes its parameter count (237,888) close to multitask's (237,696): three matrices of
        # 64 x 200 instead of two of 64 x 256 plus biases. Fewer steps than multitask's 6000 (3000
        # and 2000): trained on a shared, loaded 2-core machine; their cards show the accuracy.
        Recipe("multitask-llama", arch="llama", n_layer=4, n_head=4, n_kv_head=2, n_embd=64,
               d_mlp=200, n_ctx=48, steps=3000, mix=ALL_TASKS_MIX),
        Recipe("multitask-pythia", arch="pythia", n_layer=4, n_head=4, n_embd=64, d_mlp=256,
               n_ctx=48, steps=2000, rotary_pct=0.25, mix=ALL_TASKS_MIX),
        # A post-norm model (Gemma 2): layers 0 and 2 attend within 16 tokens, 1 and 3 globally.
        Recipe("multitask-gemma2", arch="gemma2", n_layer=4, n_head=4, n_kv_head=2, n_embd=64,
               d_mlp=200, n_ctx=48, steps=3000, mix=ALL_TASKS_MIX),
        Recipe("induction-2l", n_layer=2, n_head=2, n_embd=64, attn_only=True, steps=4000,
               lr=3e-3, mix={"induction": 3.0, "filler": 1.0}),
        # For CI: trains in well under two minutes; solves nothing well.
        Recipe("tiny", n_layer=2, n_head=2, n_embd=32, d_mlp=64, n_ctx=48, steps=60,
               batch_size=16, eval_prompts=20, mix=ALL_TASKS_MIX),
        Recipe("tiny-llama", arch="llama", n_layer=2, n_head=2, n_kv_head=1, n_embd=32, d_mlp=48,
               n_ctx=48, steps=30, batch_size=16, eval_prompts=20, mix=ALL_TASKS_MIX),
    )
}
