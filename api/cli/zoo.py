"""``circuits tasks``, ``circuits eval`` and ``circuits train``: the task suite and our models.

torch and transformer_lens load inside the handlers, not at import: the API server imports this
package's parser and must never load torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    tasks = sub.add_parser("tasks", help="list the built-in tasks or show a task's prompts")
    tasks_sub = tasks.add_subparsers(dest="tasks_command", required=True, metavar="ACTION")
    tasks_sub.add_parser("list", help="the built-in tasks").set_defaults(handler=run_tasks_list)
    show = tasks_sub.add_parser("show", help="prompts of a built-in task or a custom-task JSON file")
    show.add_argument("task", help="a built-in task name or a path to a custom-task JSON file")
    show.add_argument("--n", type=int, default=3, help="how many pairs to print")
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("--model", help="also validate the prompts against this model's tokenizer")
    show.set_defaults(handler=run_tasks_show)
    exp = tasks_sub.add_parser(
        "export", help="write the exact prompt pairs (and their tokens) a discovery run used",
        description="Write the pairs of a run as custom-task JSON plus the tokenisation facts, "
                    "for re-scoring a circuit with another tool. Give --circuit to take model, "
                    "task, prompt count and seed from a circuit's provenance (and check its "
                    "dataset hash), or --model and --task.")
    exp.add_argument("--circuit", type=Path, help="a circuit JSON file (`circuits discover --out`)")
    exp.add_argument("--model", help="shipped name, local directory or hub name (default: the "
                                     "circuit's)")
    exp.add_argument("--task", help="a built-in task or a custom-task JSON file (default: the circuit's)")
    exp.add_argument("--n-prompts", type=int, help="pairs to draw (default: the circuit's, else 50)")
    exp.add_argument("--seed", type=int, help="seed of the draw (default: the circuit's, else 0)")
    exp.add_argument("--out", required=True, type=Path, help="where to write the export JSON")
    exp.set_defaults(handler=run_tasks_export)

    ev = sub.add_parser("eval", help="per-task accuracy and metric of a model on held-out prompts")
    ev.add_argument("--model", required=True, help="shipped name, local directory or hub name")
    ev.add_argument("--tasks", help="comma-separated tasks (default: those of the model card)")
    ev.add_argument("--n", type=int, help="held-out prompts per task (default: the card's)")
    ev.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ev.set_defaults(handler=run_eval)

    tr = sub.add_parser("train", help="train one of our models from scratch")
    from discovery.zoo.recipes import RECIPES  # torch-free: the help lists every recipe

    tr.add_argument("--recipe", required=True, help=", ".join(RECIPES))
    tr.add_argument("--out", required=True, type=Path, help="output directory")
    tr.add_argument("--steps", type=int, help="override the recipe's number of steps")
    tr.add_argument("--seed", type=int, help="override the recipe's seed")
    when = tr.add_mutually_exclusive_group()
    when.add_argument("--checkpoints", type=int, metavar="N",
                      help="also save N checkpoints at log-spaced steps (always the last; N >= 2) "
                           "into OUT/checkpoints/ and list them in OUT/run.json")
    when.add_argument("--checkpoint-steps", metavar="S1,S2,...",
                      help="also save checkpoints after exactly these steps (each in 1..steps)")
    tr.set_defaults(handler=run_train)


def _quiet_transformers() -> None:
    """transformers warns about padding on every padded batch; our padding is after the last real
    token of causal prompts, so the warning is noise here."""
    from transformers.utils import logging

    logging.set_verbosity_error()


def run_tasks_list(args: argparse.Namespace) -> int:
    from discovery.tasks import TASKS

    for spec in TASKS.values():
        print(f"{spec.name:14} {spec.metric:11} {spec.description}")
    return 0


def run_tasks_show(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise ValueError("--n must be at least 1")
    model = None
    if args.model:
        from discovery.models import load_model

        model = load_model(args.model, device="cpu")
    from discovery.discover import task_data

    data = task_data(args.task, model, args.n, args.seed)
    if model is not None:
        from discovery.tasks.tokens import tokenize_task

        batch = tokenize_task(data, model.tokenizer, n_ctx=model.n_ctx)
        print(f"{data.name}: {len(batch)} pairs valid for {model.name} "
              f"(longest prompt {batch.clean.shape[1]} tokens)")
    print(f"{data.name} (metric {data.metric}, dataset {data.dataset_hash[:12]})")
    for i, pair in enumerate(data.pairs[: args.n]):
        more = lambda words: ", ".join(words[:4]) + (" ..." if len(words) > 4 else "")  # noqa: E731
        print(f"[{i}] clean:   {pair.clean}\n    corrupt: {pair.corrupt}\n"
              f"    answer:  {more(pair.answers)}\n    wrong:   {more(pair.wrongs)}")
    return 0


def _export_request(args: argparse.Namespace):
    """(circuit or None, model, task, n_prompts, seed) from the flags and the circuit's provenance."""
    circuit = None
    if args.circuit:
        from discovery.circuit import Circuit

        try:
            circuit = Circuit.from_json(args.circuit.read_text())
        except FileNotFoundError:
            raise ValueError(f"--circuit: {args.circuit} does not exist") from None
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"--circuit: {args.circuit} is not a circuit JSON file ({exc})") from None
    p = circuit.provenance if circuit else None
    model = args.model or (p.model if p else None)
    task = args.task or (p.task if p else None)
    if not model or not task:
        raise ValueError("give --model and --task, or --circuit CIRCUIT.json to take them from it")
    if task.startswith("custom:") and not args.task:
        raise ValueError(f"the circuit's task {task!r} is a custom task: pass its JSON file as --task")
    n = args.n_prompts or (p.params.get("n_prompts") if p else None) or 50
    seed = args.seed if args.seed is not None else (p.seed if p and p.seed is not None else 0)
    if n < 1:
        raise ValueError("--n-prompts must be at least 1")
    return circuit, model, task, int(n), int(seed)


def run_tasks_export(args: argparse.Namespace) -> int:
    from discovery.discover import EDGE_ORDERS, task_data
    from discovery.graph import Graph
    from discovery.models import load_model
    from discovery.orders import order_names
    from discovery.tasks.export import export_task
    from discovery.tasks.tokens import tokenize_task

    circuit, model_name, task, n, seed = _export_request(args)
    _quiet_transformers()
    model = load_model(model_name, device="cpu")
    data = task_data(task, model, n, seed)
    batch = tokenize_task(data, model.tokenizer, n_ctx=model.n_ctx)
    order = None
    if circuit is not None:
        if data.dataset_hash != circuit.provenance.dataset_hash:
            raise ValueError(
                f"the pairs drawn ({data.dataset_hash[:12]}) are not the circuit's "
                f"({circuit.provenance.dataset_hash[:12]}): check --model, --task, --n-prompts, --seed")
        if circuit.provenance.edge_order and circuit.graph and circuit.provenance.method in EDGE_ORDERS:
            names = order_names(Graph(circuit.graph), circuit.provenance.params.get("edge_order", "ours"))
            order = {"name": circuit.provenance.edge_order,
                     "sha256": circuit.provenance.edge_order_sha256, "edges": names}
    export = export_task(batch, model.tokenizer, model=model.name, n_prompts=n, seed=seed,
                         edge_order=order)
    args.out.write_text(json.dumps(export, indent=1))
    print(f"{len(data.pairs)} pairs of {data.name} for {model.name} (dataset {data.dataset_hash[:12]}, "
          f"BOS {'prepended' if batch.prepend_bos else 'not prepended'}) -> {args.out}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from discovery.models import load_model
    from discovery.scoring import score_tasks
    from discovery.zoo.card import CARD, render_table

    _quiet_transformers()
    model = load_model(args.model, device=args.device)
    card_path = model.path / CARD if model.path else None
    card = json.loads(card_path.read_text()) if card_path and card_path.exists() else None
    tasks = args.tasks.split(",") if args.tasks else list((card or {}).get("eval", {}))
    if not tasks:
        from discovery.tasks import TASKS

        tasks = list(TASKS)
    n = args.n or (card["recipe"]["eval_prompts"] if card else 200)
    scores = score_tasks(model.logits, model.tokenizer, tasks, n=n, n_ctx=model.n_ctx,
                         device=model.device, task_options=model.task_options)
    print(f"{model.name} ({model.source}, {model.device}), {n} held-out prompts per task")
    print(render_table(scores))
    if card:
        diffs = {t: abs(scores[t]["accuracy"] - card["eval"][t]["accuracy"])
                 for t in scores if t in card["eval"]}
        worst = max(diffs.values(), default=0.0)
        print(f"model card: largest accuracy difference {worst:.4f} "
              f"({'matches' if worst < 0.005 else 'DIFFERS FROM'} the card)")
    return 0


def run_train(args: argparse.Namespace) -> int:
    import dataclasses

    from tqdm import tqdm

    from discovery.zoo.recipes import RECIPES
    from discovery.zoo.train import train

    _quiet_transformers()
    if args.recipe not in RECIPES:
        raise ValueError(f"unknown recipe {args.recipe!r}; known: {', '.join(RECIPES)}")
    recipe = RECIPES[args.recipe]
    overrides = {k: v for k, v in (("steps", args.steps), ("seed", args.seed)) if v is not None}
    recipe = dataclasses.replace(recipe, **overrides)
    from discovery.zoo.runs import log_spaced_steps, parse_steps

    checkpoint_steps = None
    if args.checkpoints is not None:
        checkpoint_steps = log_spaced_steps(recipe.steps, args.checkpoints)
    elif args.checkpoint_steps is not None:
        checkpoint_steps = parse_steps(args.checkpoint_steps, recipe.steps)
    with tqdm(total=recipe.steps, desc=f"train {recipe.name}", unit="step", file=sys.stderr) as bar:
        def progress(step: int, total: int, loss: float) -> None:
            bar.update(1)
            if step % 10 == 0 or step == total:
                bar.set_postfix(loss=f"{loss:.3f}")

        card = train(recipe, args.out, progress=progress, checkpoint_steps=checkpoint_steps)
    from discovery.zoo.card import render_table

    print(f"trained {recipe.name} in {card['train_seconds']} s -> {args.out}")
    if checkpoint_steps:
        print(f"{len(checkpoint_steps)} checkpoints (steps {', '.join(map(str, checkpoint_steps))}) "
              f"-> {args.out / 'checkpoints'}, listed in {args.out / 'run.json'}")
    print(render_table(card["eval"]))
    return 0
