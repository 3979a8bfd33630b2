"""Conflict prompts: one prompt whose cues point two tasks at different answers, so the circuits of
both tasks are excited at once and only one answer can win (the competition-of-mechanisms design of
Ortu et al. 2024). Torch-free: the API validates custom conflict prompts against a model's
``tokenizer.json`` without loading torch; :mod:`discovery.experiments.conflict_batch` makes tensors.

Built-in generators (keyed by the sorted task pair in :data:`GENERATORS`):

* ``ioi`` x ``induction``: ``<IOI prompt> S . <IOI prompt>``. The first copy is completed with the
  subject S (the name IOI rules out), so induction copies S at the end of the second copy while IOI
  names the indirect object. Only IOI templates whose final ``to`` is the only ``to`` are used, so
  the token after the earlier ``to`` is S and nothing else (induction has one thing to copy).
* ``successor`` x ``induction``: ``<successor prompt> X . <successor prompt>`` where X is a wrong
  weekday (month) of the same cycle, neither the true successor nor the day named: induction copies
  the in-context counterfactual X, successor says the true next day (fact vs context).

Every built-in prompt is built on a task prompt of the held-out test split
(:func:`discovery.tasks.base.in_split`), so the task part never occurred in training.

Custom conflict prompts are JSON: ``[{"prompt": "...", "answers": {"<task a>": "Mary", "<task b>":
"John"}}, ...]``; :func:`parse_conflicts` checks the structure and sizes, :func:`check_tokenizes`
checks them against a tokenizer. Errors name the field (``conflicts[3].answers.ioi``) and the fix.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from discovery.tasks import ioi, successor
from discovery.tasks.base import in_split
from discovery.zoo.language import NAMES, OBJECTS, PLACES

#: Limits of a custom conflict set (as for custom tasks: the prompt cap of every job).
MAX_CONFLICTS = 2000
MAX_PROMPT_CHARS = 2000
MAX_ANSWER_CHARS = 100
PROMPT_FIELDS = frozenset({"prompt", "answers"})


class ConflictValidationError(ValueError):
    """Conflict prompts are unusable; the message names the field (``conflicts[3].answers.ioi``)
    and says how to fix it."""


@dataclass(frozen=True)
class ConflictPrompt:
    """One prompt and, per task, the answer token that task's cue points to (all different)."""

    prompt: str
    answers: dict[str, str]  # task name -> its answer token


Draw = Callable[..., "ConflictPrompt | None"]  # (rng, **options) -> a prompt, None: draw again


@dataclass(frozen=True)
class ConflictGenerator:
    """A built-in source of conflict prompts for one unordered pair of tasks."""

    name: str  # ConflictSummary.source is "builtin:<name>"
    tasks: tuple[str, str]  # sorted
    description: str
    draw: Draw
    options: frozenset[str] = frozenset()  # the keyword options ``draw`` accepts

    def generate(self, n: int, *, seed: int = 0, options: dict | None = None) -> tuple[ConflictPrompt, ...]:
        """``n`` distinct prompts, deterministic given ``seed`` and ``options``."""
        options = dict(options or {})
        unknown = sorted(set(options) - self.options)
        if unknown:
            raise ValueError(f"conflict generator {self.name}: unknown option(s) {unknown}; it takes "
                             f"{', '.join(sorted(self.options)) or 'none'}")
        rng, prompts, seen = random.Random(f"conflicts/{self.name}/{seed}"), [], set()
        for _ in range(200 * n + 1000):
            if len(prompts) == n:
                break
            prompt = self.draw(rng, **options)
            if prompt is not None and prompt.prompt not in seen:
                seen.add(prompt.prompt)
                prompts.append(prompt)
        if len(prompts) < n:
            raise ValueError(f"conflict generator {self.name}: cannot draw {n} distinct prompts from "
                             f"the test split (found {len(prompts)}); ask for fewer")
        return tuple(prompts)


def _names(names: Sequence[str] | None) -> list[str]:
    pool = list(NAMES if names is None else names)
    if len(set(pool)) < 2 or not all(isinstance(w, str) and w.strip() for w in pool):
        raise ValueError("conflict option names: give at least two distinct names")
    return pool


#: IOI templates with a single "to" (the last token): the only "to" the first copy completes.
IOI_TEMPLATES = tuple(t for t in ioi.TEMPLATES if t.split().count("to") == 1)


def draw_ioi_induction(rng: random.Random, names: Sequence[str] | None = None) -> ConflictPrompt | None:
    """``<IOI prompt> S . <IOI prompt>``: IOI says IO, induction copies S."""
    template = rng.choice(IOI_TEMPLATES)
    io, s = rng.sample(_names(names), 2)
    a, b = (io, s) if rng.random() < 0.5 else (s, io)  # ABBA or BABA, as the IOI task
    base = template.format(A=a, B=b, S=s, PLACE=rng.choice(PLACES), OBJECT=rng.choice(OBJECTS))
    if not in_split(base, "test"):
        return None
    return ConflictPrompt(f"{base} {s} . {base}", {"ioi": io, "induction": s})


def draw_successor_induction(rng: random.Random,
                             names: Sequence[str] | None = None) -> ConflictPrompt | None:
    """``<successor prompt> X . <successor prompt>``: successor says the next day, induction X."""
    (template, cycle), name = rng.choice(successor.TEMPLATES), rng.choice(_names(names))
    i = rng.randrange(len(cycle))
    base = template.format(X=cycle[i], N=name)
    if not in_split(base, "test"):
        return None
    true = cycle[(i + 1) % len(cycle)]
    counterfactual = rng.choice([w for w in cycle if w not in (true, cycle[i])])
    return ConflictPrompt(f"{base} {counterfactual} . {base}",
                          {"successor": true, "induction": counterfactual})


GENERATORS: dict[tuple[str, str], ConflictGenerator] = {
    g.tasks: g for g in (
        ConflictGenerator("ioi-induction", ("induction", "ioi"),
                          "an IOI prompt completed with its subject, then repeated: induction copies "
                          "the subject, IOI names the indirect object",
                          draw_ioi_induction, frozenset({"names"})),
        ConflictGenerator("successor-induction", ("induction", "successor"),
                          "a successor prompt completed with a wrong day (month), then repeated: "
                          "induction copies the counterfactual, successor says the true next one",
                          draw_successor_induction, frozenset({"names"})),
    )
}


def has_generator(a: str, b: str) -> bool:
    return tuple(sorted((a, b))) in GENERATORS


def generator_for(a: str, b: str) -> ConflictGenerator:
    """The built-in generator of pair (a, b) in either order; the error lists those that exist."""
    try:
        return GENERATORS[tuple(sorted((a, b)))]
    except KeyError:
        known = ", ".join(" x ".join(k) for k in GENERATORS)
        raise ValueError(f"no built-in conflict prompts for {a} x {b} (built-in: {known}); give "
                         'custom ones: [{"prompt": ..., "answers": {"' + a + '": ..., "' + b
                         + '": ...}}]') from None


def builtin_conflicts(a: str, b: str, n: int, *, seed: int = 0,
                      options: dict | None = None) -> tuple[ConflictPrompt, ...]:
    """``n`` built-in conflict prompts of pair (a, b), answers keyed in the order (a, b)."""
    generator = generator_for(a, b)
    if not isinstance(n, int) or not 1 <= n <= MAX_CONFLICTS:
        raise ValueError(f"n_conflicts: {n!r}; give 1 to {MAX_CONFLICTS} prompts")
    return tuple(ConflictPrompt(p.prompt, {a: p.answers[a], b: p.answers[b]})
                 for p in generator.generate(n, seed=seed, options=options))


def options_for_model(task_options: dict[str, dict] | None) -> dict | None:
    """Generator options for a model with a narrow vocabulary, from its task options (the
    ``circuit_atlas.tasks`` of its config): the names of its induction pool, when it has one."""
    pool = ((task_options or {}).get("induction") or {}).get("pool")
    if not pool:
        return None
    names = [w for w in NAMES if w in set(pool)]
    return {"names": names} if len(names) >= 2 else None


# --- custom conflict prompts -------------------------------------------------------------------


def _pair(tasks: Sequence[str]) -> tuple[str, str]:
    if len(tasks) != 2 or len(set(tasks)) != 2 or not all(isinstance(t, str) and t for t in tasks):
        raise ValueError(f"tasks: {list(tasks)!r}; conflict prompts are for two distinct tasks")
    return tasks[0], tasks[1]


def _answer(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConflictValidationError(f"{where}: must be a non-empty string; give the answer token")
    if len(value) > MAX_ANSWER_CHARS:
        raise ConflictValidationError(f"{where}: {len(value)} characters; an answer is one token "
                                      f"(at most {MAX_ANSWER_CHARS} characters)")
    return value.strip()


def _parse_one(item: Any, where: str, tasks: tuple[str, str]) -> ConflictPrompt:
    if not isinstance(item, dict):
        raise ConflictValidationError(f'{where}: must be an object {{"prompt": ..., "answers": {{...}}}}')
    unknown = sorted(str(k)[:40] for k in set(item) - PROMPT_FIELDS)
    if unknown:
        raise ConflictValidationError(f"{where}: unknown field(s) {unknown[:5]}; a conflict prompt has "
                                      "prompt and answers")
    prompt = item.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConflictValidationError(f"{where}.prompt: missing or empty; give the prompt text")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ConflictValidationError(f"{where}.prompt: {len(prompt)} characters; a prompt may have at "
                                      f"most {MAX_PROMPT_CHARS}")
    answers = item.get("answers")
    if not isinstance(answers, dict):
        raise ConflictValidationError(f"{where}.answers: missing; give an object with one answer token "
                                      f"per task: {{\"{tasks[0]}\": ..., \"{tasks[1]}\": ...}}")
    extra = sorted(str(k)[:40] for k in set(answers) - set(tasks))
    if extra:
        raise ConflictValidationError(f"{where}.answers: unknown task(s) {extra[:5]}; give exactly "
                                      f"{tasks[0]} and {tasks[1]}")
    for task in tasks:
        if task not in answers:
            raise ConflictValidationError(f"{where}.answers.{task}: missing; give {task}'s answer token")
    parsed = {t: _answer(answers[t], f"{where}.answers.{t}") for t in tasks}
    if parsed[tasks[0]] == parsed[tasks[1]]:
        raise ConflictValidationError(f"{where}.answers: {tasks[0]} and {tasks[1]} both answer "
                                      f"{parsed[tasks[0]]!r}; a conflict prompt needs different answers")
    return ConflictPrompt(prompt, parsed)


def parse_conflicts(raw: Any, tasks: tuple[str, str], *,
                    where: str = "conflicts") -> tuple[ConflictPrompt, ...]:
    """Conflict prompts from their JSON form (a list of {prompt, answers}), answers in task order."""
    tasks = _pair(tasks)
    if not isinstance(raw, list):
        raise ConflictValidationError(f'{where}: must be a list of {{"prompt": ..., "answers": {{...}}}} '
                                      "objects")
    if not raw:
        raise ConflictValidationError(f"{where}: empty; give at least one prompt")
    if len(raw) > MAX_CONFLICTS:
        raise ConflictValidationError(f"{where}: {len(raw)} prompts; give at most {MAX_CONFLICTS}")
    return tuple(_parse_one(item, f"{where}[{i}]", tasks) for i, item in enumerate(raw))


def load_conflicts(path: Path, tasks: tuple[str, str]) -> tuple[ConflictPrompt, ...]:
    """Read and parse a conflict-prompt JSON file (errors name the file)."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConflictValidationError(f"conflict file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConflictValidationError(f"{path}: not valid JSON ({exc})") from None
    return parse_conflicts(raw, tasks, where=str(path))


def conflicts_to_json(prompts: Iterable[ConflictPrompt]) -> list[dict[str, Any]]:
    """The JSON form :func:`parse_conflicts` reads back."""
    return [{"prompt": p.prompt, "answers": dict(p.answers)} for p in prompts]


def conflicts_hash(prompts: Iterable[ConflictPrompt]) -> str:
    """sha256 of the prompts' canonical JSON: identifies the exact conflict set."""
    payload = json.dumps(conflicts_to_json(prompts), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


# --- against a tokenizer (torch-free) ----------------------------------------------------------


def _unknown(tokenizer, text: str) -> tuple[list[str], list[int]]:
    """The words of ``text`` the tokenizer maps to its unknown token, and the token ids."""
    encoding = tokenizer.encode(text, add_special_tokens=False)
    unk = getattr(tokenizer.model, "unk_token", None)
    unk_id = tokenizer.token_to_id(unk) if unk else None
    bad = [text[s:e] for t, (s, e) in zip(encoding.ids, encoding.offsets, strict=True)
           if unk_id is not None and t == unk_id and text[s:e] != unk]
    return bad, list(encoding.ids)


def check_tokenizes(prompts: Sequence[ConflictPrompt], tokenizer_json: Path, n_ctx: int, *,
                    where: str = "conflicts") -> None:
    """Known words, one-token answers that differ, and prompts that fit ``n_ctx`` with BOS."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_json))
    except Exception as exc:  # noqa: BLE001 - the model's files, reported with the cause
        raise ValueError(f"{tokenizer_json}: cannot load the model's tokenizer ({exc})") from None
    if not prompts:
        raise ConflictValidationError(f"{where}: empty; give at least one prompt")
    for i, p in enumerate(prompts):
        bad, ids = _unknown(tokenizer, p.prompt)
        if bad:
            raise ConflictValidationError(
                f"{where}[{i}].prompt: {bad[:5]} unknown to the model's tokenizer; use only words of "
                "its vocabulary (`circuits tasks show TASK` prints examples)")
        if not ids or len(ids) + 1 > n_ctx:
            raise ConflictValidationError(
                f"{where}[{i}].prompt: {len(ids)} tokens; with BOS it must fit the model's context of "
                f"{n_ctx}: give 1 to {n_ctx - 1} tokens")
        answer_ids = {}
        for task, answer in p.answers.items():
            bad, ids = _unknown(tokenizer, answer)
            field = f"{where}[{i}].answers.{task}"
            if len(ids) != 1:
                raise ConflictValidationError(f"{field}: {answer!r} is {len(ids)} tokens for this "
                                              "tokenizer; each answer must be exactly one token")
            if bad:
                raise ConflictValidationError(f"{field}: {answer!r} unknown to the model's tokenizer; "
                                              "use a word of its vocabulary")
            answer_ids[task] = ids[0]
        if len(set(answer_ids.values())) < len(answer_ids):
            raise ConflictValidationError(f"{where}[{i}].answers: the answers are the same token "
                                          f"{sorted(answer_ids.values())[0]}; give different tokens")
