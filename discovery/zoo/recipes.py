"""Training recipes: one frozen dataclass per model we ship (and a tiny one for CI)."""

from __future__ import annotations

from dataclasses import dataclass, field


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

    def __post_init__(self) -> None:
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
        Recipe("induction-2l", n_layer=2, n_head=2, n_embd=64, attn_only=True, steps=4000,
               lr=3e-3, mix={"induction": 3.0, "filler": 1.0}),
        # For CI: trains in well under two minutes; solves nothing well.
        Recipe("tiny", n_layer=2, n_head=2, n_embd=32, d_mlp=64, n_ctx=48, steps=60,
               batch_size=16, eval_prompts=20, mix=ALL_TASKS_MIX),
    )
}
