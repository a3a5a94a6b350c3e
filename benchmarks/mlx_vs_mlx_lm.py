"""The MLX backend against mlx-lm itself, in one process: the same model object, LoRA, prompts,
pairs and sampling settings, the two sides interleaved over a few rounds, medians compared.

- Generation: `Backend.generate` on the product's arith generator prompts (`generator_messages`,
  numbers hidden, the few-shot examples rotated per sample as `generator.explore_examples` does:
  a handful of distinct openings) against mlx-lm's `batch_generate` given the same openings'
  prompt caches, built once (`make_prompt_cache` and a forward pass), with mlx-lm's sampler at the
  same temperature and top-p. Tokens/s, both warm (openings cached on both sides) and cold (the
  openings prefilled inside the timed call); also the backend with its prompt cache off, and with
  mlx-lm's top-p sampler instead of its own.
- Training: one Score-DPO optimiser step of the backend (`Backend.train`'s step, one prompt's pairs
  per pass) against mlx-lm's tuner (`mlx_lm.tuner.trainer.train`, its compiled step) doing the
  same forward and backward work on the same pairs the way a tuner loss does it: chosen and
  rejected as full rows, per-token log-probs from the full logits, the same loss formula and
  reference log-probs (precomputed, untimed on both sides). Pairs/s from each side's median step
  (the first step of each block, tracing and compiling, left out) and peak memory (MLX allocator).
  Also the backend's step through mx.compile.
- With --pytorch: the PyTorch-vs-MLX ratios of benchmarks/RESULTS.md measured again
  (`generation.py` and `dpo_step.py --backend mlx`, each in their own subprocesses).

Every ratio comes twice: by wall-clock time and by this process's CPU time (`ratio_cpu`). On a
machine whose other jobs take the cores, wall time includes the waiting; CPU time counts the work
(all of the process's threads).

    python benchmarks/mlx_vs_mlx_lm.py --out benchmarks/results/mlx-vs-mlx-lm.json --pytorch   # SmolLM2 (~40 min on 2 CPU cores)
    python benchmarks/mlx_vs_mlx_lm.py --small     # 4 prompts x 32 tokens, 1 pair x 2 steps per block (~15 min of CPU)
    python benchmarks/mlx_vs_mlx_lm.py --small --skip no-prompt-cache other-step   # only mlx-lm's sides against the backend
    python benchmarks/mlx_vs_mlx_lm.py --quick     # a tiny random model, seconds (the test)

Prints one JSON object (and writes it to --out).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_info, emit, last_json, today  # noqa: E402

# The MLX backend before anything imports mlx.core: on Linux it preloads OpenBLAS first.
from scoreflow.backends.mlx import MLXBackend, load  # noqa: E402

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
import mlx.optimizers as optim  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

from scoreflow.backends.mlx import train as _train  # noqa: E402
from scoreflow.backends.mlx.blas import preload  # noqa: E402
from scoreflow.backends.mlx.model import adapter_disabled  # noqa: E402
from scoreflow.model import training  # noqa: E402
from scoreflow.model.backend import LoraConfig, SamplingParams, TrainConfig, TrainPair  # noqa: E402

SIZES = {  # prompts (problems x k), new tokens, rounds; pairs per step, training rounds, steps per round
    "full": dict(problems=2, k=4, max_new_tokens=96, rounds=4, pairs=2, train_rounds=2, steps=3),
    "small": dict(problems=1, k=4, max_new_tokens=32, rounds=2, pairs=1, train_rounds=2, steps=2),
    "quick": dict(problems=1, k=3, max_new_tokens=8, rounds=1, pairs=1, train_rounds=1, steps=3),
}


def tiny_model(folder: Path) -> str:
    """A random 2-layer, hidden-64 Llama with SmolLM2's tokenizer, as an HF folder."""
    import numpy as np

    from scoreflow.model.source import embedded_gguf, gguf_tokenizer

    tok = gguf_tokenizer(str(embedded_gguf()))
    h, inter, kv, vocab = 64, 128, 32, len(tok)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": h,
           "intermediate_size": inter, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
           "vocab_size": vocab, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
           "tie_word_embeddings": True, "hidden_act": "silu", "torch_dtype": "float32"}
    rng = np.random.default_rng(0)
    w = {"model.embed_tokens.weight": rng.normal(0, 0.02, (vocab, h)), "model.norm.weight": np.ones(h)}
    shapes = {"self_attn.q_proj": (h, h), "self_attn.k_proj": (kv, h), "self_attn.v_proj": (kv, h),
              "self_attn.o_proj": (h, h), "mlp.gate_proj": (inter, h), "mlp.up_proj": (inter, h),
              "mlp.down_proj": (h, inter)}
    for i in range(2):
        w.update({f"model.layers.{i}.{k}.weight": rng.normal(0, 0.05, s) for k, s in shapes.items()})
        w.update({f"model.layers.{i}.{k}.weight": np.ones(h) for k in ("input_layernorm", "post_attention_layernorm")})
    folder.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(folder / "model.safetensors"), {k: mx.array(v.astype(np.float32)) for k, v in w.items()})
    (folder / "config.json").write_text(json.dumps(cfg))
    tok.save_pretrained(str(folder))
    return str(folder)


def lora_weights(b: MLXBackend, seed: int) -> dict[str, mx.array]:
    """Non-zero LoRA weights (a fresh LoRA's B is zero: the adapter would change nothing)."""
    mx.random.seed(seed)
    return {k: 0.02 * mx.random.normal(v.shape, dtype=v.dtype) for k, v in tree_flatten(b.model.trainable_parameters())}


def set_lora(b: MLXBackend, weights: dict[str, mx.array]) -> None:
    b.model.load_weights(list(weights.items()), strict=False)
    mx.eval(b.model.trainable_parameters())
    b.prompts.adapter_changed()


def arith_prompts(problems: int, k: int) -> list:
    """The optimisation's generator prompts: sample j of problem i sees the examples rotated by i + j."""
    from scoreflow.loop.prompts import generator_messages
    from scoreflow.tasks.arith import ArithTask

    task = ArithTask()
    ps = task.problems("validate")[:problems]
    return [generator_messages(task, p, True, i + j) for i, p in enumerate(ps) for j in range(k)]


def median_ratio(ours: list[float], theirs: list[float]) -> float:
    return statistics.median(ours) / statistics.median(theirs)


# -- generation ---------------------------------------------------------------------------------

class MlxLmGenerator:
    """mlx-lm's own batched generation of the same prompts: each prompt tokenized by its chat
    template, then batch_generate, given each distinct opening's prompt cache, built by mlx-lm's
    make_prompt_cache and a forward pass."""

    def __init__(self, b: MLXBackend, prompts: list, params: SamplingParams):
        from mlx_lm.sample_utils import make_sampler
        from mlx_lm.tokenizer_utils import TokenizerWrapper

        self.b, self.prompts, self.params = b, prompts, params
        self.tokenizer = TokenizerWrapper(b.tokenizer, eos_token_ids=b.fmt.stop_ids)
        self.sampler = make_sampler(temp=params.temperature, top_p=params.top_p)
        ids = [self.encode(m) for m in prompts]
        self.heads = [tuple(i[:b.fmt.context_length(m, i)]) for m, i in zip(prompts, ids)]
        self.caches: dict[tuple[int, ...], list] = {}

    def encode(self, messages: list) -> list[int]:
        return list(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True))

    def openings(self) -> None:
        from mlx_lm.models.cache import make_prompt_cache

        self.caches = {}
        for head in dict.fromkeys(self.heads):
            cache = make_prompt_cache(self.b.model)
            self.b.model(mx.array([list(head)]), cache=cache)
            mx.eval([c.state for c in cache])
            self.caches[head] = cache

    def __call__(self, cold: bool) -> int:
        """Generated tokens (stop tokens included, as the backend counts them)."""
        from mlx_lm.generate import batch_generate

        if cold or not self.caches:
            self.openings()
        tails = [self.encode(m)[len(h):] for m, h in zip(self.prompts, self.heads)]
        if self.params.seed is not None:
            mx.random.seed(self.params.seed)
        out = batch_generate(self.b.model, self.tokenizer, tails, prompt_caches=[self.caches[h] for h in self.heads],
                             max_tokens=self.params.max_new_tokens, sampler=self.sampler,
                             completion_batch_size=self.b.generation_batch_size,
                             prefill_batch_size=self.b.generation_batch_size)
        return out.stats.generation_tokens


def interleaved(sides: dict, rounds: int) -> dict[str, list[dict]]:
    """Each side timed once per round, the order reversed every other round."""
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for r in range(rounds):
        for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            mx.reset_peak_memory()
            t0, c0 = time.perf_counter(), time.process_time()
            tokens = sides[name]()
            secs, cpu = time.perf_counter() - t0, time.process_time() - c0
            runs[name].append({"tokens": tokens, "seconds": round(secs, 3), "cpu_seconds": round(cpu, 3),
                               "tokens_per_s": tokens / secs, "tokens_per_cpu_s": tokens / cpu,
                               "peak_mb": mx.get_peak_memory() / 2**20})
    return runs


def measure_generation(b: MLXBackend, prompts: list, params: SamplingParams, rounds: int,
                       no_cache: bool = True) -> dict:
    """Cold first (the openings prefilled inside the timed call, on both sides; the backend also
    without its prompt cache), once, as prefilling dominates it; the cold calls leave each side's
    openings cached. Then warm (the openings cached on both sides): the backend, mlx-lm, and the
    backend with the other top-p sampler, `rounds` times. no_cache False: not the backend without its
    prompt cache (where every prompt has its own opening it repeats the cold call)."""
    theirs = MlxLmGenerator(b, prompts, params)
    own_sampler = b.top_p_sampler
    other = "mlx-lm" if own_sampler == "top-64" else "top-64"

    def ours(cold: bool = False, cache: bool = True, sampler: str = own_sampler) -> int:
        b.prompts.enabled, b.top_p_sampler = cache, sampler
        if cold:
            b.prompts.adapter_changed()
        try:
            return sum(c.tokens for c in b.generate(prompts, params))
        finally:
            b.prompts.enabled, b.top_p_sampler = True, own_sampler

    b.generate(prompts[:1], params)  # warm-up: the kernels and the allocator, for both sides (one model)
    cold = {"ours_cold": lambda: ours(cold=True), "mlx_lm_cold": lambda: theirs(True)}
    if no_cache:
        cold["ours_no_prompt_cache"] = lambda: ours(cache=False)
    runs = interleaved(cold, 1)
    runs.update(interleaved({"ours": ours, "mlx_lm": lambda: theirs(False),
                             f"ours_{other}_sampler": lambda: ours(sampler=other)}, rounds))
    tps = {name: [x["tokens_per_s"] for x in rs] for name, rs in runs.items()}
    tpc = {name: [x["tokens_per_cpu_s"] for x in rs] for name, rs in runs.items()}
    return {
        "runs": runs,
        "tokens_per_s": {name: statistics.median(v) for name, v in tps.items()},
        "tokens_per_cpu_s": {name: statistics.median(v) for name, v in tpc.items()},
        "ratio": median_ratio(tps["ours"], tps["mlx_lm"]),
        "ratio_cpu": median_ratio(tpc["ours"], tpc["mlx_lm"]),
        "ratio_cold": median_ratio(tps["ours_cold"], tps["mlx_lm_cold"]),
        "ratio_cold_cpu": median_ratio(tpc["ours_cold"], tpc["mlx_lm_cold"]),
        "own_sampler": own_sampler,
        "own_sampler_speedup": median_ratio(tps["ours"], tps[f"ours_{other}_sampler"]),
        "own_sampler_speedup_cpu": median_ratio(tpc["ours"], tpc[f"ours_{other}_sampler"]),
        "peak_mb_ratio": statistics.median(x["peak_mb"] for x in runs["ours"])
        / statistics.median(x["peak_mb"] for x in runs["mlx_lm"]),
        "distinct_openings": len(set(theirs.heads)),
        "prompt_tokens": sorted({len(theirs.encode(m)) for m in prompts}),
        "opening_tokens": sorted({len(h) for h in theirs.heads}),
    } | ({"prompt_cache_speedup": median_ratio(tps["ours"], tps["ours_no_prompt_cache"]),
          "prompt_cache_speedup_cpu": median_ratio(tpc["ours"], tpc["ours_no_prompt_cache"])} if no_cache else {})


# -- training -----------------------------------------------------------------------------------

def make_pairs(b: MLXBackend, n: int) -> list[TrainPair]:
    """n pairs of one arith prompt (the order training sees), workflows from its few-shot examples."""
    from scoreflow.loop.prompts import generator_messages
    from scoreflow.tasks.arith import EXAMPLES, ArithTask

    task = ArithTask()
    msgs = generator_messages(task, task.problems("validate")[0], True, 0)
    flows = [f"<graph>\n{src}\n</graph>" for _, src in EXAMPLES]
    return [TrainPair(msgs, flows[i % 5], flows[(i + 2) % 5], 1.0 - 0.1 * i, 0.2 * i) for i in range(n)]


def score_dpo_tuner_loss(beta: float):
    """Score-DPO as a loss for mlx-lm's tuner: a batch of [chosen, rejected] full rows per pair,
    per-token log-probs from the full logits and masked to the completion (its default_loss's way)."""
    def loss(model, batch, lengths, ref, scores):
        inputs, targets = batch[:, :-1], batch[:, 1:]
        logits = model(inputs)
        steps = mx.arange(1, targets.shape[1] + 1)
        mask = mx.logical_and(steps >= lengths[:, 0:1], steps <= lengths[:, 1:])
        logp = (-nn.losses.cross_entropy(logits, targets) * mask).astype(mx.float32).sum(axis=1)
        w, l = logp[0::2], logp[1::2]
        margin = scores[:, 0] * beta * (w - ref[0::2]) - (1.0 - scores[:, 1]) * beta * (l - ref[1::2])
        return -nn.log_sigmoid(margin).mean(), mask.sum()

    return loss


def tuner_batches(plan: training.TrainPlan, ref: mx.array, pad_to: int = 32):
    """mlx-lm's iterate_batches signature: the plan's steps, in order, for ever, each batch padded as
    iterate_batches pads it (to one plus a multiple of 32), so the compiled step sees few shapes."""
    enc = plan.enc

    def iterate(dataset, batch_size, max_seq_length, loop=False, seed=None, comm_group=None):
        while True:
            for step in plan.steps:
                rows = [i for k in step for i in plan.index[k]]
                width = 1 + pad_to * -(-max(len(enc.seqs[i]) for i in rows) // pad_to)
                batch = mx.array([enc.seqs[i] + [0] * (width - len(enc.seqs[i])) for i in rows])
                lengths = mx.array([[enc.prompt_lens[i], len(enc.seqs[i])] for i in rows])
                scores = mx.array([[plan.pairs[k].score_chosen, plan.pairs[k].score_rejected] for k in step])
                yield batch, lengths, ref[mx.array(rows)], scores
            if not loop:
                return

    return iterate


def measure_training(b: MLXBackend, pairs_per_step: int, rounds: int, steps: int, tmp: Path,
                     other_step: bool = True) -> dict:
    """The backend's step against the tuner's; other_step: also the backend's step compiled if it is
    not, eager if it is."""
    from mlx_lm.tuner.callbacks import TrainingCallback
    from mlx_lm.tuner.trainer import TrainingArgs, train as tuner_train

    pairs = make_pairs(b, pairs_per_step * steps)
    cfg = TrainConfig(batch_size=pairs_per_step, learning_rate=1e-4, checkpoint_every=0)
    plan = training.TrainPlan.make(b.fmt, pairs, cfg)
    with adapter_disabled(b.model):
        got = _train.scored(b.model, plan.enc, range(len(plan.enc.seqs)), b.pad_id)
    ref = mx.array([got[i] for i in range(len(plan.enc.seqs))])
    start = lora_weights(b, 1)

    def ours(compiled: bool) -> tuple[list[float], list[float], float]:
        set_lora(b, start)
        cpu = []
        mx.reset_peak_memory()
        st = _train.train(b.model, b.fmt, b.pad_id, pairs, cfg, compiled=compiled,
                          on_step=lambda info: cpu.append(time.process_time()))
        return [h.seconds for h in st.history], cpu, mx.get_peak_memory() / 2**20

    class Times(TrainingCallback):
        def __init__(self):
            self.seconds: list[float] = []
            self.cpu: list[float] = []

        def on_train_loss_report(self, info: dict):
            self.seconds.append(1.0 / info["iterations_per_second"])
            self.cpu.append(time.process_time())

    def theirs() -> tuple[list[float], list[float], float]:
        set_lora(b, start)
        times = Times()
        args = TrainingArgs(batch_size=2 * pairs_per_step, iters=steps, steps_per_report=1, steps_per_eval=10**9,
                            steps_per_save=10**9, max_seq_length=10**6, adapter_file=str(tmp / "tuner.safetensors"))
        opt = optim.AdamW(learning_rate=cfg.learning_rate, weight_decay=0.0, bias_correction=True)
        mx.reset_peak_memory()
        with contextlib.redirect_stdout(sys.stderr):  # its progress display
            tuner_train(b.model, opt, [None] * (2 * len(pairs)), args=args, loss=score_dpo_tuner_loss(cfg.beta),
                        iterate_batches=tuner_batches(plan, ref), training_callback=times)
        b.model.eval()
        return times.seconds, times.cpu, mx.get_peak_memory() / 2**20

    sides = {"ours": lambda: ours(b.compiled_step), "mlx_lm_tuner": theirs}
    if other_step:
        sides[f"ours_{'eager' if b.compiled_step else 'compiled'}"] = lambda: ours(not b.compiled_step)
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for r in range(rounds):
        for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            secs, cpu, peak = sides[name]()
            runs[name].append({"step_seconds": [round(x, 3) for x in secs],
                               "step_cpu_seconds": [round(t1 - t0, 3) for t0, t1 in zip(cpu, cpu[1:])],  # from step 2
                               "peak_mb": peak})
    set_lora(b, start)

    def steady(name: str) -> list[float]:  # each block's first step traces, compiles and warms up
        return [s for x in runs[name] for s in (x["step_seconds"][1:] or x["step_seconds"])]

    pairs_per_s = {name: pairs_per_step / statistics.median(steady(name)) for name in runs}
    pairs_per_cpu_s = {name: pairs_per_step / statistics.median(s for x in rs for s in x["step_cpu_seconds"])
                       for name, rs in runs.items()}
    peak = {name: max(x["peak_mb"] for x in rs) for name, rs in runs.items()}
    other = next((n for n in runs if n.startswith("ours_")), None)
    tokens = {"ours": plan.enc.prompt_lens[0] + sum(plan.enc.completion_len(i) for i in plan.sequences(plan.steps[0])),
              "mlx_lm_tuner": sum(len(plan.enc.seqs[i]) for k in plan.steps[0] for i in plan.index[k])}
    return {
        "runs": runs, "pairs_per_s": pairs_per_s, "pairs_per_cpu_s": pairs_per_cpu_s, "peak_mb": peak,
        "first_step_s": {name: statistics.median(x["step_seconds"][0] for x in rs) for name, rs in runs.items()},
        "ratio": pairs_per_s["ours"] / pairs_per_s["mlx_lm_tuner"],
        "ratio_cpu": pairs_per_cpu_s["ours"] / pairs_per_cpu_s["mlx_lm_tuner"],
        "peak_mb_ratio": peak["ours"] / peak["mlx_lm_tuner"],
        "compiled_step": b.compiled_step, "tokens_per_step": tokens,
        "sequence_lengths": sorted({len(s) for s in plan.enc.seqs}), "prompt_tokens": plan.enc.prompt_lens[0],
    } | ({f"ratio_vs_{other}": pairs_per_s["ours"] / pairs_per_s[other],
          f"ratio_vs_{other}_cpu": pairs_per_cpu_s["ours"] / pairs_per_cpu_s[other]} if other else {})


# -- the PyTorch backend's ratios, by the existing benchmarks -------------------------------------

def pytorch_ratios(model: str | None) -> dict:
    here = Path(__file__).resolve().parent
    runs = {
        "generation": [sys.executable, str(here / "generation.py"), "--backend", "mlx", "--cases", "samples", "distinct"],
        "dpo_step": [sys.executable, str(here / "dpo_step.py"), "--backend", "mlx", "--only", "ours,mlx", "--steps", "3"],
    }
    out: dict = {}
    for name, cmd in runs.items():
        if model:
            cmd += ["--model", model]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
        if proc.returncode != 0:
            out[name] = {"error": proc.stderr[-2000:]}
            continue
        res = last_json(proc.stdout)
        mlx = res.get("mlx", {})
        if name == "generation":
            out[name] = {case: {"tokens_per_s": {"pytorch": res[case]["batched"]["tokens_per_s"],
                                                 "mlx": mlx[case]["tokens_per_s"]},
                                "mlx_vs_pytorch": mlx[case]["token_ratio_vs_torch_batched"]} for case in ("samples", "distinct")}
        else:
            out[name] = {"pairs_per_s": {"pytorch": res["ours"]["pairs_per_s"], "mlx": mlx["pairs_per_s"]},
                         "mlx_vs_pytorch": mlx["ratio_vs_torch"], "peak_mb_mlx_vs_pytorch": mlx["peak_mb_ratio_vs_torch"],
                         "median_step_s": {"pytorch": res["ours"].get("median_step_s"), "mlx": mlx.get("median_step_s")}}
        out[name]["command"] = " ".join(["python"] + cmd[1:]).replace(str(here.parent) + "/", "")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a tiny random model and tiny sizes (seconds)")
    size.add_argument("--small", action="store_true", help="fewer prompts, tokens, pairs and rounds (minutes)")
    ap.add_argument("--model", default=None, help="model spec (default: the embedded SmolLM2; --quick: a tiny random Llama)")
    ap.add_argument("--mlx-device", choices=["auto", "cpu", "gpu"], default="auto")
    ap.add_argument("--mlx-dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                    help="auto: bf16 on Metal (a quantized base stays quantized), fp32 on CPU")
    ap.add_argument("--batch-size", type=int, default=8, help="rows decoding at once, on both sides")
    ap.add_argument("--temperature", type=float, default=0.2)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", nargs="*", default=[], choices=["generation", "training", "no-prompt-cache", "other-step"],
                    help="parts left out; no-prompt-cache: the backend without its prompt cache; other-step: the "
                         "backend's step compiled (eager on Metal)")
    ap.add_argument("--pytorch", action="store_true", help="also the PyTorch-vs-MLX ratios (needs torch; ~15 min)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    a = ap.parse_args()
    sizes = SIZES["quick" if a.quick else "small" if a.small else "full"]
    import mlx_lm

    with tempfile.TemporaryDirectory() as tmp:
        spec = a.model or (tiny_model(Path(tmp) / "tiny") if a.quick else "smollm2-135m")
        b = load(spec, device=a.mlx_device, lora=LoraConfig(rank=8, alpha=16.0, dropout=0.0), seed=a.seed, dtype=a.mlx_dtype)
        b.generation_batch_size = a.batch_size
        result: dict = {
            "benchmark": "mlx_vs_mlx_lm", "date": today(), "device": device_info(), "mlx_device": b.device,
            "dtype": str(b.dtype).removeprefix("mlx.core."), "quantized": b.quantized,
            "model": "tiny random Llama" if a.quick and not a.model else spec,
            "versions": {"mlx": mx.__version__, "mlx_lm": mlx_lm.__version__},
            "openblas": preload(), "sizes": {**sizes, "batch_size": a.batch_size},
            "sampling": {"temperature": a.temperature, "top_p": a.top_p, "seed": a.seed},
            "command": " ".join(["python", "benchmarks/mlx_vs_mlx_lm.py", *sys.argv[1:]]),
        }
        set_lora(b, lora_weights(b, a.seed))
        if "generation" not in a.skip:
            params = SamplingParams(a.temperature, a.top_p, sizes["max_new_tokens"], ("</graph>",), seed=a.seed)
            result["generation"] = measure_generation(b, arith_prompts(sizes["problems"], sizes["k"]), params,
                                                      sizes["rounds"], "no-prompt-cache" not in a.skip)
        if "training" not in a.skip:
            result["training"] = measure_training(b, sizes["pairs"], sizes["train_rounds"], sizes["steps"], Path(tmp),
                                                  "other-step" not in a.skip)
    if a.pytorch:
        result["pytorch"] = pytorch_ratios(a.model)
    result["targets"] = {}  # of the parts measured
    if "generation" in result:
        result["targets"]["generation_ratio>=1.0"] = result["generation"]["ratio"] >= 1.0
    if "training" in result:
        result["targets"]["training_ratio>=1.0"] = result["training"]["ratio"] >= 1.0
        result["targets"]["training_peak<=mlx_lm"] = result["training"]["peak_mb_ratio"] <= 1.0
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    emit(result)


if __name__ == "__main__":
    main()
