"""Engine benchmark (issue #2): this NumPy engine vs PyTorch (CPU) vs scikit-learn.

A script, not a test. Every case runs in this one process on the same data and architecture,
and the references are measured in the same run, interleaved with the engine, so that a
machine shared with other work slows all of them alike. Each figure is the best of
``--repeats`` runs.

- B1: 784-256-256-10 relu/softmax, 60,000 synthetic float32 samples, batch 128, one epoch of
  plain SGD; also the rate of NumPy's own float32 matmul at the training's shapes and at a
  large square shape.
- B2: the seed's 2-2-2 sigmoid network (API.md §2 initial weights), MSE, online SGD (batch
  1), 5,000 steps, float64.
- B3: scikit-learn's digits, 64-128-10 relu/softmax, batch 32, 50 epochs, SGD with momentum;
  held-out accuracy of both.
- Memory: B1 for 3 epochs in a child process (``--memory-child``): RSS after each epoch and
  the peak (``ru_maxrss``).

Prints a table and writes ``bench/results/engine.json``. ``--profile`` adds a cProfile of one
B1 epoch of the engine. Run as ``python bench/engine.py`` (``make bench-engine``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import threadpoolctl

from core.engine import Network

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script
from bench.machine import machine_basics  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

B1_SAMPLES = 60_000
B1_LAYERS = (784, 256, 256, 10)
B1_BATCH = 128
B1_LR = 0.01
B2_STEPS = 5_000
B3_EPOCHS = 50
B3_BATCH = 32
B3_LR = 0.01
B3_MOMENTUM = 0.9

# The seed article's network (API.md §2), as the example users run has it.
SEED_NETWORK: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "examples" / "seed" / "network.json").read_text()
)


# -- helpers ------------------------------------------------------------------------------


def best_of(repeats: int, fn: Callable[[], Any]) -> tuple[float, list[float], Any]:
    """Run ``fn`` ``repeats`` times; (best seconds, all seconds, last result)."""
    times: list[float] = []
    result: Any = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), times, result


def blas_threads() -> int:
    """Threads of NumPy's BLAS, as threadpoolctl reports them."""
    for pool in threadpoolctl.threadpool_info():
        if pool["user_api"] == "blas" and "numpy" in pool["filepath"]:
            return int(pool["num_threads"])
    return 1


def machine_info() -> dict[str, Any]:
    import sklearn
    import torch

    return {
        **machine_basics(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "sklearn": sklearn.__version__,
        "threadpools": [
            {
                k: p.get(k)
                for k in (
                    "user_api",
                    "internal_api",
                    "version",
                    "num_threads",
                    "architecture",
                    "prefix",
                )
            }
            for p in threadpoolctl.threadpool_info()
        ],  # fmt: skip
        "torch_blas": "MKL" if torch.backends.mkl.is_available() else "?",
        "env_OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "env_OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
    }


def relu_softmax_spec(sizes: tuple[int, ...]) -> dict[str, Any]:
    layers = [{"units": u, "activation": "relu"} for u in sizes[1:-1]]
    layers.append({"units": sizes[-1], "activation": "softmax"})
    return {"input_dim": sizes[0], "layers": layers, "init": "he_uniform"}


def b1_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic float32 inputs in [0, 1) and random class labels (MNIST-shaped)."""
    rng = np.random.default_rng(seed)
    X = rng.random((B1_SAMPLES, B1_LAYERS[0]), dtype=np.float32)
    y = rng.integers(0, B1_LAYERS[-1], B1_SAMPLES)
    return X, y


def b1_training(epochs: int = 1) -> dict[str, Any]:
    return {
        "loss": "categorical_crossentropy",
        "optimizer": {"name": "sgd", "learning_rate": B1_LR, "momentum": 0.0},
        "epochs": epochs,
        "batch_size": B1_BATCH,
        "shuffle": False,
        "dtype": "float32",
    }


# -- B1 -----------------------------------------------------------------------------------


def b1_engine(X: np.ndarray, y: np.ndarray) -> float:
    net = Network.from_spec(relu_softmax_spec(B1_LAYERS), seed=0, dtype="float32")
    history = net.fit(X, y, b1_training())
    return float(history[-1]["loss"])


def b1_torch(X: np.ndarray, y: np.ndarray) -> float:
    import torch

    torch.manual_seed(0)
    a, h1, h2, k = B1_LAYERS
    model = torch.nn.Sequential(
        torch.nn.Linear(a, h1), torch.nn.ReLU(),
        torch.nn.Linear(h1, h2), torch.nn.ReLU(),
        torch.nn.Linear(h2, k),
    )  # fmt: skip
    loss_fn = torch.nn.CrossEntropyLoss()  # log-softmax + NLL: the fused form
    opt = torch.optim.SGD(model.parameters(), lr=B1_LR, momentum=0.0)
    Xt = torch.from_numpy(X)
    yt = torch.from_numpy(y)
    total = 0.0
    n_batches = 0
    for start in range(0, X.shape[0], B1_BATCH):
        xb = Xt[start : start + B1_BATCH]
        yb = yt[start : start + B1_BATCH]
        loss = loss_fn(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item()
        n_batches += 1
    return total / n_batches


def b1_sklearn(X: np.ndarray, y: np.ndarray) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(
        hidden_layer_sizes=B1_LAYERS[1:-1],
        activation="relu",
        solver="sgd",
        batch_size=B1_BATCH,
        max_iter=1,
        learning_rate_init=B1_LR,
        momentum=0.0,
        nesterovs_momentum=False,
        shuffle=False,
        alpha=0.0,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    return float(clf.loss_)


def b1_matmul_plan(n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The matmuls of one training step at batch ``n``, with the operand layouts the engine
    uses (``x.T @ d`` for dW, ``d @ W.T`` for dx); dx of the first layer is included so that
    the FLOPs are exactly ``6 * n * sum(inputs * units)``."""
    rng = np.random.default_rng(1)
    f32 = np.float32
    plan = []
    sizes = B1_LAYERS
    acts = [rng.random((n, s), dtype=f32) for s in sizes]
    for i in range(len(sizes) - 1):
        W = rng.random((sizes[i], sizes[i + 1]), dtype=f32)
        dW = np.empty_like(W)
        z = np.empty((n, sizes[i + 1]), f32)
        dx = np.empty((n, sizes[i]), f32)
        d = acts[i + 1]
        plan.append((acts[i], W, z))  # forward: x @ W
        plan.append((acts[i].T, d, dW))  # dW = x.T @ d
        plan.append((d, W.T, dx))  # dx = d @ W.T
    return plan


def numpy_rate_same_shapes(samples: int, repeats: int) -> tuple[float, float]:
    """(best seconds, GFLOP/s) for one epoch's worth of the training's matmuls."""
    plan = b1_matmul_plan(B1_BATCH)
    n_batches = samples // B1_BATCH
    flops = 6.0 * n_batches * B1_BATCH * _b1_sum()

    def epoch() -> None:
        for _ in range(n_batches):
            for a, b, out in plan:
                np.matmul(a, b, out=out)

    epoch()  # warm up
    best, _, _ = best_of(repeats, epoch)
    return best, flops / best / 1e9


def numpy_rate_square(size: int = 2048, repeats: int = 5) -> float:
    rng = np.random.default_rng(2)
    a = rng.random((size, size), dtype=np.float32)
    b = rng.random((size, size), dtype=np.float32)
    out = np.empty_like(a)
    np.matmul(a, b, out=out)
    best, _, _ = best_of(repeats, lambda: np.matmul(a, b, out=out))
    return 2.0 * size**3 / best / 1e9


def _b1_sum() -> int:
    return sum(a * b for a, b in zip(B1_LAYERS[:-1], B1_LAYERS[1:], strict=True))


# -- B2 -----------------------------------------------------------------------------------


def b2_data() -> tuple[np.ndarray, np.ndarray]:
    """The seed sample first, then random inputs/targets in (0, 1): 5,000 rows."""
    rng = np.random.default_rng(3)
    X = rng.random((B2_STEPS, 2))
    Y = rng.uniform(0.01, 0.99, (B2_STEPS, 2))
    X[0] = [0.05, 0.10]
    Y[0] = [0.01, 0.99]
    return X, Y


def b2_engine(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    net = Network.from_spec(SEED_NETWORK, dtype="float64")
    net.fit(
        X,
        Y,
        {
            "loss": "mse",
            "optimizer": {"name": "sgd", "learning_rate": 0.5},
            "epochs": 1,
            "batch_size": 1,
            "shuffle": False,
            "dtype": "float64",
        },
    )
    return net.weights[0]["W"]


def b2_torch(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    import torch

    model = torch.nn.Sequential(
        torch.nn.Linear(2, 2), torch.nn.Sigmoid(), torch.nn.Linear(2, 2), torch.nn.Sigmoid()
    ).double()
    with torch.no_grad():
        for lin, given in zip((model[0], model[2]), SEED_NETWORK["initial_weights"], strict=True):
            # torch's weight is (out, in): the transpose of API.md's W.
            lin.weight.copy_(torch.tensor(given["W"], dtype=torch.float64).T)
            lin.bias.copy_(torch.tensor(given["b"], dtype=torch.float64))
    loss_fn = torch.nn.MSELoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    Xt = torch.from_numpy(X)
    Yt = torch.from_numpy(Y)
    for i in range(X.shape[0]):
        out = model(Xt[i : i + 1])
        loss = loss_fn(out, Yt[i : i + 1])
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model[0].weight.detach().numpy().T.copy()


# -- B3 -----------------------------------------------------------------------------------


def b3_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    X = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    return tuple(train_test_split(X, y, test_size=0.25, random_state=0, stratify=y))  # type: ignore[return-value]


def b3_engine(Xtr, Xte, ytr, yte) -> float:  # type: ignore[no-untyped-def]
    net = Network.from_spec(relu_softmax_spec((64, 128, 10)), seed=0, dtype="float32")
    net.fit(
        Xtr,
        ytr,
        {
            "loss": "categorical_crossentropy",
            "optimizer": {"name": "sgd", "learning_rate": B3_LR, "momentum": B3_MOMENTUM},
            "epochs": B3_EPOCHS,
            "batch_size": B3_BATCH,
            "shuffle": True,
            "seed": 0,
            "dtype": "float32",
        },
    )
    return float(np.mean(np.argmax(net.predict(Xte), axis=1) == yte))


def b3_sklearn(Xtr, Xte, ytr, yte) -> float:  # type: ignore[no-untyped-def]
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(
        hidden_layer_sizes=(128,),
        activation="relu",
        solver="sgd",
        batch_size=B3_BATCH,
        max_iter=B3_EPOCHS,
        learning_rate_init=B3_LR,
        momentum=B3_MOMENTUM,
        nesterovs_momentum=False,
        shuffle=True,
        alpha=0.0,
        tol=0.0,
        n_iter_no_change=B3_EPOCHS + 1,  # never stop early: exactly 50 epochs
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(Xtr, ytr)
    return float(clf.score(Xte, yte))


# -- memory (child process) -------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def memory_child(epochs: int) -> dict[str, Any]:
    """B1 for ``epochs`` epochs in this (fresh) process; RSS figures in bytes."""
    rss_start = rss_bytes()
    X, y = b1_data()
    rss_data = rss_bytes()
    net = Network.from_spec(relu_softmax_spec(B1_LAYERS), seed=0, dtype="float32")
    per_epoch: list[int] = []
    net.fit(X, y, b1_training(epochs), callback=lambda item: per_epoch.append(rss_bytes()))
    # VmHWM is this process image's own high-water mark; ru_maxrss would also count the
    # parent's RSS at fork time (Linux keeps it across execve).
    peak = max(_status_kib("VmHWM") * 1024, rss_bytes(), *per_epoch)
    ru_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    weights = net._params.nbytes
    return {
        "rss_start": rss_start,
        "rss_after_data": rss_data,
        "rss_after_epoch": per_epoch,
        "peak_rss": peak,
        "ru_maxrss_incl_parent_at_fork": ru_maxrss,
        "dataset_bytes": X.nbytes + y.nbytes,
        "weights_bytes": weights,
    }


def run_memory(epochs: int = 3) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(epochs)],
        check=True,
        capture_output=True,
        text=True,
    )
    mem = json.loads(out.stdout.strip().splitlines()[-1])
    budget = 1.5 * (mem["dataset_bytes"] + mem["weights_bytes"]) + 100 * 2**20
    per = mem["rss_after_epoch"]
    mem["budget_bytes"] = budget
    mem["growth_epoch1_to_last"] = per[-1] - per[0]
    return mem


# -- the run ------------------------------------------------------------------------------


def profile_b1(X: np.ndarray, y: np.ndarray, top: int = 15) -> str:
    prof = cProfile.Profile()
    prof.enable()
    b1_engine(X, y)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="best of N (default 3)")
    parser.add_argument(
        "--threads", type=int, default=0, help="BLAS and torch threads (default: NumPy's BLAS)"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile one B1 engine epoch")
    parser.add_argument("--skip", default="", help="comma-separated cases to skip: b1,b2,b3,mem")
    parser.add_argument("--out", type=Path, default=RESULTS / "engine.json")
    parser.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child)))
        return

    import torch

    limiter = threadpoolctl.threadpool_limits(args.threads) if args.threads else None
    threads = blas_threads()
    torch.set_num_threads(threads)
    info = machine_info()
    info["numpy_blas_threads"] = threads
    info["torch_threads"] = torch.get_num_threads()
    skip = set(filter(None, args.skip.split(",")))
    results: dict[str, Any] = {"machine": info, "repeats": args.repeats, "cases": {}}
    results["argv"] = sys.argv[1:]
    rows: list[tuple[str, str, str, str]] = []
    reps = args.repeats

    if "b1" not in skip:
        X, y = b1_data()
        for fn in (b1_engine, b1_torch, b1_sklearn):  # warm-up: imports, first-touch pages
            fn(X[:2048], y[:2048])
        times: dict[str, list[float]] = {"engine": [], "torch": [], "sklearn": [], "numpy": []}
        losses: dict[str, float] = {}
        for _ in range(reps):  # interleaved, so that background load hits all alike
            for name, fn in (("engine", b1_engine), ("torch", b1_torch), ("sklearn", b1_sklearn)):
                t, _, loss = best_of(1, lambda fn=fn: fn(X, y))
                times[name].append(t)
                losses[name] = loss
            t_np, _ = numpy_rate_same_shapes(B1_SAMPLES, 1)
            times["numpy"].append(t_np)
        best = {k: min(v) for k, v in times.items()}
        flops = 6.0 * B1_SAMPLES * _b1_sum()
        square = numpy_rate_square()
        engine_rate = flops / best["engine"] / 1e9
        # The NumPy reference runs only whole batches (468 x 128 = 59,904 samples).
        same_rate = 6.0 * (B1_SAMPLES // B1_BATCH) * B1_BATCH * _b1_sum() / best["numpy"] / 1e9
        case = {
            "data": "synthetic: uniform [0,1) float32 inputs, uniform random labels",
            "samples": B1_SAMPLES,
            "flops_per_epoch": flops,
            "seconds": times,
            "best_s": best,
            "final_loss": losses,
            "engine_vs_torch": best["engine"] / best["torch"],
            "engine_vs_sklearn": best["engine"] / best["sklearn"],
            "median_paired_ratio_torch": _median_ratio(times["engine"], times["torch"]),
            "median_paired_ratio_sklearn": _median_ratio(times["engine"], times["sklearn"]),
            "engine_gflops": engine_rate,
            "numpy_gflops_same_shapes": same_rate,
            "numpy_gflops_square_2048": square,
            "engine_frac_of_numpy_same_shapes": engine_rate / same_rate,
            "engine_frac_of_numpy_square": engine_rate / square,
        }
        results["cases"]["B1"] = case
        frac = case["engine_frac_of_numpy_same_shapes"]
        rows += [
            ("B1 engine / PyTorch (time)", f"{case['engine_vs_torch']:.2f}x", "<= 0.80x",
             _met(case["engine_vs_torch"] <= 0.8)),
            ("B1 engine / sklearn (time)", f"{case['engine_vs_sklearn']:.2f}x", "<= 0.80x",
             _met(case["engine_vs_sklearn"] <= 0.8)),
            ("B1 engine rate / NumPy same shapes",
             f"{frac:.0%}", ">= 65%", _met(frac >= 0.65)),
            ("B1 engine rate / NumPy 2048^2", f"{case['engine_frac_of_numpy_square']:.0%}",
             "(info)", ""),
        ]  # fmt: skip
        if args.profile:
            case["profile"] = profile_b1(X, y)
        del X, y

    if "b2" not in skip:
        X2, Y2 = b2_data()
        b2_engine(X2[:100], Y2[:100])
        b2_torch(X2[:100], Y2[:100])
        t2: dict[str, list[float]] = {"engine": [], "torch": []}
        w: dict[str, np.ndarray] = {}
        for _ in range(max(reps, 5)):
            for name, fn in (("engine", b2_engine), ("torch", b2_torch)):
                t, _, w[name] = best_of(1, lambda fn=fn: fn(X2, Y2))
                t2[name].append(t)
        per_step = {k: min(v) / B2_STEPS for k, v in t2.items()}
        case = {
            "steps": B2_STEPS,
            "seconds": t2,
            "per_step_us": {k: v * 1e6 for k, v in per_step.items()},
            "engine_vs_torch": per_step["engine"] / per_step["torch"],
            "median_paired_ratio_torch": _median_ratio(t2["engine"], t2["torch"]),
            "max_weight_diff": float(np.max(np.abs(w["engine"] - w["torch"]))),
        }
        results["cases"]["B2"] = case
        rows.append(("B2 engine / PyTorch (per step)", f"{case['engine_vs_torch']:.3f}x",
                     "<= 0.15x", _met(case["engine_vs_torch"] <= 0.15)))  # fmt: skip

    if "b3" not in skip:
        data3 = b3_data()
        b3_engine(*data3)
        b3_sklearn(*data3)
        t3: dict[str, list[float]] = {"engine": [], "sklearn": []}
        acc: dict[str, float] = {}
        for _ in range(reps):
            for name, fn in (("engine", b3_engine), ("sklearn", b3_sklearn)):
                t, _, acc[name] = best_of(1, lambda fn=fn: fn(*data3))
                t3[name].append(t)
        best3 = {k: min(v) for k, v in t3.items()}
        case = {
            "train_samples": int(data3[0].shape[0]),
            "test_samples": int(data3[1].shape[0]),
            "seconds": t3,
            "best_s": best3,
            "heldout_accuracy": acc,
            "engine_vs_sklearn": best3["engine"] / best3["sklearn"],
            "median_paired_ratio_sklearn": _median_ratio(t3["engine"], t3["sklearn"]),
        }
        results["cases"]["B3"] = case
        rows.append(("B3 engine / sklearn (time)", f"{case['engine_vs_sklearn']:.2f}x",
                     "<= 0.50x", _met(case["engine_vs_sklearn"] <= 0.5)))  # fmt: skip
        rows.append(("B3 held-out accuracy engine / sklearn",
                     f"{acc['engine']:.3f} / {acc['sklearn']:.3f}", "equal",
                     _met(abs(acc["engine"] - acc["sklearn"]) <= 0.01)))  # fmt: skip

    if "mem" not in skip:
        mem = run_memory(3)
        results["cases"]["memory"] = mem
        mib = 2**20
        per = ", ".join(f"{r / mib:.0f}" for r in mem["rss_after_epoch"])
        rows.append(("Memory B1 peak RSS (MiB)", f"{mem['peak_rss'] / mib:.0f}",
                     f"<= {mem['budget_bytes'] / mib:.0f}",
                     _met(mem["peak_rss"] <= mem["budget_bytes"])))  # fmt: skip
        rows.append(("Memory RSS after epochs 1..3 (MiB)", per, "flat",
                     _met(abs(mem["growth_epoch1_to_last"]) <= 5 * mib)))  # fmt: skip

    results["table"] = [dict(zip(("metric", "value", "target", "met"), r, strict=True))
                        for r in rows]  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    _print_report(results, rows)
    del limiter


def _median_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of ``a[i] / b[i]`` (both measured in the same round)."""
    return float(np.median(np.asarray(a) / np.asarray(b)))


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _print_report(results: dict[str, Any], rows: list[tuple[str, str, str, str]]) -> None:
    info = results["machine"]
    blas = [p for p in info["threadpools"] if p["user_api"] == "blas"]
    print(f"machine: {info['nproc']} x {info['cpu']}, {info['ram_gb']} GB RAM")
    print(f"python {info['python']}, numpy {info['numpy']}, torch {info['torch']}, "
          f"sklearn {info['sklearn']}")  # fmt: skip
    for p in blas:
        print(f"BLAS: {p['internal_api']} {p['version']} {p['architecture']} "
              f"({p['num_threads']} threads, {p['prefix']})")  # fmt: skip
    print(f"torch threads: {info['torch_threads']} (NumPy BLAS threads: "
          f"{info['numpy_blas_threads']})")  # fmt: skip
    cases = results["cases"]
    if "B1" in cases:
        c = cases["B1"]
        b = c["best_s"]
        print(f"B1 one epoch (best of {results['repeats']}): engine {b['engine']:.3f} s, "
              f"torch {b['torch']:.3f} s, sklearn {b['sklearn']:.3f} s, "
              f"numpy matmuls alone {b['numpy']:.3f} s")  # fmt: skip
        print(f"   GFLOP/s: engine {c['engine_gflops']:.1f}, numpy same shapes "
              f"{c['numpy_gflops_same_shapes']:.1f}, numpy 2048^2 "
              f"{c['numpy_gflops_square_2048']:.1f}")  # fmt: skip
    if "B2" in cases:
        c = cases["B2"]["per_step_us"]
        print(f"B2 per step: engine {c['engine']:.1f} us, torch {c['torch']:.1f} us")
    if "B3" in cases:
        c = cases["B3"]
        print(f"B3 50 epochs: engine {c['best_s']['engine']:.3f} s, "
              f"sklearn {c['best_s']['sklearn']:.3f} s")  # fmt: skip
    width = max(len(r[0]) for r in rows) if rows else 10
    print()
    print(f"{'metric':<{width}}  {'value':>16}  {'target':>10}  met")
    for metric, value, target, met in rows:
        print(f"{metric:<{width}}  {value:>16}  {target:>10}  {met}")
    if "B1" in cases and "profile" in cases["B1"]:
        print()
        print(cases["B1"]["profile"])


if __name__ == "__main__":
    main()
