"""``circuits compete`` and ``circuits experiments list|show``: competition experiments over REST.

``compete`` checks its arguments here first (two or more tasks, one circuit id per task, at most
:data:`MAX_ALPHAS` alphas, a conflict file that parses and tokenizes with the model's tokenizer), so
a typo costs no queue slot; then POSTs the ExperimentSpec to ``/v1/experiments``, and with
``--wait`` follows the job with a progress bar, reads the experiment back and writes its report.
The API URL and key come from ``--api`` / ``--key`` or the settings (``ATLAS_API_URL``,
``ATLAS_API_KEY``), as for ``circuits submit``. Torch-free."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.cli.jobs import TERMINAL, _detail
from api.cli.tables import table
from api.ops.process import ServiceError

#: Longest alpha grid a spec may carry (each alpha costs a forward pass per prompt and pair).
MAX_ALPHAS = 12
MIN_CONTROLS = 20
DEFAULT_ALPHAS = "0,0.5,1,1.5,2,4"


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("compete", help="run a competition experiment between task circuits (REST)")
    c.add_argument("--model", required=True, help="shipped model name, e.g. multitask")
    c.add_argument("--tasks", required=True, help="two or more comma-separated tasks, e.g. ioi,induction "
                   "(built-in names or custom-task JSON files)")
    c.add_argument("--circuits", help="stored circuit ids, one per task in --tasks order "
                   "(default: discover them in the job)")
    c.add_argument("--ablation", default="corrupt", choices=["corrupt", "mean", "zero"])
    c.add_argument("--n-prompts", type=int, default=50, help="prompt pairs per built-in task")
    c.add_argument("--n-controls", type=int, default=20, help=f"random sets per ablation (>= {MIN_CONTROLS})")
    c.add_argument("--n-conflicts", type=int, default=50, help="conflict prompts per pair (built-in)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--alphas", default=DEFAULT_ALPHAS, help=f"dose-response grid, at most {MAX_ALPHAS}")
    c.add_argument("--conflicts", type=Path, metavar="FILE", help="custom conflict prompts: a JSON list "
                   "(two tasks) or {\"a|b\": list}; items {\"prompt\", \"answers\": {task: token}}")
    c.add_argument("--method", default="acdc", help="discovery method for circuits not given")
    c.add_argument("--threshold", type=float, default=0.01)
    c.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    c.add_argument("--wait", action="store_true", help="follow the job, print the tables, write the report")
    c.add_argument("--out", type=Path, default=Path("."), help="where --wait writes experiment-<id>.*")
    _rest_args(c)
    c.set_defaults(handler=run_compete)

    e = sub.add_parser("experiments", help="stored competition experiments (REST)")
    actions = e.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser("list", help="list stored experiments")
    for name in ("model", "task", "circuit"):
        ls.add_argument(f"--{name}")
    ls.add_argument("--offset", type=int, default=0)
    ls.add_argument("--limit", type=int, default=20)
    ls.add_argument("--json", action="store_true", help="print JSON")
    _rest_args(ls)
    ls.set_defaults(handler=run_list)
    sh = actions.add_parser("show", help="print one experiment's tables (and write its report)")
    sh.add_argument("id")
    sh.add_argument("--out", type=Path, help="also write experiment-<id>.png, .md and .json here")
    _rest_args(sh)
    sh.set_defaults(handler=run_show)


def _rest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api", metavar="URL", help="API base URL (default ATLAS_API_URL)")
    p.add_argument("--key", metavar="KEY", help="API key (default ATLAS_API_KEY)")


@dataclass(frozen=True)
class Rest:
    """The API at ``base_url`` with ``key``; every failure becomes one clear line."""

    base_url: str
    key: str

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Rest:
        from workers.settings import get_settings

        settings = get_settings()
        return cls((args.api or settings.base_url).rstrip("/"),
                   args.key or settings.api_key.get_secret_value())

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx  # here, not at import: `circuits --help` stays fast

        with httpx.Client(base_url=self.base_url, timeout=30, headers={"X-API-Key": self.key}) as client:
            try:
                response = client.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise ServiceError(f"cannot reach the API at {self.base_url} ({exc}); start it with "
                                   "`circuits api` or pass --api URL") from None
        if response.status_code >= 400:
            raise ServiceError(f"the API answered {response.status_code}: {_detail(response)}")
        if response.status_code == 204:  # a delete: nothing to read
            return None
        try:
            return response.json()
        except ValueError:
            raise ServiceError(f"the API answered {response.status_code} with no JSON") from None


def parse_tasks(text: str) -> list[str]:
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if len(tasks) < 2:
        raise ValueError(f"--tasks: give two or more tasks, comma-separated, e.g. --tasks ioi,induction "
                         f"(got {text!r})")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"--tasks: each task once (got {text!r})")
    return tasks


def parse_alphas(text: str) -> list[float]:
    try:
        alphas = [float(a) for a in text.split(",") if a.strip()]
    except ValueError:
        raise ValueError(f"--alphas: comma-separated numbers, e.g. {DEFAULT_ALPHAS} (got {text!r})") from None
    if not alphas or not all(math.isfinite(a) for a in alphas):
        raise ValueError(f"--alphas: one or more finite numbers, e.g. {DEFAULT_ALPHAS} (got {text!r})")
    if len(alphas) > MAX_ALPHAS:
        raise ValueError(f"--alphas: at most {MAX_ALPHAS} values (got {len(alphas)}); use a coarser grid, "
                         f"e.g. {DEFAULT_ALPHAS}")
    return alphas


def parse_circuits(text: str | None, tasks: list[str]) -> list[str] | None:
    if text is None:
        return None
    ids = [c.strip() for c in text.split(",") if c.strip()]
    if len(ids) != len(tasks):
        raise ValueError(f"--circuits: one stored circuit id per task in --tasks order ({len(tasks)} tasks, "
                         f"got {len(ids)} ids); `circuits list --model ...` shows them")
    return ids


def _task_value(task: str) -> Any:
    """A built-in name as it is; a custom-task JSON file read (as ``circuits submit`` does)."""
    if not task.endswith(".json"):
        return task
    path = Path(task)
    if not path.is_file():
        raise ValueError(f"--tasks: {task}: no such file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"--tasks: {task} is not JSON (line {exc.lineno}: {exc.msg})") from None


def _task_name(value: Any) -> str:
    from discovery.tasks.custom import custom_name

    return value if isinstance(value, str) else custom_name(value.get("name"))


def load_conflicts(path: Path, tasks: list[str], model: str) -> dict[str, list]:
    """The conflict file as the spec's ``{"a|b": [...]}``, parsed and tokenized here first."""
    where = f"--conflicts {path}"
    if not path.is_file():
        raise ValueError(f"{where}: no such file")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not JSON (line {exc.lineno}: {exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where}: cannot read it ({exc})") from None
    plain = isinstance(raw, list)
    if plain:
        if len(tasks) != 2:
            raise ValueError(f"{where}: a plain list fits a two-task experiment; with {len(tasks)} tasks "
                             'write {"<a>|<b>": [...]} per pair')
        raw = {f"{tasks[0]}|{tasks[1]}": raw}
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f'{where}: write a list of {{"prompt", "answers"}} or {{"<a>|<b>": list}}')
    out: dict[str, list] = {}
    for key, prompts in raw.items():
        pair = _pair_of(key, tasks, where)
        _check_prompts(prompts, pair, model,
                       where=f"{where}: conflicts" if plain else f"{where}: conflicts[{key!r}]")
        out[f"{pair[0]}|{pair[1]}"] = prompts
    return out


def _pair_of(key: str, tasks: list[str], where: str) -> tuple[str, str]:
    """``a|b`` (either order) as the experiment's pair, in the order of ``--tasks``."""
    names = str(key).split("|")
    if len(names) != 2 or not all(n in tasks for n in names) or names[0] == names[1]:
        raise ValueError(f"{where}: key {key!r} is not a pair of --tasks; write \"<a>|<b>\" with two of "
                         f"{', '.join(tasks)}")
    a, b = sorted(names, key=tasks.index)
    return a, b


def _check_prompts(prompts: Any, pair: tuple[str, str], model: str, *, where: str) -> None:
    from discovery.experiments.conflicts import check_tokenizes, parse_conflicts

    parsed = parse_conflicts(prompts, pair, where=where)
    found = _tokenizer(model)
    if found is not None:
        check_tokenizes(parsed, found[0], found[1], where=where)


def _tokenizer(model: str) -> tuple[Path, int] | None:
    """(tokenizer.json, n_ctx) of a shipped model or a local model directory; None otherwise
    (the worker checks then)."""
    from discovery.catalog import shipped_models

    path = shipped_models().get(model) or Path(model)
    tok, config = path / "tokenizer.json", path / "config.json"
    if not (tok.is_file() and config.is_file()):
        return None
    cfg = json.loads(config.read_text())
    n_ctx = cfg.get("n_ctx") or cfg.get("n_positions") or cfg.get("max_position_embeddings")
    return (tok, int(n_ctx)) if n_ctx else None


def build_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The ExperimentSpec JSON from the arguments, checked flag by flag, then as the API checks it
    (:class:`workers.experimentspec.ExperimentSpec`, torch-free): only what needs the graph store
    (do the circuit ids exist, are they of this model and task) is left to the API."""
    spec = _spec(args)
    _validate(spec)
    return spec


def _validate(spec: dict[str, Any]) -> None:
    """The API's own model on the spec; its first error as one line naming the flag."""
    from pydantic import ValidationError

    from workers.experimentspec import ExperimentSpec

    try:
        ExperimentSpec.model_validate(spec)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "--" + str(first["loc"][0]).replace("_", "-") if first["loc"] else "the experiment"
        raise ValueError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None


def _spec(args: argparse.Namespace) -> dict[str, Any]:
    values = [_task_value(t) for t in parse_tasks(args.tasks)]
    names = []
    for given, value in zip(parse_tasks(args.tasks), values, strict=True):
        try:
            names.append(_task_name(value))
        except (ValueError, AttributeError) as exc:
            raise ValueError(f"--tasks: {given}: {exc}") from None
    if args.n_controls < MIN_CONTROLS:
        raise ValueError(f"--n-controls: at least {MIN_CONTROLS} random sets (got {args.n_controls})")
    for flag, value in (("--n-prompts", args.n_prompts), ("--n-conflicts", args.n_conflicts)):
        if value < 1:
            raise ValueError(f"{flag}: at least 1 (got {value})")
    return {"model": args.model, "tasks": values, "circuits": parse_circuits(args.circuits, names),
            "ablation": args.ablation, "n_prompts": args.n_prompts, "n_controls": args.n_controls,
            "seed": args.seed, "alphas": parse_alphas(args.alphas), "n_conflicts": args.n_conflicts,
            "conflicts": None if args.conflicts is None else load_conflicts(args.conflicts, names, args.model),
            "method": args.method, "threshold": args.threshold, "device": args.device}


def follow(rest: Rest, job_id: str, poll_s: float = 0.5, unit: str = "passes") -> dict:
    """Poll the job to its end with a bar: stage, percent and ETA as the server reports them
    (``done``/``total`` counted in ``unit``)."""
    from tqdm import tqdm

    with tqdm(total=100, unit="%", file=sys.stderr, bar_format="{desc} {bar} {n:.0f}% {postfix}") as bar:
        while True:
            job = rest.call("GET", f"/v1/jobs/{job_id}")
            p = job.get("progress") or {}
            bar.set_description_str(f"{job['state']}: {p.get('stage') or ''}")
            done = f"{p['done']}/{p['total']} {unit}" if p.get("total") else ""
            eta = p.get("eta_s")
            bar.set_postfix_str(f"{done} ETA {eta:.0f}s" if eta is not None else done)
            bar.n = p.get("percent") or 0
            bar.refresh()
            if job["state"] in TERMINAL:
                return job
            time.sleep(poll_s)


def _fetch(rest: Rest, experiment_id: str):  # noqa: ANN202 - Experiment
    from api.cli.report import as_experiment

    data = rest.call("GET", f"/v1/experiments/{experiment_id}")
    try:
        return as_experiment(data)
    except ValueError as exc:
        raise ServiceError(f"experiment {experiment_id}: the API sent {exc}") from None


def _show(exp: Any, out: Path | None) -> None:
    from api.cli.report import headline, write_report

    print(headline(exp))
    if out is not None:
        written = write_report(exp, out)
        print("\nwrote " + ", ".join(str(p) for p in written.values()))


def run_compete(args: argparse.Namespace) -> int:
    spec = build_spec(args)
    rest = Rest.from_args(args)
    job = rest.call("POST", "/v1/experiments", json=spec)
    print(f"submitted experiment job {job['id']} ({', '.join(map(_task_name, spec['tasks']))} on "
          f"{spec['model']})", flush=True)
    if not args.wait:
        print(f"follow it with `circuits jobs {job['id']}`; then `circuits experiments show "
              f"{job['id']} --out DIR`")
        return 0
    job = follow(rest, job["id"])
    if job["state"] != "succeeded":
        print(f"error: experiment job {job['id']} {job['state']}: {job.get('error') or 'no error given'}",
              file=sys.stderr)
        return 1
    _show(_fetch(rest, job.get("result_id") or job["id"]), args.out)
    return 0


def run_show(args: argparse.Namespace) -> int:
    _show(_fetch(Rest.from_args(args), args.id), args.out)
    return 0


def run_list(args: argparse.Namespace) -> int:
    params = {k: v for k, v in (("model", args.model), ("task", args.task), ("circuit", args.circuit),
                                ("offset", args.offset), ("limit", args.limit)) if v is not None}
    page = Rest.from_args(args).call("GET", "/v1/experiments", params=params)
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    rows = [[e["id"], e["model"], ",".join(e["tasks"]), e["ablation"], e["seed"], e["n_controls"],
             "; ".join(f"{p['pair']}: competes {p['competes']}, cooperates {p['cooperates']}"
                       for p in e.get("pairs", [])), (e.get("created_at") or "")[:19]]
            for e in page["experiments"]]
    print(table(["id", "model", "tasks", "ablation", "seed", "controls", "pairs", "created"], rows))
    print(f"({len(rows)} of {page['total']} experiments)")
    return 0
